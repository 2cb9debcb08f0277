use super::*;
use crate::secret::SecretSource;
use std::time::Duration;

const FILE: &str = "/etc/tokend/config.yaml";

fn parse(yaml: &str) -> Result<Config, ConfigError> {
    parse_str(yaml, Path::new(FILE))
}

fn errors(yaml: &str) -> String {
    match parse(yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

const MINIMAL: &str = "\
clients:
  billing:
    token_url: https://example.eu.auth0.com/oauth/token
    client_id: abc123
    client_secret: { file: /etc/tokend/secrets/billing }
    outputs:
      - { path: /run/tokend/billing.token }
";

const PKJWT: &str = "\
clients:
  signer:
    token_url: https://idp.example/oauth/token
    client_id: signer
    auth: private_key_jwt
    private_key: /etc/tokend/keys/k.pem
";

#[test]
fn every_auth_method_discovery_transport_and_validation_parse() {
    let config = parse(
        "\
defaults:
  issuer: https://idp.example/
  ca_file: /etc/tokend/corp-ca.pem
  proxy: http://proxy.internal:3128
  no_proxy: [idp.internal]
clients:
  jwt:
    client_id: a
    auth: private_key_jwt
    private_key: /etc/tokend/keys/a.pem
    key_id: key-2026
    signing_alg: PS256
    assertion_audience: issuer
    audience: https://api/
    validate: { algorithms: [RS256, ES256], leeway: 30s }
  mtls:
    client_id: b
    auth: tls_client_auth
    client_certificate: { file: /etc/tokend/b.crt }
    client_key: { credential: b.key }
    token_url: https://mtls.idp.example/token
    proxy: none
",
    )
    .unwrap();
    let (jwt, mtls) = (&config.clients[0], &config.clients[1]);
    assert_eq!(
        jwt.spec.grant.endpoint,
        Endpoint::Issuer("https://idp.example/".parse().unwrap())
    );
    assert_eq!(
        jwt.spec.credentials,
        Credentials::PrivateKey(PrivateKey {
            key: SecretSource::File("/etc/tokend/keys/a.pem".into()),
            key_id: Some("key-2026".into()),
            alg: Some(JwsAlg::Ps256),
            audience: AssertionAudience::Issuer,
        })
    );
    assert_eq!(
        jwt.spec.transport.ca_file.as_deref(),
        Some(Path::new("/etc/tokend/corp-ca.pem"))
    );
    assert_eq!(
        jwt.spec.transport.proxy,
        Proxy::Url {
            url: "http://proxy.internal:3128".parse().unwrap(),
            no_proxy: vec!["idp.internal".into()]
        }
    );
    let v = jwt.spec.validation.as_ref().unwrap();
    assert_eq!(
        (v.issuer.as_deref(), v.jwks_uri.as_ref()),
        (None, None),
        "both come from discovery"
    );
    assert_eq!(v.audiences, vec!["https://api/"]);
    assert_eq!(v.algorithms, vec![JwsAlg::Rs256, JwsAlg::Es256]);
    assert_eq!(v.leeway, Duration::from_secs(30));
    assert_eq!(
        mtls.spec.grant.endpoint,
        Endpoint::TokenUrl("https://mtls.idp.example/token".parse().unwrap())
    );
    assert_eq!(
        mtls.spec.credentials,
        Credentials::Certificate {
            certificate: SecretSource::File("/etc/tokend/b.crt".into()),
            key: SecretSource::Credential("b.key".into())
        }
    );
    assert_eq!(mtls.spec.transport.proxy, Proxy::Disabled);
    assert!(mtls.spec.validation.is_none());
}

#[test]
fn settings_for_other_methods_inherited_from_defaults_are_ignored_and_validate_merges() {
    let config = parse(
        "\
defaults:
  issuer: https://idp.example/
  auth: private_key_jwt
  private_key: /etc/tokend/keys/shared.pem
  client_secret: { file: /etc/tokend/secrets/shared }
  audience: https://api/
  validate: { jwks_uri: https://idp.example/keys, leeway: 10s }
clients:
  signer:
    client_id: a
    validate: { algorithms: [ES256] }
  by-secret:
    client_id: b
    auth: client_secret_post
  unchecked:
    client_id: c
    validate: false
",
    )
    .unwrap();
    let (signer, by_secret, unchecked) = (&config.clients[0], &config.clients[1], &config.clients[2]);
    assert!(matches!(signer.spec.credentials, Credentials::PrivateKey(_)));
    assert_eq!(
        by_secret.spec.credentials,
        Credentials::SecretPost(SecretSource::File("/etc/tokend/secrets/shared".into()))
    );
    let v = signer.spec.validation.as_ref().unwrap();
    assert_eq!(
        v.jwks_uri.as_ref().map(|u| u.as_str()),
        Some("https://idp.example/keys")
    );
    assert_eq!(
        (v.leeway, v.algorithms.clone()),
        (Duration::from_secs(10), vec![JwsAlg::Es256])
    );
    assert_eq!(
        by_secret.spec.validation.as_ref().unwrap().algorithms,
        JwsAlg::ALL.to_vec()
    );
    assert!(unchecked.spec.validation.is_none());
}

#[test]
fn a_minimal_config_gets_safe_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.clients.len(), 1);
    let c = &config.clients[0];
    assert_eq!(c.name.as_str(), "billing");
    assert_eq!(c.spec.credentials.method(), Some(AuthMethod::ClientSecretPost));
    assert_eq!(
        c.spec.credentials,
        Credentials::SecretPost(SecretSource::File("/etc/tokend/secrets/billing".into()))
    );
    assert_eq!(c.refresh, DEFAULT_REFRESH);
    assert_eq!(c.retry, DEFAULT_RETRY);
    assert_eq!(c.timeouts, DEFAULT_TIMEOUTS);
    assert_eq!(c.outputs[0].mode.bits(), 0o600);
    assert_eq!(c.outputs[0].format, Format::Raw);
    assert!(!c.outputs[0].newline);
}

/// A client's name is its key as written: YAML would read `0x1F` as 31 and `true` as a boolean,
/// but the name is what the user sees in file names, the socket's URLs and the logs.
#[test]
fn a_client_is_named_by_its_key_as_written() {
    let yaml = "\
defaults:
  token_url: https://idp.example/oauth/token
  client_id: abc123
  client_secret: { file: /etc/tokend/secrets/s }
clients:
  1234: {}
  0x1F: {}
  007: {}
  1e3: {}
  true: {}
  0 : {}
";
    let config = parse(yaml).unwrap();
    let names: Vec<&str> = config.clients.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["1234", "0x1F", "007", "1e3", "true", "0"]);
    // Two keys that YAML reads as the same number are still two different names.
    let config = parse(&yaml.replace("true", "31")).unwrap();
    assert_eq!(config.clients.len(), 6);
}

#[test]
fn the_packaged_example_config_is_valid() {
    let example = include_str!("../../packaging/config.example.yaml");
    let config = parse(example).unwrap();
    assert_eq!(config.clients[0].outputs.len(), 3);
}

/// The Debian package's /etc/tokend/config.yaml lists no client (so the service waits,
/// inactive, to be configured), and the example in its comments is valid once uncommented.
#[test]
fn the_debian_config_is_unconfigured_and_its_commented_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/debian/config.yaml");
    assert_eq!(lists_clients(&path), Some(false));
    let text = std::fs::read_to_string(&path).unwrap();
    let example = text.split("# An example").nth(1).expect("the example section");
    let uncommented: String = example
        .lines()
        .skip_while(|l| !l.starts_with("# defaults:"))
        .map(|l| format!("{}\n", l.strip_prefix("# ").or(l.strip_prefix("#")).unwrap_or(l)))
        .collect();
    let active: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    /// The machine the package creates: group tokend-readers exists.
    struct Packaged;
    impl Host for Packaged {
        fn user_id(&self, _: &str) -> Result<Option<u32>, String> {
            Ok(None)
        }
        fn group_id(&self, name: &str) -> Result<Option<u32>, String> {
            Ok((name == "tokend-readers").then_some(997))
        }
        fn var(&self, _: &str) -> Option<std::ffi::OsString> {
            None
        }
    }
    let config = super::parse(&format!("{active}{uncommented}"), Path::new(FILE), &Packaged).unwrap();
    assert_eq!(config.clients[0].name.as_str(), "billing");
    assert_eq!(config.socket.unwrap().group.unwrap().id, 997);
    assert_eq!(config.clients[0].outputs.len(), 3);
}

#[test]
fn defaults_are_inherited_and_overridden_field_by_field() {
    let config = parse(
        "\
state_dir: /var/lib/tokend-test
defaults:
  token_url: https://idp.example/oauth/token
  client_id: shared
  client_secret: { env: TOKEND_SECRET }
  auth: client_secret_basic
  audience: https://api.example/
  scope: [read:a, write:b]
  params: { tenant: blue }
  refresh: { at: 70%, min_remaining: 5m }
  retry: { max: 10m }
  timeouts: { connect: 3s }
clients:
  a:
    outputs: [{ path: /run/tokend/a.json, format: json, mode: \"0640\", owner: root, group: \"0\" }]
  b:
    client_id: own
    scope: only
    resource: [https://r1.example/, https://r2.example/]
    refresh: { jitter: 5% }
    retry: { initial: 2s }
    params: { region: eu }
    timeouts: { request: 9s }
",
    )
    .unwrap();
    assert_eq!(config.state_dir, Path::new("/var/lib/tokend-test"));
    let (a, b) = (&config.clients[0], &config.clients[1]);
    assert_eq!(a.spec.grant.client_id, "shared");
    assert_eq!(a.spec.grant.scope.as_deref(), Some("read:a write:b"));
    assert_eq!(a.spec.credentials.method(), Some(AuthMethod::ClientSecretBasic));
    assert_eq!(a.refresh.at, 0.7);
    assert_eq!(a.refresh.jitter, 0.1);
    assert_eq!(a.refresh.min_remaining, Duration::from_secs(300));
    assert_eq!(
        a.retry,
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(600)
        }
    );
    assert_eq!(
        a.timeouts,
        Timeouts {
            connect: Duration::from_secs(3),
            request: Duration::from_secs(30)
        }
    );
    assert_eq!(
        a.outputs[0].owner,
        Some(Owner {
            spec: Principal::Name("root".into()),
            id: 0
        })
    );
    assert_eq!(a.outputs[0].group.as_ref().map(|g| g.id), Some(0));
    assert_eq!(a.outputs[0].mode.bits(), 0o640);
    assert_eq!(b.spec.grant.client_id, "own");
    assert_eq!(b.spec.grant.scope.as_deref(), Some("only"));
    assert_eq!(
        b.spec.grant.resources,
        vec!["https://r1.example/", "https://r2.example/"]
    );
    assert_eq!(
        b.spec.grant.params,
        vec![
            ("region".to_owned(), "eu".to_owned()),
            ("tenant".to_owned(), "blue".to_owned())
        ]
    );
    assert_eq!((b.refresh.at, b.refresh.jitter), (0.7, 0.05));
    assert_eq!(
        b.retry,
        RetryPolicy {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(600)
        }
    );
    assert_eq!(
        b.timeouts,
        Timeouts {
            connect: Duration::from_secs(3),
            request: Duration::from_secs(9)
        }
    );
}

#[test]
fn plain_http_is_allowed_only_for_loopback_or_with_an_explicit_opt_in() {
    let with = |url: &str, extra: &str| {
        parse(&format!(
            "clients:\n  c:\n    token_url: {url}\n    client_id: x\n    client_secret: s\n{extra}"
        ))
    };
    for ok in [
        "http://127.0.0.1:8080/token",
        "http://localhost/token",
        "http://[::1]:9/t",
        "https://idp.example/t",
    ] {
        assert!(with(ok, "").is_ok(), "{ok}");
    }
    assert!(with("http://idp.example/t", "").is_err());
    assert!(with("http://idp.example/t", "    allow_insecure_http: true\n").is_ok());
}

/// Every class of configuration error, with the exact message a user sees.
#[test]
fn error_messages() {
    let cases: &[(&str, &str)] = &[
        ("yaml_syntax", "clients:\n  a: { token_url: x\n"),
        ("unknown_top_level_key", "clinets: {}\n"),
        (
            "unknown_client_key",
            &MINIMAL.replace("    client_id:", "    clientid:"),
        ),
        ("unknown_output_key", &MINIMAL.replace("{ path:", "{ pth:")),
        (
            "template_unknown_variable",
            &MINIMAL.replace(
                "      - { path: /run/tokend/billing.token }\n",
                "      - path: /run/tokend/netrc\n        format: template\n        template: |\n          machine api.example.com\n            password {{ acess_token }}\n",
            ),
        ),
        (
            "template_on_another_format",
            &MINIMAL.replace("{ path: /run/tokend/billing.token }", "{ path: /run/tokend/b, template: \"{{ access_token }}\" }"),
        ),
        (
            "template_format_without_a_template",
            &MINIMAL.replace("{ path: /run/tokend/billing.token }", "{ path: /run/tokend/b, format: template }"),
        ),
        (
            "template_file_relative",
            &MINIMAL.replace("{ path: /run/tokend/billing.token }", "{ path: /run/tokend/b, format: template, template_file: netrc.j2 }"),
        ),
        (
            "hook_command_without_a_path",
            &format!("{MINIMAL}    hooks: [{{ exec: [systemctl, reload, app] }}]\n"),
        ),
        (
            "hook_exec_and_signal",
            &format!("{MINIMAL}    hooks: [{{ exec: [/bin/true], signal: HUP }}]\n"),
        ),
        (
            "hook_signal_without_pid_file",
            &format!("{MINIMAL}    hooks: [{{ signal: SIGHUP }}]\n"),
        ),
        (
            "hook_unknown_signal_and_exec_keys",
            &format!("{MINIMAL}    hooks: [{{ signal: SIGWINNER, pid_file: /run/a.pid, user: root }}]\n"),
        ),
        (
            "hook_token_variable",
            &format!("{MINIMAL}    hooks: [{{ exec: [/bin/true], token_variable: 1TOKEN, timeout: 2h }}]\n"),
        ),
        (
            "proxy_on_a_public_address",
            &format!("{MINIMAL}proxies: [{{ client: billing, upstream: https://api.example/, listen: 0.0.0.0:8081 }}]\n"),
        ),
        (
            "proxy_for_an_unknown_client_over_plain_http",
            &format!("{MINIMAL}proxies: [{{ client: biling, upstream: http://api.example/, listen: 127.0.0.1:8081 }}]\n"),
        ),
        (
            "proxy_without_a_listener_and_with_readers_on_tcp",
            &format!("{MINIMAL}proxies:\n  - {{ client: billing, upstream: https://api.example/ }}\n  - {{ client: billing, upstream: https://api.example/, listen: 127.0.0.1:8081, readers: {{ users: [0] }} }}\n"),
        ),
        (
            "proxy_socket_path_too_long",
            &format!(
                "{MINIMAL}proxies: [{{ client: billing, upstream: https://api.example/, socket: /run/tokend/{}.sock }}]\n",
                "p".repeat(80)
            ),
        ),
        (
            "output_writable_by_others",
            &MINIMAL.replace("{ path: /run/tokend/billing.token }", "{ path: /run/tokend/billing.token, mode: \"0666\" }"),
        ),
        (
            "output_writable_by_its_group",
            &MINIMAL.replace("{ path: /run/tokend/billing.token }", "{ path: /run/tokend/billing.token, mode: \"0620\" }"),
        ),
        (
            "group_readable_with_env",
            &MINIMAL.replace("{ file: /etc/tokend/secrets/billing }", "{ env: BILLING_SECRET, group_readable: true }"),
        ),
        (
            "output_without_path",
            &MINIMAL.replace("{ path: /run/tokend/billing.token }", "{ format: json }"),
        ),
        (
            "unknown_refresh_key",
            &format!("{MINIMAL}    refresh: {{ minimum_remaining: 1m }}\n"),
        ),
        (
            "unknown_auth_method",
            &format!("{MINIMAL}    auth: client_secret_bsic\n"),
        ),
        (
            "unknown_format",
            &MINIMAL.replace("billing.token }", "billing.token, format: jsn }"),
        ),
        (
            "bare_integer_mode",
            &MINIMAL.replace("billing.token }", "billing.token, mode: 640 }"),
        ),
        (
            "bad_octal_mode",
            &MINIMAL.replace("billing.token }", "billing.token, mode: \"0648\" }"),
        ),
        (
            "setuid_mode",
            &MINIMAL.replace("billing.token }", "billing.token, mode: \"4755\" }"),
        ),
        (
            "duration_without_unit",
            &format!("{MINIMAL}    retry: {{ max: 300 }}\n"),
        ),
        (
            "bad_duration",
            &format!("{MINIMAL}    timeouts: {{ connect: 5 parsecs }}\n"),
        ),
        (
            "percent_without_sign",
            &format!("{MINIMAL}    refresh: {{ at: 0.8 }}\n"),
        ),
        ("bad_client_name", &MINIMAL.replace("  billing:", "  billing/eu:")),
        (
            "duplicate_client",
            &format!("{MINIMAL}  billing:\n    client_id: again\n"),
        ),
        (
            "wrong_type",
            &MINIMAL.replace("client_id: abc123", "client_id: [abc123]"),
        ),
        (
            "secret_with_two_sources",
            &MINIMAL.replace("{ file: /etc/tokend/secrets/billing }", "{ file: /a, env: B }"),
        ),
        (
            "secret_unknown_source",
            &MINIMAL.replace("{ file: /etc/tokend/secrets/billing }", "{ fille: /a }"),
        ),
        ("no_clients", "defaults:\n  token_url: https://idp.example/t\n"),
        ("empty_file", ""),
        (
            "missing_required_keys_are_all_reported",
            "clients:\n  a:\n    audience: x\n  b:\n    token_url: https://idp.example/t\n    client_id: \"\"\n    client_secret: s\n",
        ),
        (
            "insecure_http",
            &MINIMAL.replace("https://example.eu.auth0.com", "http://example.eu.auth0.com"),
        ),
        (
            "http_from_defaults",
            "defaults:\n  token_url: http://idp.example/t\nclients:\n  a:\n    client_id: x\n    client_secret: s\n",
        ),
        (
            "url_with_credentials",
            &MINIMAL.replace("https://example", "https://user:pw@example"),
        ),
        (
            "not_a_url",
            &MINIMAL.replace(
                "https://example.eu.auth0.com/oauth/token",
                "example.eu.auth0.com/oauth/token",
            ),
        ),
        (
            "relative_output_path",
            &MINIMAL.replace("/run/tokend/billing.token", "run/billing.token"),
        ),
        (
            "duplicate_output_path",
            &format!(
                "{MINIMAL}  reports:\n    client_id: r\n    client_secret: s\n    token_url: https://idp.example/t\n    outputs: [{{ path: /run/tokend/billing.token, format: json }}]\n"
            ),
        ),
        (
            "output_in_the_state_directory",
            &format!("state_dir: /var/lib/tokend\n{}", MINIMAL.replace("/run/tokend/billing.token", "/var/lib/tokend/billing.state")),
        ),
        (
            "output_beside_a_secret",
            &MINIMAL.replace("/run/tokend/billing.token", "/etc/tokend/secrets/billing.token"),
        ),
        (
            "unknown_owner",
            &MINIMAL.replace(
                "billing.token }",
                "billing.token, owner: no-such-user-tokend, group: no-such-group-tokend }",
            ),
        ),
        (
            "retry_max_below_initial",
            &format!("{MINIMAL}    retry: {{ initial: 10s, max: 5s }}\n"),
        ),
        (
            "inherited_problems_point_at_defaults_once",
            &format!(
                "defaults:\n  retry: {{ initial: 10s, max: 5s }}\n  params: {{ scope: x }}\n{MINIMAL}  second:\n    token_url: https://idp.example/t\n    client_id: b\n    client_secret: s\n"
            ),
        ),
        (
            "jitter_too_wide",
            &format!("{MINIMAL}    refresh: {{ at: 90%, jitter: 20% }}\n"),
        ),
        (
            "reserved_param",
            &format!("{MINIMAL}    params: {{ audience: x, client_secret: y }}\n"),
        ),
        ("outputs_in_defaults", &format!("defaults:\n  outputs: []\n{MINIMAL}")),
        (
            "relative_secret_file",
            &MINIMAL.replace("/etc/tokend/secrets/billing", "secrets/billing"),
        ),
        (
            "newline_on_json",
            &MINIMAL.replace("billing.token }", "billing.token, format: json, newline: true }"),
        ),
        (
            "bad_env_variable",
            &MINIMAL.replace("billing.token }", "billing.token, format: env, variable: 1TOKEN }"),
        ),
        ("bad_scope", &format!("{MINIMAL}    scope: \"read\\\\all\"\n")),
        ("relative_state_dir", &format!("state_dir: state\n{MINIMAL}")),
        (
            "token_url_and_issuer",
            &format!("{MINIMAL}    issuer: https://idp.example/\n"),
        ),
        (
            "private_key_jwt_without_key",
            &format!("{MINIMAL}    auth: private_key_jwt\n"),
        ),
        (
            "private_key_with_a_secret_method",
            &format!("{MINIMAL}    private_key: /etc/tokend/keys/k.pem\n    key_id: k1\n"),
        ),
        (
            "relative_private_key",
            &PKJWT.replace("/etc/tokend/keys/k.pem", "keys/k.pem"),
        ),
        (
            "private_key_pasted_inline",
            &PKJWT.replace(
                "/etc/tokend/keys/k.pem",
                "\"-----BEGIN PRIVATE KEY-----\\nMC4CAQAwBQYDK2VwBCIEIDoNotShowThisKeyMaterial\\n-----END PRIVATE KEY-----\"",
            ),
        ),
        (
            "private_key_misspelt_source",
            &PKJWT.replace("/etc/tokend/keys/k.pem", "{ fil: /etc/tokend/keys/k.pem }"),
        ),
        (
            "private_key_bad_credential_name",
            &PKJWT.replace("/etc/tokend/keys/k.pem", "{ credential: ../k.pem }"),
        ),
        (
            "private_key_wrong_type",
            &PKJWT.replace("/etc/tokend/keys/k.pem", "[/etc/tokend/keys/k.pem]"),
        ),
        (
            "assertion_signed_with_es384",
            &format!("{PKJWT}    signing_alg: ES384\n"),
        ),
        (
            "assertion_audience_issuer_without_discovery",
            &format!("{PKJWT}    assertion_audience: issuer\n"),
        ),
        (
            "mtls_over_plain_http",
            "clients:\n  m:\n    token_url: http://127.0.0.1:8080/token\n    client_id: m\n    auth: tls_client_auth\n    client_certificate: /c.pem\n    client_key: /k.pem\n",
        ),
        (
            "mtls_without_key",
            "clients:\n  m:\n    issuer: https://idp.example/\n    client_id: m\n    auth: tls_client_auth\n    client_certificate: /c.pem\n",
        ),
        (
            "validate_without_audience",
            &format!("{MINIMAL}    validate: {{ jwks_uri: https://idp.example/jwks, issuer: https://idp.example/ }}\n"),
        ),
        (
            "validate_without_keys",
            &format!("{MINIMAL}    audience: https://api/\n    validate: true\n"),
        ),
        (
            "validate_with_hmac",
            &format!(
                "{MINIMAL}    audience: https://api/\n    validate: {{ jwks_uri: https://i/j, issuer: https://i/, algorithms: [RS256, HS256] }}\n"
            ),
        ),
        (
            "validate_leeway_too_long",
            &format!(
                "{MINIMAL}    audience: https://api/\n    validate: {{ jwks_uri: https://i/j, issuer: https://i/, leeway: 1h }}\n"
            ),
        ),
        ("bad_proxy", &format!("{MINIMAL}    proxy: socks5://proxy:1080\n")),
        (
            "no_proxy_without_proxy",
            &format!("{MINIMAL}    no_proxy: [internal.example]\n"),
        ),
        ("relative_ca_file", &format!("{MINIMAL}    ca_file: corp-ca.pem\n")),
    ];
    let mut all = String::new();
    for (name, yaml) in cases {
        all.push_str(&format!("--- {name}\n{}\n", errors(yaml)));
    }
    insta::assert_snapshot!(all);
}

/// A file with several shape errors gets all of them in one run, each at its own line, and
/// nothing that only follows from them (the README's own example: a typo and a bare mode).
#[test]
fn every_shape_error_in_a_file_is_reported_in_one_run() {
    let yaml = "\
clients:
  billing:
    tokne_url: https://idp.example/oauth/token
    client_id: abc123
    client_secret: { file: /etc/tokend/secrets/billing }
    refresh: 80%
    outputs:
      - /run/tokend/billing.token
      - { path: /run/tokend/billing.json, format: jsn, mode: 640 }
  reports: just-a-string
";
    assert_eq!(
        errors(yaml),
        "\
/etc/tokend/config.yaml:3:5: clients.billing: unknown key `tokne_url`; did you mean `token_url`?
/etc/tokend/config.yaml:6:14: clients.billing.refresh: expected a mapping such as `{ at: 80%, jitter: 10%, min_remaining: 2m }`, found string \"80%\"
/etc/tokend/config.yaml:8:9: clients.billing.outputs[0]: expected an output: a mapping such as `{ path: /run/tokend/billing.token }`, found string \"/run/tokend/billing.token\"
/etc/tokend/config.yaml:9:51: clients.billing.outputs[1].format: unknown value `jsn`; did you mean `json`?
/etc/tokend/config.yaml:9:62: clients.billing.outputs[1].mode: mode must be a quoted octal string: write \"0640\", not the bare number 640 (YAML reads it as decimal)
/etc/tokend/config.yaml:10:12: clients.reports: expected a client: a mapping such as `{ token_url: …, client_id: …, client_secret: { file: … } }`, found string \"just-a-string\""
    );
    // The root itself, and a repeated key, pointed at where it is repeated.
    assert_eq!(
        errors("- a\n- b\n"),
        "/etc/tokend/config.yaml:1:1: expected a mapping with a `clients:` key (and optionally `defaults:`, `socket:`, `metrics:`, `idp:`, `proxies:`, `fleet:`, `state_dir:`), found a list"
    );
    let repeated = MINIMAL.replace(
        "    client_id: abc123\n",
        "    client_id: abc123\n    client_id: again\n",
    );
    assert_eq!(
        errors(&repeated),
        "/etc/tokend/config.yaml:5:5: clients.billing: duplicate field `client_id`"
    );
}

/// Parsing asks the host for users, groups and the environment: it is pure, and a config can be
/// checked for a machine that is not this one.
#[test]
fn users_groups_and_the_state_directory_come_from_the_host() {
    struct Fake;
    impl Host for Fake {
        fn user_id(&self, name: &str) -> Result<Option<u32>, String> {
            Ok((name == "billing").then_some(4242))
        }
        fn group_id(&self, name: &str) -> Result<Option<u32>, String> {
            match name {
                "ops" => Ok(Some(777)),
                "broken" => Err("the directory service is down".into()),
                _ => Ok(None),
            }
        }
        fn var(&self, name: &str) -> Option<std::ffi::OsString> {
            (name == "STATE_DIRECTORY").then(|| "/var/lib/elsewhere:/second".into())
        }
    }
    let yaml = "\
clients:
  billing:
    token_url: https://idp.example/t
    client_id: a
    client_secret: { file: /s }
    outputs: [{ path: /run/b.token, owner: billing, group: ops }]
    readers: { users: [billing], groups: [ops, 12] }
";
    let config = super::parse(yaml, Path::new(FILE), &Fake).unwrap();
    assert_eq!(config.state_dir, Path::new("/var/lib/elsewhere"));
    let out = &config.clients[0].outputs[0];
    assert_eq!(
        (out.owner.as_ref().unwrap().id, out.group.as_ref().unwrap().id),
        (4242, 777)
    );
    let readers = &config.access.readers[&ClientName::new("billing").unwrap()];
    let groups: Vec<u32> = readers.groups.iter().map(|g| g.id).collect();
    assert_eq!((readers.users[0].id, groups), (4242, vec![777, 12]));

    let broken = yaml
        .replace("group: ops", "group: broken")
        .replace("[billing]", "[nobody-here]");
    let err = super::parse(&broken, Path::new(FILE), &Fake).unwrap_err().to_string();
    assert!(
        err.contains("clients.billing.outputs[0].group: cannot look up group `broken`: the directory service is down"),
        "{err}"
    );
    assert!(
        err.contains("clients.billing.readers.users[0]: there is no user `nobody-here` on this system"),
        "{err}"
    );
}

/// Every complete configuration the README shows parses (with any user or group name known),
/// except the one that shows the error messages.
#[test]
fn the_readme_configurations_parse() {
    struct AnyName;
    impl Host for AnyName {
        fn user_id(&self, _: &str) -> Result<Option<u32>, String> {
            Ok(Some(4242))
        }
        fn group_id(&self, _: &str) -> Result<Option<u32>, String> {
            Ok(Some(4243))
        }
        fn var(&self, _: &str) -> Option<std::ffi::OsString> {
            None
        }
    }
    let readme = include_str!("../../README.md");
    let blocks: Vec<&str> = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .filter(|b| ["clients:", "state_dir:", "defaults:"].iter().any(|k| b.starts_with(k)))
        .filter(|b| !b.contains("tokne_url"))
        .collect();
    assert!(blocks.len() >= 4, "README configurations: {}", blocks.len());
    for block in &blocks {
        if let Err(e) = super::parse(block, Path::new(FILE), &AnyName) {
            panic!("{e}\nin this README block:\n{block}");
        }
    }
    assert!(
        blocks
            .iter()
            .any(|b| b.contains("organization:") && b.contains("audience:")),
        "the Auth0 snippet"
    );
    assert!(
        blocks
            .iter()
            .any(|b| b.contains("issuer: https://example.eu.auth0.com/\n") && b.contains("validate: true")),
        "the Auth0 discovery snippet"
    );
}

/// `group_readable: true` lets a file source's group read it too (a Kubernetes Secret volume).
#[test]
fn a_secret_file_may_be_shared_with_its_group_when_it_says_so() {
    let config = parse_str(
        &MINIMAL.replace(
            "{ file: /etc/tokend/secrets/billing }",
            "{ file: /etc/tokend/secrets/billing, group_readable: true }",
        ),
        Path::new(FILE),
    )
    .unwrap();
    assert_eq!(
        config.clients[0].spec.credentials,
        Credentials::SecretPost(SecretSource::SharedFile("/etc/tokend/secrets/billing".into()))
    );
}

/// Under systemd, `$CREDENTIALS_DIRECTORY` holds the secrets it passes: no output goes there (a
/// subdirectory of a secret file's own directory is not refused: tokend writes only there).
#[test]
fn no_output_inside_the_credentials_directory() {
    struct Credentials;
    impl Host for Credentials {
        fn user_id(&self, _: &str) -> Result<Option<u32>, String> {
            Ok(None)
        }
        fn group_id(&self, _: &str) -> Result<Option<u32>, String> {
            Ok(None)
        }
        fn var(&self, name: &str) -> Option<std::ffi::OsString> {
            (name == "CREDENTIALS_DIRECTORY").then(|| "/run/credentials/tokend.service".into())
        }
    }
    let yaml = MINIMAL.replace(
        "/run/tokend/billing.token",
        "/run/credentials/tokend.service/out/billing.token",
    );
    let err = super::parse(&yaml, Path::new(FILE), &Credentials).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/tokend/config.yaml:7:11: clients.billing.outputs[0].path: `/run/credentials/tokend.service/out/billing.token` is inside $CREDENTIALS_DIRECTORY (/run/credentials/tokend.service), where systemd passes tokend its secrets; write outputs elsewhere, such as /run/tokend/billing.token"
    );
    let beside = MINIMAL.replace("/run/tokend/billing.token", "/etc/tokend/secrets/out/billing.token");
    assert!(super::parse(&beside, Path::new(FILE), &Credentials).is_ok());
}

/// Keys that YAML reads as the same value (`31` and `0x1F` are both the integer 31) are two
/// client names to tokend: a file holding both still has each of its problems reported, not
/// only serde's first.
#[test]
fn keys_that_yaml_reads_as_one_value_do_not_hide_later_problems() {
    let yaml = "\
clients:
  31:
    token_url: https://idp.example/oauth/token
    client_id: a
    client_secret: { file: /etc/tokend/secrets/a }
    outputs: [{ path: /run/tokend/a, fromat: raw }]
  0x1F:
    token_url: https://idp.example/oauth/token
    client_id: b
    client_secret: { file: /etc/tokend/secrets/b }
    scoep: read
";
    let text = errors(yaml);
    assert!(
        text.contains("6:38: clients.31.outputs[0]: unknown key `fromat`"),
        "{text}"
    );
    assert!(text.contains("11:5: clients.0x1F: unknown key `scoep`"), "{text}");
}
