"""The API commands (mod_commands and friends) with FreeSWITCH 1.10.12's reply texts.

Each handler takes the argument string exactly as `api <cmd> <args>` delivered it and returns
the text the API writes to its stream. Where a capture exists (esl-captures/11 for unknown
uuids) its text wins over the reference; the oddities are deliberate: uuid_hold answers
"+OK Success" for a uuid that does not exist, uuid_broadcast says "-ERR invalid uuid",
uuid_record and uuid_send_dtmf say "-ERR Cannot locate session!".
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog

from bridge.sim import apps, audio_fork
from bridge.sim.arguments import parse_originate, separate_string, split_command
from bridge.sim.channels import Broadcast, Channel, MediaBug, str2cause
from bridge.sim.events import FS_VERSION, channel_data, uptime_text
from bridge.sim.originate import dial

if TYPE_CHECKING:
    from bridge.sim.core import SwitchCore

log = structlog.get_logger(__name__)

Handler = Callable[["SwitchCore", str], Awaitable[str]]
NO_CHANNEL = "-ERR No such channel!\n"
NO_SESSION = "-ERR Cannot locate session!\n"
OP_FAILED = "-ERR Operation Failed\n"


_UUID_LEN = 36
_SCAN_UP_TO = 64  # live channels; past that, only uuid-length substrings are looked up


def _channels_named_in(core: SwitchCore, line: str) -> list[Channel]:
    """The live channels whose uuid appears in `line`. A few channels are simply scanned; with
    thousands (the sessions benchmark) scanning every one on every command made the simulator
    quadratic, so each 36-character window of the line is looked up instead (every uuid the
    simulator or the bridge makes is a 36-character UUID)."""
    if len(core.channels) <= _SCAN_UP_TO:
        return [ch for ch in core.live_channels() if ch.uuid in line]
    found: dict[str, Channel] = {}
    for start in range(len(line) - _UUID_LEN + 1):
        ch = core.live(line[start : start + _UUID_LEN])
        if ch is not None:
            found[ch.uuid] = ch
    return list(found.values())


async def execute(core: SwitchCore, line: str) -> str:
    """switch_api_execute as mod_event_socket's api/bgapi call it: the output text, with
    the ESL layer's substitutions for unknown commands and empty output, and the API event."""
    name, args = split_command(line)
    core.command_log.append(line.strip())
    for ch in _channels_named_in(core, line):
        ch.commands.append(line.strip())
    api_event = core.events.new("API")  # numbered now, fired when the command returns
    api_event.add("API-Command", name)
    if args:
        api_event.add("API-Command-Argument", args)
    failure = core.take_failure(line.strip())
    if failure is not None:
        body = failure if failure.endswith("\n") else failure + "\n"
    else:
        handler = COMMANDS.get(name.lower())
        if handler is None:
            body = f"-ERR {name} Command not found!\n"
        else:
            try:
                body = await handler(core, args)
            except Exception:
                log.exception("sim_command_crashed", command=line)
                body = ""
    core.fire(api_event)
    return body or "-ERR no reply\n"


def _argv(args: str, size: int) -> list[str]:
    return separate_string(args, " ", size) if args.strip() else []


# ---------------------------------------------------------------- core / info


async def cmd_status(core: SwitchCore, args: str) -> str:
    count = core.session_count()
    return (
        f"UP {uptime_text(time.time() - core.started)}\n"
        "FreeSWITCH (Version 1.10.12-release  64bit) is ready\n"
        f"{core.sessions_since_startup} session(s) since startup\n"
        f"{count} session(s) - peak {core.peak_sessions}, last 5min {core.peak_sessions} \n"
        "0 session(s) per Sec out of max 30, peak 2, last 5min 2 \n"
        "1000 session(s) max\n"
        "min idle cpu 0.00/99.00\n"
        "Current Stack Size/Max 240K/8192K\n"
    )


async def cmd_version(core: SwitchCore, args: str) -> str:
    if "short" in args:
        return "1.10.12\n"
    return f"FreeSWITCH Version {FS_VERSION} (-release 64bit)\n"


async def cmd_hostname(core: SwitchCore, args: str) -> str:
    return core.settings.hostname


async def cmd_switchname(core: SwitchCore, args: str) -> str:
    return core.settings.switchname


async def cmd_strftime(core: SwitchCore, args: str) -> str:
    return time.strftime(args or "%Y-%m-%d %T")


async def cmd_global_getvar(core: SwitchCore, args: str) -> str:
    return {"switch_serial": "0", "hostname": core.settings.hostname}.get(args.strip(), "")


CHANNEL_COLUMNS = (
    "uuid,direction,created,created_epoch,name,state,cid_name,cid_num,ip_addr,dest,application,application_data,"
    "dialplan,context,read_codec,read_rate,read_bit_rate,write_codec,write_rate,write_bit_rate,secure,hostname,"
    "presence_id,presence_data,accountcode,callstate,callee_name,callee_num,callee_direction,call_uuid,"
    "sent_callee_name,sent_callee_num,initial_cid_name,initial_cid_num,initial_ip_addr,initial_dest,"
    "initial_dialplan,initial_context"
).split(",")


def _channel_row(core: SwitchCore, ch: Channel) -> dict[str, str]:
    p = ch.profile
    codec = ch.codec if ch.codec_ready else ""
    rate = str(ch.rate) if ch.codec_ready else ""
    return {
        "uuid": ch.uuid,
        "direction": ch.direction,
        "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ch.created)),
        "created_epoch": str(int(ch.created)),
        "name": ch.name,
        "state": ch.running_state,
        "cid_name": (p.caller_id_name or "") if p else "",
        "cid_num": (p.caller_id_number or "") if p else "",
        "ip_addr": (p.network_addr or "") if p else "",
        "dest": (p.destination_number or "") if p else "",
        "application": ch.current_app or "",
        "application_data": ch.current_app_data or "",
        "dialplan": (p.dialplan or "") if p else "",
        "context": (p.context or "") if p else "",
        "read_codec": codec,
        "read_rate": rate,
        "read_bit_rate": "64000" if codec else "",
        "write_codec": codec,
        "write_rate": rate,
        "write_bit_rate": "64000" if codec else "",
        "secure": "",
        "hostname": core.settings.hostname,
        "presence_id": "",
        "presence_data": "",
        "accountcode": "",
        "callstate": ch.call_state,
        "callee_name": (p.callee_id_name or "") if p else "",
        "callee_num": (p.callee_id_number or "") if p else "",
        "callee_direction": "",
        "call_uuid": ch.call_uuid,
        "sent_callee_name": "",
        "sent_callee_num": "",
        "initial_cid_name": (p.orig_caller_id_name or p.caller_id_name or "") if p else "",
        "initial_cid_num": (p.orig_caller_id_number or p.caller_id_number or "") if p else "",
        "initial_ip_addr": (p.network_addr or "") if p else "",
        "initial_dest": (p.destination_number or "") if p else "",
        "initial_dialplan": (p.dialplan or "") if p else "",
        "initial_context": (p.context or "") if p else "",
    }


async def cmd_show(core: SwitchCore, args: str) -> str:
    argv = _argv(args, 8)
    if not argv or argv[0] not in ("channels", "calls"):
        return f"-USAGE: {' '.join(argv[:1]) or 'show'} is not supported by the sandbox switch\n"
    rows = [_channel_row(core, ch) for ch in core.live_channels() if ch.state_number < 12]
    as_json = len(argv) >= 3 and argv[1] == "as" and argv[2] == "json"
    if as_json:
        # mod_commands.c show_function: no rows -> the literal "{\"row_count\": 0}\n"; rows -> the
        # cJSON_PrintUnformatted text and nothing after it.
        if not rows:
            return '{"row_count": 0}\n'
        return json.dumps({"row_count": len(rows), "rows": rows}, separators=(",", ":"))
    lines = [",".join(CHANNEL_COLUMNS)]
    lines += [",".join(row[c] for c in CHANNEL_COLUMNS) for row in rows]
    return "\n".join(lines) + f"\n\n{len(rows)} total.\n"


# ---------------------------------------------------------------- channel basics


async def cmd_uuid_exists(core: SwitchCore, args: str) -> str:
    return "true" if core.live(args.strip()) is not None else "false"


# mod_commands.c uuid_answer_function / uuid_pre_answer_function: "-ERROR\n" both for a uuid
# that does not exist and for an answer that failed.
async def cmd_uuid_answer(core: SwitchCore, args: str) -> str:
    ch = core.live(args.strip())
    if ch is None:
        return "-ERROR\n"
    return "+OK\n" if ch.answer() else "-ERROR\n"


async def cmd_uuid_pre_answer(core: SwitchCore, args: str) -> str:
    ch = core.live(args.strip())
    if ch is None:
        return "-ERROR\n"
    return "+OK\n" if ch.pre_answer() else "-ERROR\n"


async def cmd_uuid_kill(core: SwitchCore, args: str) -> str:
    if not args.strip():
        return "-USAGE: <uuid> [cause]\n"
    uuid, _, cause = args.strip().partition(" ")
    ch = core.live(uuid)
    if ch is None or not ch.alive:
        return NO_CHANNEL
    ch.variables.setdefault("sip_hangup_disposition", "send_bye")
    ch.hangup(str2cause(cause) if cause.strip() else "NORMAL_CLEARING")
    return "+OK\n"


async def cmd_uuid_hold(core: SwitchCore, args: str) -> str:
    argv = _argv(args, 4)
    if not argv or not argv[0]:
        return "-USAGE: [off|toggle] <uuid> [<display>]\n"
    action = argv[0].lower()
    uuid = argv[1] if action in ("off", "toggle") and len(argv) > 1 else argv[0]
    ch = core.live(uuid)
    if ch is None:
        return "+OK Success\n"  # switch_ivr_hold_uuid succeeds for a session it cannot find
    if action == "toggle":
        action = "off" if ch.held else "on"
    if action == "off":
        ok = ch.unhold()
        if ok:
            _stop_hold_music(ch)
            # The re-INVITE answer brings the call back to ACTIVE a moment later (esl-captures/01).
            asyncio.get_running_loop().call_soon(_back_to_active, ch)
    else:
        ok = ch.hold()
        if ok:
            _start_hold_music(ch)
    return "+OK Success\n" if ok else OP_FAILED


def _back_to_active(ch: Channel) -> None:
    if ch.alive and not ch.held:
        ch.set_call_state("ACTIVE")


def _start_hold_music(ch: Channel) -> None:
    partner = ch.partner
    if partner is None:
        return
    music = ch.var("temp_hold_music") or ch.var("hold_music") or "local_stream://moh"
    ch.variables.pop("temp_hold_music", None)
    partner.broadcasts.append(Broadcast("playback", music, loop=True))
    partner.variables["hold_music_playing"] = "true"
    partner.interrupt()


def _stop_hold_music(ch: Channel) -> None:
    partner = ch.partner
    if partner is None:
        return
    partner.variables.pop("hold_music_playing", None)
    if partner.playing:
        partner.break_requested = True
        partner.interrupt()


async def cmd_uuid_setvar(core: SwitchCore, args: str) -> str:
    argv = _argv(args, 3)
    if len(argv) < 2 or not argv[1]:
        return "-USAGE: <uuid> <var> [value]\n"
    ch = core.live(argv[0])
    if ch is None:
        return NO_CHANNEL
    value = argv[2] if len(argv) > 2 and argv[2] != "" else None
    ch.set_var(argv[1], value)
    return "+OK\n"


async def cmd_uuid_setvar_multi(core: SwitchCore, args: str) -> str:
    argv = _argv(args, 2)
    if len(argv) < 2:
        return "-USAGE: <uuid> <var>=<value>;<var>=<value>...\n"
    ch = core.live(argv[0])
    if ch is None:
        return NO_CHANNEL
    for item in separate_string(argv[1], ";", 64):
        name, _, value = item.partition("=")
        if name:
            ch.set_var(name, value or None)
    return "+OK\n"


async def cmd_uuid_getvar(core: SwitchCore, args: str) -> str:
    argv = _argv(args, 3)
    if len(argv) < 2:
        return "-USAGE: <uuid> <var>\n"
    ch = core.live(argv[0])
    if ch is None:
        return NO_CHANNEL
    return ch.variables.get(argv[1], "_undef_")


async def cmd_uuid_dump(core: SwitchCore, args: str) -> str:
    argv = _argv(args, 2)
    ch = core.live(argv[0]) if argv else None
    if ch is None:
        return NO_CHANNEL
    ev = core.events.new("CHANNEL_DATA", sequence=0)
    ev.headers = ev.headers[:1] + channel_data(ch)
    if len(argv) > 1 and argv[1] == "json":
        return ev.json().decode()
    return ev.plain().decode()


# ---------------------------------------------------------------- media


async def cmd_uuid_audio(core: SwitchCore, args: str) -> str:
    argv = _argv(args, 5)
    usage = "-USAGE: <uuid> [start [read|write] [mute|level <level>]|stop]\n"
    if len(argv) < 2:
        return usage
    ch = core.live(argv[0])
    if ch is None:
        return NO_CHANNEL
    if argv[1].lower() == "stop":
        ch.mute = {"read": False, "write": False}
        for rec in ch.recordings.values():
            rec.set(muted=False)
        ch.levels = {"read": 0, "write": 0}
        ch.remove_bug("audio")
        return "+OK\n"
    if argv[1].lower() != "start" or len(argv) < 5 or argv[2].lower() not in ("read", "write"):
        return usage
    direction, what = argv[2].lower(), argv[3].lower()
    try:
        level = int(argv[4])
    except ValueError:
        level = 0
    if what not in ("mute", "level"):
        return usage
    ch.pre_answer()
    if "audio" not in ch.media_bugs:
        ch.add_bug("audio", "audio", what)
    if what == "mute":
        ch.mute[direction] = level != 0
        if direction == "read":  # the caller muted: silence for the recording's left channel too
            for rec in ch.recordings.values():
                rec.set(muted=level != 0)
    else:
        ch.levels[direction] = level
    return "+OK\n"


async def cmd_uuid_send_dtmf(core: SwitchCore, args: str) -> str:
    argv = _argv(args, 2)
    if len(argv) < 2 or not argv[0] or not argv[1]:
        return "-USAGE: <uuid> <dtmf_data>\n"
    ch = core.live(argv[0])
    if ch is None:
        return NO_SESSION
    ch.pre_answer()
    # Digits go towards this leg's own endpoint: no DTMF event here (esl-captures/03).
    ch.variables["sim_dtmf_sent"] = ch.variables.get("sim_dtmf_sent", "") + argv[1]
    return f"+OK {argv[0]} sent DTMF {argv[1]}.\n"


async def cmd_uuid_recv_dtmf(core: SwitchCore, args: str) -> str:
    argv = _argv(args, 2)
    if len(argv) < 2 or not argv[0] or not argv[1]:
        return "-USAGE: <uuid> <dtmf_data>\n"
    ch = core.live(argv[0])
    if ch is None:
        return NO_SESSION
    digits, _, duration = argv[1].partition("@")
    for digit in digits:
        if digit in "0123456789*#ABCDabcd":
            ch.dtmf.append(digit.upper())
            ch.emit(
                "DTMF",
                post=[
                    ("DTMF-Digit", digit.upper()),
                    ("DTMF-Duration", duration or "2000"),
                    ("DTMF-Source", "APP"),
                ],
                data="basic",
            )
    ch.interrupt()
    return ""  # mod_commands writes nothing on success: ESL turns that into "-ERR no reply"


async def cmd_uuid_broadcast(core: SwitchCore, args: str) -> str:
    argv = _argv(args, 4)
    if len(argv) < 2:
        return "-USAGE: <uuid> <path> [aleg|bleg|holdb|both]\n"
    ch = core.live(argv[0])
    if ch is None or not ch.alive:
        return "-ERR invalid uuid\n"
    legs = argv[2].lower() if len(argv) > 2 else ""
    path = argv[1]
    app, cause = "playback", None
    if "::" in path:
        app, _, path = path.partition("::")
        if "!" in app:
            app, _, cause_text = app.partition("!")
            cause = str2cause(cause_text or "normal_clearing")
    partner = ch.partner
    targets: list[Channel] = []
    if not legs or "aleg" in legs or "both" in legs:
        targets.append(ch)
    if ("bleg" in legs or "both" in legs) and partner is not None:
        targets.append(partner)
    hold_partner = (not legs or "holdb" in legs) and partner is not None and partner not in targets
    for leg in targets:
        command = core.events.new("COMMAND")
        command.extend(
            [
                ("call-command", "execute"),
                ("execute-app-name", app),
                ("execute-app-arg", path),
                ("event-lock", "true"),
                ("lead-frames", "5"),
            ]
        )
        after = None
        if hold_partner and leg is ch and partner is not None:
            music = ch.var("hold_music") or "local_stream://moh"
            partner.broadcasts.append(Broadcast("playback", music, loop=True))
            partner.interrupt()
            after = _breaker(partner)
        leg.broadcasts.append(Broadcast(app, path, command=command, hangup_cause=cause, after=after))
        leg.interrupt()
    return "+OK Message sent\n"


def _breaker(ch: Channel) -> Callable[[], None]:
    def stop() -> None:
        if ch.playing:
            ch.break_requested = True
            ch.interrupt()

    return stop


async def cmd_uuid_break(core: SwitchCore, args: str) -> str:
    argv = _argv(args, 2)
    if not argv or not argv[0]:
        return "-USAGE: <uuid> [all]\n"
    ch = core.live(argv[0])
    if ch is None:
        return NO_CHANNEL
    if len(argv) > 1 and argv[1] == "all":
        ch.broadcasts.clear()
    if ch.playing:
        ch.break_requested = True
        ch.interrupt()
    return "+OK\n"


async def cmd_uuid_displace(core: SwitchCore, args: str) -> str:
    """switch_ivr_displace_session: the file is opened first (a missing one fails), the channel
    is pre-answered, one bug per file; without `l` (loop) the bug goes away by itself when the
    file ends, and a non-zero limit (seconds) ends it at the latest then. `m` mixes the file into
    what the channel hears instead of replacing it; `r` displaces the read side instead."""
    argv = _argv(args, 5)
    usage = "-USAGE: <uuid> [start|stop] <path> [<limit>] [mux]\n"
    if len(argv) < 3 or not argv[2]:
        return usage
    ch = core.live(argv[0])
    if ch is None:
        return NO_SESSION
    action, path = argv[1].lower(), argv[2]
    if action == "start":
        if path in ch.displace or not ch.alive:
            return "-ERR Cannot displace session!\n"
        response, duration = core.playback_outcome(path)
        if response != "FILE PLAYED" or not ch.pre_answer():
            return "-ERR Cannot displace session!\n"
        limit = _atoi(argv[3]) if len(argv) > 3 else 0
        flags = argv[4] if len(argv) > 4 else ""
        ch.displace[path] = flags
        ch.add_bug(f"displace:{path}", "displace", path)
        ends = [s for s in (None if "l" in flags else duration, float(limit) if limit else None) if s]
        if ends:
            bug = ch.media_bugs[f"displace:{path}"]
            core.spawn(_displace_ends(ch, path, bug, min(ends)), name=f"displace:{ch.uuid}")
        return "+OK Success\n"
    if action == "stop":
        if path not in ch.displace:
            return "-ERR Cannot stop displace session!\n"
        del ch.displace[path]
        ch.remove_bug(f"displace:{path}")
        return "+OK Success\n"
    return usage


async def _displace_ends(ch: Channel, path: str, bug: MediaBug, seconds: float) -> None:
    """The file ran out (or the limit passed): the bug's callback returns false and is removed."""
    await asyncio.sleep(seconds)
    if ch.alive and ch.media_bugs.get(f"displace:{path}") is bug:
        del ch.displace[path]
        ch.remove_bug(f"displace:{path}")


def _atoi(text: str) -> int:
    digits = ""
    for c in text.strip():
        if not c.isdigit():
            break
        digits += c
    return int(digits) if digits else 0


async def cmd_uuid_record(core: SwitchCore, args: str) -> str:
    argv = _argv(args, 5)
    usage = "-USAGE: <uuid> [start|stop|mask|unmask|pause|resume] <path> [<limit>] [<recording_vars>]\n"
    if len(argv) < 3 or not argv[0] or not argv[1] or not argv[2]:
        return usage
    ch = core.live(argv[0])
    if ch is None:
        return NO_SESSION
    action, path = argv[1].lower(), argv[2]
    if action == "start":
        return "+OK Success\n" if ch.start_recording(path) else "-ERR Cannot record session!\n"
    if action == "stop":
        return "+OK Success\n" if ch.stop_recording(path) else "-ERR Cannot stop record session!\n"
    rec = ch.recordings.get(path)
    failures = {
        "mask": "-ERR Cannot mask recording session!\n",
        "unmask": "-ERR Cannot unmask recording session!\n",
        "pause": "-ERR Cannot pause recording session!\n",
        "resume": "-ERR Cannot resume recording session!\n",
    }
    if action not in failures:
        return usage
    if rec is None:
        return failures[action]
    if action in ("mask", "unmask"):
        rec.set(masked=action == "mask")
    else:
        rec.set(paused=action == "pause")
    return "+OK Success\n"


# ---------------------------------------------------------------- call flow


async def cmd_uuid_transfer(core: SwitchCore, args: str) -> str:
    usage = "-USAGE: <uuid> [-bleg|-both] <dest-exten> [<dialplan>] [<context>]\n"
    argv = _argv(args, 5)
    if len(argv) < 2:
        return usage
    ch = core.live(argv[0])
    if ch is None or not ch.alive:
        return NO_CHANNEL
    dest, dialplan, context = argv[1], _opt(argv, 2), _opt(argv, 3)
    if dest.startswith("-"):
        flag = dest[1:].lower()
        dest, dialplan, context = (argv[2] if len(argv) > 2 else ""), _opt(argv, 3), _opt(argv, 4)
        partner = ch.partner
        if flag == "bleg":
            if partner is not None:
                ch = partner
        elif flag == "both" and partner is not None:
            apps.transfer(partner, dest, dialplan, context, both=True)
            apps.transfer(ch, dest, dialplan, context, both=True)
            return "+OK\n"
    if not dest:
        return usage
    apps.transfer(ch, dest, dialplan, context)
    return "+OK\n"


def _opt(argv: list[str], i: int) -> str | None:
    return argv[i] if len(argv) > i and argv[i] else None


async def cmd_uuid_park(core: SwitchCore, args: str) -> str:
    ch = core.live(args.strip())
    if ch is None or not ch.alive:
        return NO_CHANNEL
    apps.transfer(ch, "park", "inline")
    return "+OK\n"


async def cmd_uuid_bridge(core: SwitchCore, args: str) -> str:
    argv = _argv(args, 4)
    if len(argv) < 2:
        return "-USAGE: <uuid> <other_uuid>\n"
    a, b = core.live(argv[0]), core.live(argv[1])
    if a is None or b is None or a is b or not a.alive or not b.alive or not (a.answered or b.answered):
        # switch_ivr_uuid_bridge also refuses when neither leg is answered
        return "-ERR Invalid uuid\n"
    for leg in (a, b):
        old = leg.partner
        if (
            old is not None
            and old is not a
            and old is not b
            and not (old.true_var("park_after_bridge") or old.var("transfer_after_bridge"))
        ):
            old.hangup("NORMAL_CLEARING")
    apps.redirect(a, [("__uuid_bridge", b.uuid)], routing=False)
    apps.redirect(b, [("__uuid_bridged", a.uuid)], routing=False)
    return f"+OK {b.uuid}\n"


async def cmd_uuid_deflect(core: SwitchCore, args: str) -> str:
    argv = _argv(args, 2)
    if len(argv) < 2:
        return "-USAGE: <uuid> <uri>\n"
    ch = core.live(argv[0])
    if ch is None:
        return NO_CHANNEL
    if not ch.answered:
        return "-ERR Cannot deflect an unanswered channel\n"
    ch.variables["sip_refer_to"] = argv[1]
    ch.variables["sip_refer_reply"] = "SIP/2.0 202 Accepted"
    if not ch.true_var("sip_refer_continue_after_reply"):
        ch.hangup("BLIND_TRANSFER")
    return "+OK:SIP/2.0 202 Accepted\n"


async def cmd_originate(core: SwitchCore, args: str) -> str:
    parsed = parse_originate(args)
    if parsed is None:
        return (
            "-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] [<context>] "
            "[<cid_name>] [<cid_num>] [<timeout_sec>]\n"
        )
    result = await dial(
        core,
        parsed.endpoint,
        parsed.variables,
        cid_name=parsed.cid_name,
        cid_num=parsed.cid_num,
        timeout_s=parsed.timeout_s,
        command=f"originate {args}",
    )
    if not result.ok or result.channel is None:
        return f"-ERR {result.cause}\n"
    ch = result.channel
    if parsed.app is not None:
        apps.start_flow(ch, [(parsed.app, parsed.app_data)], routing=False, enter_execute=True)
    else:
        apps.transfer(ch, parsed.exten or "", parsed.dialplan, parsed.context)
    return f"+OK {ch.uuid}\n"


async def cmd_conference(core: SwitchCore, args: str) -> str:
    return await core.conferences.api(args)


async def cmd_uuid_audio_fork(core: SwitchCore, args: str) -> str:
    return await audio_fork.api(core, args)


COMMANDS: dict[str, Handler] = {
    "status": cmd_status,
    "version": cmd_version,
    "hostname": cmd_hostname,
    "switchname": cmd_switchname,
    "strftime": cmd_strftime,
    "global_getvar": cmd_global_getvar,
    "show": cmd_show,
    "uuid_exists": cmd_uuid_exists,
    "uuid_answer": cmd_uuid_answer,
    "uuid_pre_answer": cmd_uuid_pre_answer,
    "uuid_kill": cmd_uuid_kill,
    "uuid_hold": cmd_uuid_hold,
    "uuid_setvar": cmd_uuid_setvar,
    "uuid_setvar_multi": cmd_uuid_setvar_multi,
    "uuid_getvar": cmd_uuid_getvar,
    "uuid_dump": cmd_uuid_dump,
    "uuid_audio": cmd_uuid_audio,
    "uuid_send_dtmf": cmd_uuid_send_dtmf,
    "uuid_recv_dtmf": cmd_uuid_recv_dtmf,
    "uuid_broadcast": cmd_uuid_broadcast,
    "uuid_break": cmd_uuid_break,
    "uuid_displace": cmd_uuid_displace,
    "uuid_record": cmd_uuid_record,
    "uuid_transfer": cmd_uuid_transfer,
    "uuid_park": cmd_uuid_park,
    "uuid_bridge": cmd_uuid_bridge,
    "uuid_deflect": cmd_uuid_deflect,
    "originate": cmd_originate,
    "conference": cmd_conference,
    "uuid_audio_fork": cmd_uuid_audio_fork,
}
