#!/usr/bin/env bash
# Run the FreeSWITCH from `make freeswitch` with the project's freeswitch-conf/, on loopback,
# in the foreground, every writable directory under one run directory:
#
#   scripts/run-freeswitch.sh [RUN_DIR] [extra freeswitch options...]
#
#   RUN_DIR            default: var/freeswitch in the repo (git-ignored); holds log/freeswitch.log,
#                      recordings/ (point BRIDGE_RECORDINGS_DIR here), db/, run/, ...
#   FREESWITCH_PREFIX  where it was built (default /opt/bridge-freeswitch)
#   FREESWITCH_CONF    the configuration directory (default: the repo's freeswitch-conf)
#
# Without a console (-nc) and without forking (-nf): stop it with Ctrl-C / SIGTERM, or over ESL
# with `fsctl shutdown`. Add -c instead of running it in the background to get the console.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${FREESWITCH_PREFIX:-/opt/bridge-freeswitch}
CONF=${FREESWITCH_CONF:-$REPO/freeswitch-conf}
RUN_DIR=${1:-$REPO/var/freeswitch}
[ $# -gt 0 ] && shift

BIN="$PREFIX/bin/freeswitch"
[ -x "$BIN" ] || { echo "run-freeswitch: no $BIN: build it with 'make freeswitch'" >&2; exit 1; }

mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
CONF=$(cd "$CONF" && pwd)
args=()
for d in log run db temp recordings cache storage certs; do
  mkdir -p "$RUN_DIR/$d"
  args+=("-$d" "$RUN_DIR/$d")
done

console=-nc
for a in "$@"; do [ "$a" = -c ] && console=; done
echo "FreeSWITCH: conf $CONF, log $RUN_DIR/log/freeswitch.log, recordings $RUN_DIR/recordings" >&2
exec "$BIN" -nonat $console -nf -conf "$CONF" "${args[@]}" "$@"
