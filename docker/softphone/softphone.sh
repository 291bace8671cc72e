#!/bin/sh
# A headless lab softphone that places one call on start, then exits: the compose lab's
# softphone-baresip and softphone-sipp services (docker/softphone.Dockerfile); runs natively too.
#
#   softphone.sh baresip|sipp
#
#   LAB_SIP         the switch's lab profile (default 127.0.0.1:5080)
#   LAB_DIAL        the number dialled (default 5551234: any number is an AI call, dialplan/lab.xml)
#   LAB_CALL_S      how long the call lasts before the softphone hangs up (default 40)
#   LAB_STATE_DIR   wait (up to 300 s) for the lab first (compose: /lab, where docker/lab_setup.py
#                   writes lab.env): the bridge healthy, the default voice agent set and listening
#   SOFTPHONE_DIR   working directory: the caller's audio, baresip's config, what it heard
#                   (default /var/lib/softphone)
#   SIP_PORT / RTP_PORT   the softphone's own SIP and first RTP port (baresip 5062 / 10000,
#                   sipp 5072 / 6010: both can run beside `make lab`'s printed SIPp command)
#
# baresip (Debian's baresip-core 1.0.0) dials with `-e "/dial ..."` and quits after `-t`; it sends
# the caller's voice from a WAV (aufile), plays what it receives into ALSA's null device and dumps
# both directions (sndfile); at the end it prints how loud what it heard was, second by second (the
# demo agent's greeting is the loud start). sipp runs docker/softphone/lab-call.xml with RTP.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
MODE=${1:-baresip}
LAB_SIP=${LAB_SIP:-127.0.0.1:5080}
LAB_DIAL=${LAB_DIAL:-5551234}
LAB_CALL_S=${LAB_CALL_S:-40}
WORK=${SOFTPHONE_DIR:-/var/lib/softphone}

say() { echo "softphone($MODE): $*"; }

if [ -n "${LAB_STATE_DIR:-}" ]; then
  say "waiting for the lab ($LAB_STATE_DIR/lab.env from docker/lab_setup.py, the bridge, the demo agent)"
  python3 "$HERE/wait-lab.py" "$LAB_STATE_DIR/lab.env" 300
fi

mkdir -p "$WORK"
python3 "$HERE/caller-audio.py" "$WORK"

case $MODE in
  sipp)
    SIP_PORT=${SIP_PORT:-5072}
    RTP_PORT=${RTP_PORT:-6010}
    say "calling sip:$LAB_DIAL@$LAB_SIP for $LAB_CALL_S s (SIPp, RTP from $WORK/caller.ulaw)"
    cd "$WORK"
    set +e
    sipp "$LAB_SIP" -sf "$HERE/lab-call.xml" -s "$LAB_DIAL" -key caller 14155550100 \
      -i 127.0.0.1 -p "$SIP_PORT" -mi 127.0.0.1 -mp "$RTP_PORT" -m 1 -aa \
      -recv_timeout "${LAB_CALL_S}000" -trace_msg -message_file "$WORK/sipp-messages.log" \
      -trace_stat -stf "$WORK/sipp-stats.csv" </dev/null >"$WORK/sipp-screen.log" 2>&1
    rc=$?
    set -e
    awk '/message (sent|received)/ { d = ($0 ~ /sent/) ? "sent" : "recv"; getline; getline; print "  SIP " d ": " $0 }' \
      "$WORK/sipp-messages.log" 2>/dev/null || true
    say "sipp exited $rc (0: the call completed); SIP trace in $WORK/sipp-messages.log"
    exit $rc
    ;;
  baresip)
    SIP_PORT=${SIP_PORT:-5062}
    RTP_PORT=${RTP_PORT:-10000}
    conf=$WORK/baresip
    mkdir -p "$conf"
    rm -f "$WORK"/dump-*.wav
    cat >"$conf/config" <<EOF
poll_method		epoll
net_interface		127.0.0.1
sip_listen		127.0.0.1:$SIP_PORT
rtp_ports		$RTP_PORT-$((RTP_PORT + 20))
audio_path		/usr/share/baresip
audio_source		aufile,$WORK/caller.wav
audio_player		alsa,null
audio_alert		alsa,null
module_path		/usr/lib/baresip/modules
module			g711.so
module			aufile.so
module			alsa.so
module			sndfile.so
snd_path		$WORK
module_app		account.so
module_app		menu.so
EOF
    # regint=0: no registration, calls from 127.0.0.1 need none (the lab profile's ACL).
    echo "<sip:1001@$LAB_SIP>;regint=0;audio_codecs=PCMU" >"$conf/accounts"
    : >"$conf/contacts"
    say "calling sip:$LAB_DIAL@$LAB_SIP for $LAB_CALL_S s (baresip, voice from $WORK/caller.wav)"
    set +e
    # Its call status line (\r-separated, several a second) is dropped; the rest is kept.
    { baresip -f "$conf" -e "/dial sip:$LAB_DIAL@$LAB_SIP" -t "$LAB_CALL_S" </dev/null 2>&1
      echo $? >"$WORK/baresip.rc"; } \
      | tr '\r' '\n' | grep --line-buffered -v -E '^\[[0-9:]+\] audio=|^/d?i?a?l?( |$)|^/dial ' \
      | sed -u -E -e 's/^(\[[0-9:]+\] audio=[^ ]+ \(bit\/s\) +)+//' -e '/^$/d'
    rc=$(cat "$WORK/baresip.rc")
    set -e
    heard=$(ls -t "$WORK"/dump-*-dec.wav 2>/dev/null | head -1 || true)
    if [ -z "$heard" ]; then
      say "baresip exited $rc and dumped nothing: no call audio"
      exit 1
    fi
    python3 - "$heard" <<'EOF'
import array, math, sys, wave
w = wave.open(sys.argv[1])
rate, ch = w.getframerate(), w.getnchannels()
s = array.array("h", w.readframes(w.getnframes()))[::ch]
rms = [int(math.sqrt(sum(x * x for x in s[i:i + rate]) / max(1, len(s[i:i + rate])))) for i in range(0, len(s), rate)]
print(f"softphone(baresip): heard {len(s) / rate:.1f} s from the switch ({sys.argv[1]}); RMS per second: {rms}")
print("softphone(baresip): " + ("the agent spoke: loud audio arrived" if max(rms, default=0) > 300 else "silence only"))
sys.exit(0 if max(rms, default=0) > 300 else 1)
EOF
    ;;
  *)
    echo "usage: softphone.sh baresip|sipp" >&2
    exit 2
    ;;
esac
