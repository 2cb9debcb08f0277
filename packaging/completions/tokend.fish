# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_tokend_global_optspecs
    string join \n config= log-format= log-level= h/help V/version
end

function __fish_tokend_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_tokend_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_tokend_using_subcommand
    set -l cmd (__fish_tokend_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c tokend -n "__fish_tokend_needs_command" -l config -d 'Configuration file' -r -F
complete -c tokend -n "__fish_tokend_needs_command" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c tokend -n "__fish_tokend_needs_command" -l log-level -d 'Log level for tokend\'s own messages (error, warn, info, debug, trace)' -r
complete -c tokend -n "__fish_tokend_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tokend -n "__fish_tokend_needs_command" -s V -l version -d 'Print version'
complete -c tokend -n "__fish_tokend_needs_command" -f -a "run" -d 'Run the daemon in the foreground (SIGHUP reloads, SIGTERM stops)'
complete -c tokend -n "__fish_tokend_needs_command" -f -a "check" -d 'Validate the configuration, secrets and output directories, and print the plan'
complete -c tokend -n "__fish_tokend_needs_command" -f -a "once" -d 'Fetch missing or due tokens, write the outputs, and exit (0 if every client has a valid token)'
complete -c tokend -n "__fish_tokend_needs_command" -f -a "get" -d 'Print a client\'s token, read through the socket (for `TOKEN=$(tokend get NAME)`)'
complete -c tokend -n "__fish_tokend_needs_command" -f -a "status" -d 'Show every client\'s state, expiry, next refresh and last error, read through the socket'
complete -c tokend -n "__fish_tokend_needs_command" -f -a "probe" -d 'Ask the running daemon, through the socket, whether it is alive or ready (exit 0 if so)'
complete -c tokend -n "__fish_tokend_needs_command" -f -a "dev" -d 'Run a local development issuer and the daemon against it (never for production)'
complete -c tokend -n "__fish_tokend_needs_command" -f -a "prepare-dirs" -d 'Create directories and give them an owner and a mode, then exit: for a Kubernetes init container with only CAP_CHOWN, since a hostPath directory is created owned by root'
complete -c tokend -n "__fish_tokend_needs_command" -f -a "schema" -d 'Print the configuration file\'s JSON Schema, for editors that validate and complete YAML'
complete -c tokend -n "__fish_tokend_needs_command" -f -a "fleet" -d 'Fleet mode\'s tools'
complete -c tokend -n "__fish_tokend_needs_command" -f -a "configured" -d 'Exit 0 if the configuration lists at least one client, 1 if it lists none yet (the packaged example). For the unit\'s ExecCondition=: an installed but unconfigured tokend stays inactive instead of failing. A file that cannot be read or parsed counts as configured, so that `run` reports what is wrong with it'
complete -c tokend -n "__fish_tokend_using_subcommand run" -l config -d 'Configuration file' -r -F
complete -c tokend -n "__fish_tokend_using_subcommand run" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c tokend -n "__fish_tokend_using_subcommand run" -l log-level -d 'Log level for tokend\'s own messages (error, warn, info, debug, trace)' -r
complete -c tokend -n "__fish_tokend_using_subcommand run" -l watch-config -d 'Also reload when the configuration file changes (for Kubernetes ConfigMaps)'
complete -c tokend -n "__fish_tokend_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tokend -n "__fish_tokend_using_subcommand check" -l as-user -d 'Judge file permissions for this user and its groups [default: the service\'s user `tokend` when run as root and that user exists, else the caller]' -r
complete -c tokend -n "__fish_tokend_using_subcommand check" -l config -d 'Configuration file' -r -F
complete -c tokend -n "__fish_tokend_using_subcommand check" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c tokend -n "__fish_tokend_using_subcommand check" -l log-level -d 'Log level for tokend\'s own messages (error, warn, info, debug, trace)' -r
complete -c tokend -n "__fish_tokend_using_subcommand check" -l connect -d 'Also reach each token endpoint (and issuer) over the network, as a request would: DNS, proxy, TLS with `ca_file` and any client certificate. No credentials are sent'
complete -c tokend -n "__fish_tokend_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tokend -n "__fish_tokend_using_subcommand once" -l config -d 'Configuration file' -r -F
complete -c tokend -n "__fish_tokend_using_subcommand once" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c tokend -n "__fish_tokend_using_subcommand once" -l log-level -d 'Log level for tokend\'s own messages (error, warn, info, debug, trace)' -r
complete -c tokend -n "__fish_tokend_using_subcommand once" -l force -d 'Request a new token for every client, even if the current one is still fresh'
complete -c tokend -n "__fish_tokend_using_subcommand once" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tokend -n "__fish_tokend_using_subcommand get" -l timeout -d 'How long --wait may block' -r
complete -c tokend -n "__fish_tokend_using_subcommand get" -l socket -d 'The socket to talk to [default: socket.path from --config if readable, else /run/tokend/tokend.sock]' -r -F
complete -c tokend -n "__fish_tokend_using_subcommand get" -l config -d 'Configuration file' -r -F
complete -c tokend -n "__fish_tokend_using_subcommand get" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c tokend -n "__fish_tokend_using_subcommand get" -l log-level -d 'Log level for tokend\'s own messages (error, warn, info, debug, trace)' -r
complete -c tokend -n "__fish_tokend_using_subcommand get" -l wait -d 'Wait until the client has a valid token (at most --timeout)'
complete -c tokend -n "__fish_tokend_using_subcommand get" -l json -d 'Print the token\'s JSON document (access_token, token_type, expires_in, scope, expires_at, expires_at_unix, issued_at), the same as a `format: json` file'
complete -c tokend -n "__fish_tokend_using_subcommand get" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tokend -n "__fish_tokend_using_subcommand status" -l socket -d 'The socket to talk to [default: socket.path from --config if readable, else /run/tokend/tokend.sock]' -r -F
complete -c tokend -n "__fish_tokend_using_subcommand status" -l config -d 'Configuration file' -r -F
complete -c tokend -n "__fish_tokend_using_subcommand status" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c tokend -n "__fish_tokend_using_subcommand status" -l log-level -d 'Log level for tokend\'s own messages (error, warn, info, debug, trace)' -r
complete -c tokend -n "__fish_tokend_using_subcommand status" -l json -d 'Print JSON instead of a table'
complete -c tokend -n "__fish_tokend_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tokend -n "__fish_tokend_using_subcommand probe" -l socket -d 'The socket to talk to [default: socket.path from --config if readable, else /run/tokend/tokend.sock]' -r -F
complete -c tokend -n "__fish_tokend_using_subcommand probe" -l config -d 'Configuration file' -r -F
complete -c tokend -n "__fish_tokend_using_subcommand probe" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c tokend -n "__fish_tokend_using_subcommand probe" -l log-level -d 'Log level for tokend\'s own messages (error, warn, info, debug, trace)' -r
complete -c tokend -n "__fish_tokend_using_subcommand probe" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tokend -n "__fish_tokend_using_subcommand dev" -l config -d 'Not used: `tokend dev` writes its own configuration into --dir' -r -F
complete -c tokend -n "__fish_tokend_using_subcommand dev" -l dir -d 'Directory for the generated config, secret, state and token files' -r -F
complete -c tokend -n "__fish_tokend_using_subcommand dev" -l port -d 'Port of the development issuer on 127.0.0.1 (0 picks a free port)' -r
complete -c tokend -n "__fish_tokend_using_subcommand dev" -l lifetime -d 'Lifetime of the tokens the issuer hands out' -r
complete -c tokend -n "__fish_tokend_using_subcommand dev" -l clients-file -d 'With --issuer-only: a JSON file mapping the client ids the issuer accepts to their secrets, such as {"app": "s3cret"}, instead of `tokend-dev`/`tokend-dev-secret`' -r -F
complete -c tokend -n "__fish_tokend_using_subcommand dev" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c tokend -n "__fish_tokend_using_subcommand dev" -l log-level -d 'Log level for tokend\'s own messages (error, warn, info, debug, trace)' -r
complete -c tokend -n "__fish_tokend_using_subcommand dev" -l issuer-only -d 'Run only the issuer, as a local test fixture, and print its URL on the first stdout line. It accepts client id `tokend-dev` with secret `tokend-dev-secret`, unless --clients-file says otherwise'
complete -c tokend -n "__fish_tokend_using_subcommand dev" -l rfc8414-only -d 'With --issuer-only: serve metadata only at /.well-known/oauth-authorization-server (RFC 8414), not at OIDC\'s location, to exercise a client\'s fallback'
complete -c tokend -n "__fish_tokend_using_subcommand dev" -s h -l help -d 'Print help'
complete -c tokend -n "__fish_tokend_using_subcommand prepare-dirs" -l owner -d 'The owner, as numeric `UID:GID`' -r
complete -c tokend -n "__fish_tokend_using_subcommand prepare-dirs" -l config -d 'Configuration file' -r -F
complete -c tokend -n "__fish_tokend_using_subcommand prepare-dirs" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c tokend -n "__fish_tokend_using_subcommand prepare-dirs" -l log-level -d 'Log level for tokend\'s own messages (error, warn, info, debug, trace)' -r
complete -c tokend -n "__fish_tokend_using_subcommand prepare-dirs" -s h -l help -d 'Print help'
complete -c tokend -n "__fish_tokend_using_subcommand schema" -l config -d 'Configuration file' -r -F
complete -c tokend -n "__fish_tokend_using_subcommand schema" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c tokend -n "__fish_tokend_using_subcommand schema" -l log-level -d 'Log level for tokend\'s own messages (error, warn, info, debug, trace)' -r
complete -c tokend -n "__fish_tokend_using_subcommand schema" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tokend -n "__fish_tokend_using_subcommand fleet; and not __fish_seen_subcommand_from keygen" -l config -d 'Configuration file' -r -F
complete -c tokend -n "__fish_tokend_using_subcommand fleet; and not __fish_seen_subcommand_from keygen" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c tokend -n "__fish_tokend_using_subcommand fleet; and not __fish_seen_subcommand_from keygen" -l log-level -d 'Log level for tokend\'s own messages (error, warn, info, debug, trace)' -r
complete -c tokend -n "__fish_tokend_using_subcommand fleet; and not __fish_seen_subcommand_from keygen" -s h -l help -d 'Print help'
complete -c tokend -n "__fish_tokend_using_subcommand fleet; and not __fish_seen_subcommand_from keygen" -f -a "keygen" -d 'Print a new random fleet key (32 bytes, base64) for `fleet.key`: write it to a file only tokend\'s user may read, the same on every host of the fleet'
complete -c tokend -n "__fish_tokend_using_subcommand fleet; and __fish_seen_subcommand_from keygen" -l config -d 'Configuration file' -r -F
complete -c tokend -n "__fish_tokend_using_subcommand fleet; and __fish_seen_subcommand_from keygen" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c tokend -n "__fish_tokend_using_subcommand fleet; and __fish_seen_subcommand_from keygen" -l log-level -d 'Log level for tokend\'s own messages (error, warn, info, debug, trace)' -r
complete -c tokend -n "__fish_tokend_using_subcommand fleet; and __fish_seen_subcommand_from keygen" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tokend -n "__fish_tokend_using_subcommand configured" -l config -d 'Configuration file' -r -F
complete -c tokend -n "__fish_tokend_using_subcommand configured" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c tokend -n "__fish_tokend_using_subcommand configured" -l log-level -d 'Log level for tokend\'s own messages (error, warn, info, debug, trace)' -r
complete -c tokend -n "__fish_tokend_using_subcommand configured" -s h -l help -d 'Print help'
