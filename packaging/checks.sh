# The check helpers of the packaging tests (debian/test-booted.sh, kubernetes/test-pods.sh),
# sourced by them: one line per check, `ok` or `FAIL`, and a summary at the end, which the Rust
# tests that run the scripts look for.
# shellcheck shell=bash
checks_started=$(date +%s)
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
# check DESCRIPTION COMMAND...: runs COMMAND; its status decides.
check() {
  local what=$1
  shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
say() { echo "---- $*"; }
# `N passed, M failed in Ts`; the status is 0 only if nothing failed.
summary() {
  echo "$passed passed, $failed failed in $(( $(date +%s) - checks_started ))s"
  [ "$failed" = 0 ]
}
