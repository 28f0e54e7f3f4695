#!/bin/sh
# The container's entrypoint: refuse root, validate the config, optionally wait for the shared
# store, then exec wiregate so that it is the container's main process and receives SIGTERM
# (and SIGHUP) directly.
#
#   (no arguments)            wiregate serve -c "$WIREGATE_CONFIG"
#   serve [ARGS...]           the same, with ARGS
#   -x ... (an option first)  taken as options of serve
#   anything else             passed to wiregate unchanged (approvals list, token issue, ...)
#
# Environment:
#   WIREGATE_CONFIG          config file (default /etc/wiregate/wiregate.toml)
#   WIREGATE_ALLOW_ROOT=1    run even as uid 0 (not recommended)
#   WIREGATE_WAIT_FOR_STORE  host:port to wait for before serving (the shared store)
#   WIREGATE_WAIT_SECONDS    how long to wait for it (default 60)
set -eu

log() { printf 'wiregate-entrypoint: %s\n' "$*" >&2; }

if [ "$(id -u)" = "0" ] && [ "${WIREGATE_ALLOW_ROOT:-}" != "1" ]; then
    log "refusing to run as root (uid 0): run the container as a non-root user" \
        "(the image's default is uid 10001), or set WIREGATE_ALLOW_ROOT=1 to override"
    exit 1
fi

CONFIG="${WIREGATE_CONFIG:-/etc/wiregate/wiregate.toml}"
# subcommands run through `docker run IMAGE ...` find the config without -c
export WIREGATE_CONFIG="$CONFIG"

if [ "$#" -eq 0 ]; then
    set -- serve
fi
case "$1" in
    -*) set -- serve "$@" ;;
esac
if [ "$1" != "serve" ]; then
    exec wiregate "$@"
fi
shift

# An explicit -c/--config among serve's arguments wins over WIREGATE_CONFIG; it is the file
# that gets checked, and no second -c is added.
explicit=""
prev=""
for arg in "$@"; do
    case "$prev" in
        -c|--config) CONFIG="$arg"; explicit=1 ;;
    esac
    case "$arg" in
        --config=*) CONFIG="${arg#--config=}"; explicit=1 ;;
        -c?*) CONFIG="${arg#-c}"; explicit=1 ;;
    esac
    prev="$arg"
done

status=0
output="$(wiregate check -c "$CONFIG" 2>&1)" || status=$?
if [ "$status" -ne 0 ]; then
    printf '%s\n' "$output" >&2
    log "the config $CONFIG is not valid (wiregate check exited $status); not starting"
    exit "$status"
fi
# warnings (an unset password variable...) belong in the container log
printf '%s\n' "$output" >&2

if [ -n "${WIREGATE_WAIT_FOR_STORE:-}" ]; then
    seconds="${WIREGATE_WAIT_SECONDS:-60}"
    case "$seconds" in
        ''|*[!0-9]*)
            log "WIREGATE_WAIT_SECONDS must be a whole number of seconds, got '$seconds'"
            exit 2 ;;
    esac
    # slim images have no nc: a TCP connect from python (the image's venv) instead
    python3 - "$WIREGATE_WAIT_FOR_STORE" "$seconds" <<'EOF'
import socket
import sys
import time

target, seconds = sys.argv[1], int(sys.argv[2])
host, sep, port = target.rpartition(":")
host = host.strip("[]")
if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    sys.exit(f"wiregate-entrypoint: WIREGATE_WAIT_FOR_STORE must be host:port, got {target!r}")
deadline = time.monotonic() + seconds
last = "no attempt"
while True:
    left = deadline - time.monotonic()
    if left <= 0:
        sys.exit(f"wiregate-entrypoint: the store at {target} did not accept a connection "
                 f"within {seconds} s (WIREGATE_WAIT_SECONDS); last error: {last}")
    try:
        socket.create_connection((host, int(port)), timeout=min(2.0, left)).close()
        break
    except OSError as e:
        last = e.strerror or str(e)
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
print(f"wiregate-entrypoint: the store at {target} accepts connections", file=sys.stderr)
EOF
fi

if [ -n "$explicit" ]; then
    exec wiregate serve "$@"
fi
exec wiregate serve -c "$CONFIG" "$@"
