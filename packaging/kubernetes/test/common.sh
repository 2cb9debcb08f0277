# Helpers of the pod tests (test-pods.sh, test-fleet-pods.sh), sourced by them.
# shellcheck shell=bash

# Waits up to $2 seconds (default 15) for the shell condition $1.
wait_for() {
  local _
  for _ in $(seq $(( ${2:-15} * 10 ))); do
    sh -c "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# build_consumer_image TAG TOKEND_BINARY DIRECTORY: an image for the pods that read tokens,
# busybox for the shell and tokend for `tokend get` over the socket, built in DIRECTORY.
build_consumer_image() {
  mkdir -p "$3"
  cp /bin/busybox "$3/busybox"
  cp "$2" "$3/tokend"
  cat >"$3/Containerfile" <<'CONTAINERFILE'
FROM scratch
COPY busybox /bin/busybox
COPY tokend /usr/bin/tokend
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CONTAINERFILE
  podman build --quiet --pull=never -t "$1" "$3" >/dev/null
}
