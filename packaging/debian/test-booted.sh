#!/usr/bin/env bash
# The Debian package on a booted systemd: Debian bookworm in systemd-nspawn, systemd as its PID 1.
#
#   packaging/debian/test-booted.sh target/debian/tokend_0.1.0-1_amd64.deb [NEXT.deb]
#
# NEXT.deb is installed over the first to test the upgrade; by default it is the same package
# repacked under a later version (VERSION+upgrade1), as a new release would arrive. Needs root,
# debootstrap, systemd-nspawn (systemd-container) and nsenter. The bookworm root is made once by
# debootstrap and cached in $TOKEND_ROOTS (default /var/cache/tokend-ci); every run boots a fresh
# copy of it. Prints one line per check and ends with `N passed, M failed`; exits 0 only if every
# check passed. The development issuer (`tokend dev --issuer-only`) runs inside, on loopback.
set -euo pipefail

deb1=$(realpath "$1")
deb2=${2:+$(realpath "$2")}
roots=${TOKEND_ROOTS:-/var/cache/tokend-ci}
# What the root holds besides debootstrap's minimal base; a change rebuilds the cache.
packages="systemd,systemd-sysv,dbus,curl,procps,ca-certificates"
base="$roots/bookworm"

# shellcheck source=../checks.sh
. "$(dirname "$0")/../checks.sh"

# The cached root: debootstrap once per package list.
if [ ! -f "$base/.tokend-packages" ] || [ "$(cat "$base/.tokend-packages")" != "$packages" ]; then
  say "debootstrap bookworm into $base (cached for later runs)"
  rm -rf "$base" "$base.new"
  mkdir -p "$roots"
  debootstrap --variant=minbase --include="$packages" bookworm "$base.new" http://deb.debian.org/debian >"$roots/debootstrap.log" 2>&1 ||
    { tail -20 "$roots/debootstrap.log"; exit 1; }
  echo "$packages" >"$base.new/.tokend-packages"
  mv "$base.new" "$base"
fi

work=$(mktemp -d /tmp/tokend-booted.XXXXXX)
root="$work/root"
machine="tokend-test-$$"
cp -a "$base" "$root"
cp "$deb1" "$root/root/tokend-1.deb"
if [ -z "$deb2" ]; then
  deb2="$work/tokend-2.deb"
  dpkg-deb -R "$deb1" "$work/next"
  sed -i "s/^Version: .*/&+upgrade1/" "$work/next/DEBIAN/control"
  dpkg-deb -b "$work/next" "$deb2" >/dev/null
fi
cp "$deb2" "$root/root/tokend-2.deb"

systemd-nspawn -b -D "$root" --register=no --keep-unit --private-network -M "$machine" \
  >"$work/console.log" 2>&1 &
nspawn=$!
stop_container() {
  if [ -n "${pid1:-}" ]; then
    nsenter -t "$pid1" -a systemctl poweroff >/dev/null 2>&1 || true
  fi
  for _ in $(seq 50); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.1; done
  kill "$nspawn" 2>/dev/null || true
  wait "$nspawn" 2>/dev/null || true
  rm -rf "$work"
}
trap stop_container EXIT

pid1=
for _ in $(seq 100); do
  pid1=$(pgrep -P "$nspawn" -x systemd || true)
  [ -n "$pid1" ] && break
  sleep 0.1
done
[ -n "$pid1" ] || { echo "the container did not boot:"; cat "$work/console.log"; exit 1; }
# A command inside the container, as root.
ct() { nsenter -t "$pid1" -a "$@"; }
# A shell command inside the container.
ct_sh() { nsenter -t "$pid1" -a sh -c "$1"; }
ct systemctl is-system-running --wait >/dev/null || true
say "booted systemd $(ct systemctl --version | head -1 | cut -d' ' -f2) as PID 1 of the container ($(( $(date +%s) - checks_started ))s)"

show() { ct systemctl show tokend -p "$1" --value; }
main_pid() { show MainPID; }
no_failed_units() { [ -z "$(ct systemctl --failed --no-legend --plain)" ]; }
# Every IdP request the development issuer has seen.
requests() { ct_sh 'curl -s http://127.0.0.1:8400/_dev/requests' | grep -o '"at_ms"' | wc -l; }
# Waits up to $2 seconds for the shell condition $1 inside the container.
wait_in() {
  local i
  for i in $(seq $(( ${2:-15} * 10 ))); do
    ct_sh "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# The glibc the packaged binary needs: its newest GLIBC_x.y version reference, and 2.36 when
# its relocations are packed (GLIBC_ABI_DT_RELR, a version with no symbol, which
# dpkg-shlibdeps does not see and so leaves out of $auto).
glibc_needed() {
  dpkg-deb --fsys-tarfile "$deb1" | tar -xO ./usr/bin/tokend >"$work/tokend.bin"
  readelf -V --wide "$work/tokend.bin" |
    sed -n -e 's/.*Name: GLIBC_\([0-9][0-9.]*\).*/\1/p' -e 's/.*Name: GLIBC_ABI_DT_RELR.*/2.36/p' |
    sort -V | tail -1
}
# Depends holds a libc6 (>= V) with V at least what the binary needs.
depends_cover_glibc() {
  local need have
  need=$(glibc_needed)
  have=$(dpkg-deb -f "$deb1" Depends | grep -o 'libc6 (>= [0-9.]*)' | sed 's/.*>= //; s/)$//' | sort -V | tail -1)
  echo "     binary needs glibc $need; Depends has libc6 (>= ${have:-none})"
  [ -n "$need" ] && [ -n "$have" ] && dpkg --compare-versions "$have" ge "$need"
}

say "install"
check "Depends asks for the glibc the binary needs" depends_cover_glibc
check "dpkg -i of a fresh package succeeds" ct dpkg -i /root/tokend-1.deb
check "a fresh install leaves no failed unit" no_failed_units
check "the unconfigured service is enabled but inactive (start condition)" \
  test "$(show ActiveState)/$(show UnitFileState)/$(show Result)" = "inactive/enabled/exec-condition"
check "the journal says why it is not running" \
  sh -c "nsenter -t $pid1 -a journalctl -u tokend --no-pager | grep -q 'lists no clients yet'"
check "user tokend and group tokend-readers exist; tokend is in it" \
  sh -c "nsenter -t $pid1 -a id -nG tokend | grep -qw tokend-readers"
check "/etc/tokend is root:tokend 0750, config.yaml root:tokend 0640 (a conffile)" \
  test "$(ct stat -c '%U:%G %a' /etc/tokend /etc/tokend/config.yaml | tr '\n' ' ')" = "root:tokend 750 root:tokend 640 "
check "man pages, completions and docs are installed" \
  ct test -f /usr/share/man/man1/tokend.1.gz -a -f /usr/share/man/man1/tokend-run.1.gz \
  -a -f /usr/share/bash-completion/completions/tokend -a -f /usr/share/doc/tokend/copyright \
  -a -f /usr/share/doc/tokend/README.md -a -f /usr/share/doc/tokend/LICENSE-APACHE \
  -a -f /usr/share/doc/tokend/docs/configuration.md -a -f /usr/share/doc/tokend/docs/troubleshooting.md \
  -a -f /usr/share/doc/tokend/SECURITY.md
check "the configuration's JSON Schema, which config.yaml names, is installed" \
  ct sh -c "test -f /usr/share/tokend/tokend-config.schema.json && head -1 /etc/tokend/config.yaml | grep -q 'schema=/usr/share/tokend/tokend-config.schema.json'"

say "configure, against the development issuer on the container's loopback"
ct_sh 'echo "{\"app\":\"s3cret\"}" > /root/clients.json
  systemd-run --unit=devissuer /usr/bin/tokend dev --issuer-only --port 8400 --lifetime 1h --clients-file /root/clients.json >/dev/null
  printf %s s3cret | install -m 0600 -o tokend -g tokend /dev/stdin /etc/tokend/secrets/app
  useradd -m alice; useradd -m bob; useradd -m carol
  usermod -aG tokend-readers alice; usermod -aG tokend-readers bob
  # Every system call outside the filter kills the service (SIGSYS), instead of failing with
  # EPERM: a missing entry cannot hide behind an error path.
  mkdir -p /etc/systemd/system/tokend.service.d
  printf "[Service]\nSystemCallErrorNumber=\nWatchdogSec=4s\nTimeoutAbortSec=5s\n" > /etc/systemd/system/tokend.service.d/test.conf
  systemctl daemon-reload'
wait_in 'curl -sf http://127.0.0.1:8400/.well-known/openid-configuration' 10 || bad "the development issuer did not start"
write_config() {
  ct_sh "cat > /etc/tokend/config.yaml <<'EOF'
socket: { group: tokend-readers }
defaults:
  token_url: http://127.0.0.1:8400/oauth/token
  client_id: app
  client_secret: { file: /etc/tokend/secrets/app }
clients:
  billing:
    audience: https://billing.example/
    outputs:
      - { path: /run/tokend/billing.token }
      - { path: /run/tokend/billing.json, format: json, mode: \"0640\", group: tokend-readers }
    readers: { users: [alice] }
$1
EOF"
}
write_config ""
check "tokend check (run by root, judged as user tokend) accepts the config" ct tokend check
ct systemctl restart tokend
check "configured, the service is active and READY" test "$(show ActiveState)/$(show SubState)" = "active/running"
status=$(show StatusText)
check "STATUS= is current: '$status'" sh -c "echo '$status' | grep -Eq '^1/1 valid · next refresh billing in [0-9]+m · 0 failing$'"
check "the token file is tokend's, 0600" test "$(ct stat -c '%U:%G %a' /run/tokend/billing.token)" = "tokend:tokend 600"
check "the json output is tokend:tokend-readers 0640" test "$(ct stat -c '%U:%G %a' /run/tokend/billing.json)" = "tokend:tokend-readers 640"
check "the socket is tokend:tokend-readers 0660" test "$(ct stat -c '%U:%G %a %F' /run/tokend/tokend.sock)" = "tokend:tokend-readers 660 socket"
check "the state directory is 0700 and the saved token 0600" \
  test "$(ct stat -c '%U %a' /var/lib/tokend /var/lib/tokend/billing.state | tr '\n' ' ')" = "tokend 700 tokend 600 "
get_as() { ct runuser -u "$1" -- curl -s -o /dev/null -w '%{http_code}' --unix-socket /run/tokend/tokend.sock http://localhost/v1/tokens/billing || true; }
check "a reader (alice) gets the token: 200" test "$(get_as alice)" = 200
check "a socket user who is not a reader (bob) gets 403" test "$(get_as bob)" = 403
check "an outsider (carol, not in tokend-readers) cannot connect" test "$(get_as carol)" = 000
check "the file's token is the socket's" \
  test "$(ct cat /run/tokend/billing.token)" = "$(ct runuser -u alice -- curl -s --unix-socket /run/tokend/tokend.sock http://localhost/v1/tokens/billing)"

say "reload"
pid=$(main_pid)
write_config "  reports:
    audience: https://reports.example/
    outputs: [{ path: /run/tokend/reports.token }]"
ct systemctl reload tokend
check "a reload adds a client" wait_in 'test -s /run/tokend/reports.token' 15
check "the reload kept the process (MainPID $pid)" test "$(main_pid)" = "$pid"
check "STATUS= follows the reload" wait_in "systemctl show tokend -p StatusText --value | grep -q '^2/2 valid'" 5

say "restart and upgrade reuse the saved tokens while a reader loops on the file"
ct_sh 'nohup sh -c "while :; do if [ -s /run/tokend/billing.token ]; then echo ok; else echo EMPTY; fi; done" > /root/reader.log 2>&1 & echo $! > /root/reader.pid'
before=$(requests)
ct systemctl restart tokend
check "a restart sends no request ($before before, $(requests) after)" test "$(requests)" = "$before"
check "after the restart the service is active" test "$(show ActiveState)" = active
nrestarts=$(show NRestarts)
check "dpkg -i of the next version upgrades" ct dpkg -i /root/tokend-2.deb
check "the upgrade restarted tokend" test "$(show ActiveState)" = active
check "the upgrade sent no request ($before before, $(requests) after)" test "$(requests)" = "$before"
check "the installed version is the new one" test "$(ct dpkg-query -W -f '${Version}' tokend)" = "$(dpkg-deb -f "$deb2" Version)"
ct_sh 'kill "$(cat /root/reader.pid)"'
reads=$(ct_sh 'grep -c ok /root/reader.log' || true)
empty=$(ct_sh 'grep -c EMPTY /root/reader.log' || true)
check "the looping reader never found the file missing or empty ($reads reads, $empty failures)" test "$empty" = 0 -a "$reads" -gt 100
check "the upgrade kept the configuration" sh -c "nsenter -t $pid1 -a grep -q reports /etc/tokend/config.yaml"
check "the upgrade kept /etc/tokend's owner and mode" test "$(ct stat -c '%U:%G %a' /etc/tokend)" = "root:tokend 750"

say "the watchdog"
pid=$(main_pid)
restarts=$(show NRestarts)
ct kill -STOP "$pid"
check "a stopped daemon is restarted by the watchdog" \
  wait_in "test \"\$(systemctl show tokend -p NRestarts --value)\" -gt $restarts && test \"\$(systemctl show tokend -p SubState --value)\" = running" 30
check "with a new process" test "$(main_pid)" != "$pid"
check "the watchdog is what fired" sh -c "nsenter -t $pid1 -a journalctl -u tokend --no-pager | grep -q 'Watchdog timeout'"

say "a broken configuration at start"
ct_sh 'cp /etc/tokend/config.yaml /root/good.yaml && printf "clients:\n  x:\n    tokne_url: nope\n" > /etc/tokend/config.yaml'
ct systemctl restart tokend || true
check "it exits 78 (EX_CONFIG)" test "$(show ExecMainStatus)/$(show Result)" = "78/exit-code"
restarts=$(show NRestarts)
sleep 7 # longer than RestartSec=5s
check "and is not restarted in a loop (NRestarts stays $restarts)" test "$(show NRestarts)/$(show ActiveState)" = "$restarts/failed"
check "the journal names the file, line and key" \
  sh -c "nsenter -t $pid1 -a journalctl -u tokend -p err --no-pager | grep -q 'config.yaml:3:5: clients.x: unknown key .tokne_url.; did you mean .token_url.'"
ct_sh 'cp /root/good.yaml /etc/tokend/config.yaml'
ct systemctl reset-failed tokend
ct systemctl start tokend
check "fixed, it starts again" test "$(show ActiveState)" = active

say "the journal, the sandbox, the system call filter"
# A client whose IdP is not there: its failed requests are warnings.
write_config "  dead:
    token_url: http://127.0.0.1:9/oauth/token
    audience: https://dead.example/"
ct systemctl reload tokend
check "journalctl -p warning shows tokend's warnings, at priority 4" \
  wait_in "journalctl -u tokend -p warning..warning -o cat --no-pager | grep -q 'token request failed.*client=dead'" 10
check "journalctl -p info shows the info lines too, at their own priority" \
  sh -c "nsenter -t $pid1 -a journalctl -u tokend -p info -o verbose --no-pager | grep -q 'PRIORITY=6'"
check "no line carries a second timestamp" \
  sh -c "! nsenter -t $pid1 -a journalctl -u tokend -o cat --no-pager | grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T'"
exposure=$(ct systemd-analyze security tokend --no-pager 2>/dev/null | sed -n 's/.*Overall exposure level for tokend.service: \([0-9.]*\).*/\1/p')
check "systemd-analyze security: exposure $exposure (at most 1.5)" awk "BEGIN { exit !($exposure <= 1.5) }"
check "no system call was outside the filter (no SIGSYS)" \
  sh -c "! nsenter -t $pid1 -a journalctl -u tokend --no-pager | grep -Eq 'status=31/SYS|code=killed, signal=SYS'"

say "remove, purge, reinstall"
pid=$(main_pid)
check "dpkg --remove succeeds" ct dpkg --remove tokend
check "remove stops the service (pid $pid)" sh -c "! nsenter -t $pid1 -a kill -0 $pid 2>/dev/null"
check "remove deletes the token files but keeps the configuration and state" \
  sh -c "nsenter -t $pid1 -a test ! -e /run/tokend -a -f /etc/tokend/config.yaml -a -d /var/lib/tokend"
check "dpkg --purge succeeds" ct dpkg --purge tokend
check "purge leaves nothing behind in /etc, /var/lib, /run, /usr" \
  sh -c "nsenter -t $pid1 -a sh -c 'test ! -e /etc/tokend -a ! -e /var/lib/tokend -a ! -e /run/tokend -a ! -e /usr/bin/tokend -a ! -e /lib/systemd/system/tokend.service -a ! -e /etc/systemd/system/multi-user.target.wants/tokend.service'"
check "purge leaves no statoverride and no dpkg record" \
  sh -c "! nsenter -t $pid1 -a dpkg-statoverride --list | grep -q tokend && ! nsenter -t $pid1 -a dpkg -s tokend >/dev/null 2>&1"
check "a reinstall works and leaves no failed unit" sh -c "nsenter -t $pid1 -a dpkg -i /root/tokend-1.deb >/dev/null && test -z \"\$(nsenter -t $pid1 -a systemctl --failed --no-legend --plain)\""

summary
