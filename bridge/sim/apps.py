"""Dialplan applications, and the channel "thread" that runs them one after the other.

A channel's flow is an asyncio task running `run_flow`. Blocking applications (park,
playback, bridge, conference, eavesdrop ...) wait on the channel's `wakeup` event and look
at its state when woken: hung up, transferred (`pending_transfer`), told to break, or given
a broadcast to play. That is how `uuid_transfer` "only queues" and effects arrive as events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from bridge.sim.arguments import parse_var_block, separate_string
from bridge.sim.channels import STATE_NUMBERS, Broadcast, Channel, new_uuid, str2cause
from bridge.sim.dialplan import App, lookup
from bridge.sim.events import channel_basic, playback_file_type
from bridge.sim.originate import dial

log = structlog.get_logger(__name__)

AppHandler = Callable[[Channel, str], Awaitable[str | None]]


# ---------------------------------------------------------------- the flow


def start_flow(ch: Channel, apps: list[App] | None, *, routing: bool, enter_execute: bool = False) -> None:
    """Run `apps` on the channel's own task. `enter_execute` first moves a freshly answered
    outbound leg to CS_EXECUTE (after its originate has returned, as in esl-captures/10)."""
    flow = run_flow(ch, apps, routing=routing, enter_execute=enter_execute)
    ch.flow = ch.core.spawn(flow, name=f"flow:{ch.uuid}")


def redirect(ch: Channel, apps: list[App] | None, *, routing: bool = True) -> None:
    """Make the channel leave its current application and run `apps` (None = no route)."""
    ch.pending_transfer = apps if apps is not None else [("__no_route", "")]
    ch.pending_routing = routing
    if routing:
        ch.state_number = STATE_NUMBERS["CS_ROUTING"]
    ch.interrupt()
    if ch.flow is None or ch.flow.done():
        pending, ch.pending_transfer = ch.pending_transfer, None
        start_flow(ch, pending, routing=routing)


async def run_flow(
    ch: Channel, apps: list[App] | None, *, routing: bool, enter_execute: bool = False
) -> None:
    try:
        if enter_execute and ch.alive:
            ch.enter_execute()
        pending: tuple[list[App] | None, bool] | None = (apps, routing)
        while pending is not None and ch.alive:
            apps, routing = pending
            pending = None
            if routing:
                ch.enter_routing()
                if apps is None or apps == [("__no_route", "")]:
                    log.info("sim_no_route", uuid=ch.uuid)
                    ch.hangup("NO_ROUTE_DESTINATION")
                    break
                ch.enter_execute()
            for app, data in apps or []:
                if not ch.alive or ch.pending_transfer is not None:
                    break
                await execute(ch, app, data)
            if not ch.alive:
                break
            if ch.pending_transfer is not None:
                pending = (ch.pending_transfer, ch.pending_routing)
                ch.pending_transfer = None
                continue
            ch.hangup("NORMAL_CLEARING")  # the extension ran out of applications
    finally:
        if ch.hangup_cause and not ch.torn_down and not ch.core.closing:
            await ch.teardown()


async def execute(ch: Channel, app: str, data: str) -> None:
    handler = APPS.get(app)
    if app.startswith("__"):
        if handler is not None:
            await handler(ch, data)
        return
    if handler is None:
        log.warning("sim_invalid_application", uuid=ch.uuid, app=app)
        ch.hangup("DESTINATION_OUT_OF_ORDER")
        return
    app_uuid = new_uuid()
    ch.execute_event(app, data, app_uuid)
    response = await handler(ch, data)
    ch.execute_complete_event(app, data, app_uuid, response or "_none_")


def _leaving(ch: Channel) -> bool:
    return not ch.alive or ch.pending_transfer is not None


async def idle(ch: Channel, done: Callable[[], bool] = lambda: False) -> None:
    """Wait in the current application, playing queued broadcasts, until told to leave."""
    while True:
        if _leaving(ch) or done():
            return
        if ch.broadcasts:
            await play_broadcast(ch, ch.broadcasts.popleft())
            continue
        ch.wakeup.clear()
        if _leaving(ch) or done() or ch.broadcasts:
            continue
        await ch.wakeup.wait()


async def sleep_interruptibly(ch: Channel, seconds: float) -> bool:
    """True if the full time passed, False if the channel was told to leave."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not _leaving(ch):
        remaining = deadline - loop.time()
        if remaining <= 0:
            return True
        ch.wakeup.clear()
        if _leaving(ch):
            break
        try:
            await asyncio.wait_for(ch.wakeup.wait(), timeout=remaining)
        except TimeoutError:
            return True
    return False


# ---------------------------------------------------------------- playback


async def play_file(ch: Channel, raw: str, *, endless: bool = False) -> str:
    """switch_ivr_play_file: PLAYBACK_START/STOP carry the `{var=value}` prefix of the path."""
    params, path = parse_var_block(raw)
    response, duration = ch.core.playback_outcome(path)
    if response != "FILE PLAYED":
        return response
    extra = list(params.items())
    kind = playback_file_type(raw)
    ch.playing = path
    ch.break_requested = False
    # switch_ivr_play_file reports the path as given, its {var=value} prefix included, and the
    # variables again as headers of their own.
    ch.emit("PLAYBACK_START", post=[*kind, ("Playback-File-Path", raw), *extra])
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = None if endless or duration is None else started + duration
    status = "done"
    while True:
        if not ch.alive:
            response = "PLAYBACK ERROR"
            break
        if ch.break_requested or ch.pending_transfer is not None:
            status = "break"
            break
        if deadline is not None and loop.time() >= deadline:
            break
        if ch.broadcasts:
            # A broadcast is a private event the playback loop parses between frames.
            await play_broadcast(ch, ch.broadcasts.popleft())
            ch.playing = path
            continue
        ch.wakeup.clear()
        if not ch.alive or ch.break_requested or ch.pending_transfer is not None or ch.broadcasts:
            continue
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        try:
            await asyncio.wait_for(ch.wakeup.wait(), timeout=timeout)
        except TimeoutError:
            pass
    ch.break_requested = False
    ch.playing = None
    ms = int((loop.time() - started) * 1000)
    ch.variables.update(
        {
            "playback_last_offset_pos": str(ms * 8),
            "playback_seconds": str(ms // 1000),
            "playback_ms": str(ms),
            "playback_samples": str(ms * 8),
        }
    )
    ch.emit("PLAYBACK_STOP", post=[*kind, ("Playback-File-Path", raw), ("Playback-Status", status), *extra])
    return response


async def play_broadcast(ch: Channel, bc: Broadcast) -> None:
    app_uuid = new_uuid()
    ch.execute_event(bc.app, bc.data, app_uuid)
    if bc.app in ("playback", "endless_playback"):
        response = await play_file(ch, bc.data, endless=bc.app == "endless_playback" or bc.loop)
    else:
        handler = APPS.get(bc.app)
        response = (await handler(ch, bc.data) if handler else None) or "_none_"
    ch.execute_complete_event(bc.app, bc.data, app_uuid, response)
    if bc.command is not None:
        # The quirk of esl-captures/04: the COMMAND event is fired only after the channel
        # parsed it, with a PRIVATE_COMMAND header block appended to the same event.
        block = ch.core.events.new("PRIVATE_COMMAND").headers
        bc.command.extra.append(block + channel_basic(ch))
        ch.core.fire(bc.command)
    if bc.after is not None:
        bc.after()
    if bc.hangup_cause and ch.alive:
        ch.hangup(bc.hangup_cause)


# ---------------------------------------------------------------- simple applications


async def app_answer(ch: Channel, data: str) -> str | None:
    ch.answer()
    return None


async def app_pre_answer(ch: Channel, data: str) -> str | None:
    ch.pre_answer()
    return None


async def app_ring_ready(ch: Channel, data: str) -> str | None:
    ch.mark_ring_ready()
    return None


async def app_set(ch: Channel, data: str) -> str | None:
    name, _, value = data.partition("=")
    if name:
        ch.set_var(name.strip(), value if value else None)
    return None


async def app_export(ch: Channel, data: str) -> str | None:
    name, _, value = data.partition("=")
    name = name.strip().removeprefix("nolocal:")
    if name:
        ch.set_var(name, value if value else None)
        exported = [v for v in ch.var("export_vars").split(",") if v]
        if name not in exported:
            ch.variables["export_vars"] = ",".join([*exported, name])
    return None


async def app_unset(ch: Channel, data: str) -> str | None:
    ch.set_var(data.strip(), None)
    return None


async def app_hangup(ch: Channel, data: str) -> str | None:
    ch.hangup(str2cause(data) if data else "NORMAL_CLEARING")
    return None


async def app_park(ch: Channel, data: str) -> str | None:
    await park_loop(ch)
    return None


async def park_loop(ch: Channel) -> None:
    ch.emit("CHANNEL_PARK")
    await idle(ch)
    ch.emit("CHANNEL_UNPARK")


async def app_internal_park(ch: Channel, data: str) -> str | None:
    """park_after_bridge: switch_ivr_park_session, no CHANNEL_EXECUTE."""
    ch.running_state, ch.state_number = "CS_PARK", STATE_NUMBERS["CS_PARK"]
    ch.emit("CHANNEL_STATE", data="basic")
    await park_loop(ch)
    return None


async def app_echo(ch: Channel, data: str) -> str | None:
    await idle(ch)
    return None


async def app_sleep(ch: Channel, data: str) -> str | None:
    try:
        ms = int(data or "0")
    except ValueError:
        ms = 0
    await sleep_interruptibly(ch, ms / 1000)
    return None


async def app_speak(ch: Channel, data: str) -> str | None:
    """mod_dptools' speak `[[<engine>|]<voice>|]<text>` (tts_engine / tts_voice fill what is left
    out): switch_ivr_speak_text opens no file, so unlike playback of tts:// it fires no
    PLAYBACK_START/STOP; it lasts as long as the speech (SwitchCore's tts_ms_per_char)."""
    parts = separate_string(data, "|", 3) if data else []
    if not parts:
        return None
    engine = parts[0] if len(parts) == 3 else ch.var("tts_engine")
    voice = parts[-2] if len(parts) >= 2 else ch.var("tts_voice")
    response, duration = ch.core.playback_outcome(f"tts://{engine or ''}|{voice or ''}|{parts[-1]}")
    if response == "FILE PLAYED" and duration:
        await sleep_interruptibly(ch, duration)
    return None


async def app_playback(ch: Channel, data: str) -> str | None:
    return await play_file(ch, data)


async def app_endless_playback(ch: Channel, data: str) -> str | None:
    return await play_file(ch, data, endless=True)


async def app_noop(ch: Channel, data: str) -> str | None:
    return None


async def app_socket(ch: Channel, data: str) -> str | None:
    # The sandbox has no outbound-socket server to reach: FreeSWITCH logs and moves on.
    log.info("sim_socket_unreachable", uuid=ch.uuid, target=data)
    return None


async def app_record_session(ch: Channel, data: str) -> str | None:
    ch.start_recording(data.split(" ")[0])
    return None


async def app_transfer(ch: Channel, data: str) -> str | None:
    argv = separate_string(data, " ", 4)
    if not argv:
        return None
    if argv[0] in ("-bleg", "-both"):
        partner = ch.partner
        target = argv[1:]
        if argv[0] == "-bleg" and partner is not None:
            transfer(partner, *target)
            return None
        if argv[0] == "-both" and partner is not None:
            transfer(partner, *target, both=True)
        argv = target
    transfer(ch, *argv)
    return None


def transfer(
    ch: Channel,
    dest: str = "",
    dialplan: str | None = None,
    context: str | None = None,
    *,
    both: bool = False,
) -> None:
    """switch_ivr_session_transfer: new caller profile, reroute, and the bridge partner's fate."""
    dialplan = dialplan or "XML"
    context = context or "default"
    apps = lookup(dest, dialplan, context)
    assert ch.profile is not None
    source = f"{ch.profile.times.created // 1_000_000}:{new_uuid()}:bl_xfer:{dest}/{context}/{dialplan}"
    ch.profile = ch.profile.clone_for_transfer(dest, dialplan, context, source)
    ch.profile.times.transferred = ch.profile.profile_created
    ch.variables["transfer_history"] = source
    ch.variables["transfer_source"] = source
    partner = ch.partner
    if partner is not None and not both:
        ch.variables["hangup_after_bridge"] = "false"
        if not (partner.true_var("park_after_bridge") or partner.var("transfer_after_bridge")):
            partner.hangup("BLIND_TRANSFER")
    redirect(ch, apps, routing=True)


# ---------------------------------------------------------------- bridging


def _bridge(a: Channel, b: Channel) -> None:
    from bridge.sim.channels import now_us

    a.bridged_to, b.bridged_to = b.uuid, a.uuid
    if b.originator is not a:
        # switch_ivr_uuid_bridge relates the legs too: Other-Leg-* headers from now on
        a.originatee, b.originator = b, a
    when = now_us()
    for leg, other in ((a, b), (b, a)):
        assert leg.profile is not None
        leg.profile.times.bridged = when
        leg.variables["last_bridge_to"] = other.uuid
        leg.variables["bridge_to"] = other.uuid
        leg.variables["signal_bond"] = other.uuid
    b.running_state, b.state_number = "CS_EXCHANGE_MEDIA", STATE_NUMBERS["CS_EXCHANGE_MEDIA"]
    b.emit("CHANNEL_STATE", data="basic")
    a.emit("CHANNEL_BRIDGE", pre=[("Bridge-A-Unique-ID", a.uuid), ("Bridge-B-Unique-ID", b.uuid)])


def _unbridge(a: Channel, b: Channel) -> None:
    if a.bridged_to == b.uuid:
        a.bridged_to = None
    if b.bridged_to == a.uuid:
        b.bridged_to = None
    for leg in (a, b):
        leg.variables.pop("bridge_to", None)
        leg.variables.pop("signal_bond", None)
    a.variables["last_bridge_hangup_cause"] = b.hangup_cause or "NORMAL_CLEARING"
    a.emit("CHANNEL_UNBRIDGE", pre=[("Bridge-A-Unique-ID", a.uuid), ("Bridge-B-Unique-ID", b.uuid)])


async def stay_bridged(a: Channel, b: Channel) -> None:
    await idle(a, done=lambda: a.bridged_to != b.uuid or b.bridged_to != a.uuid or not b.alive)


def after_bridge(ch: Channel, *, dialplan_leg: bool) -> None:
    """What a leg does when its partner left: park/transfer_after_bridge, else hang up (or,
    for the leg that ran the bridge application, continue the dialplan unless hangup_after_bridge)."""
    if _leaving(ch):
        return
    if ch.true_var("park_after_bridge"):
        redirect(ch, [("__park", "")], routing=False)
    elif ch.var("transfer_after_bridge"):
        dest, _, rest = ch.var("transfer_after_bridge").partition(":")
        parts = rest.split(":")
        transfer(ch, dest, *(parts[:2] if rest else []))
    elif not dialplan_leg or ch.true_var("hangup_after_bridge"):
        ch.hangup("NORMAL_CLEARING")


async def app_bridge(ch: Channel, data: str) -> str | None:
    variables, endpoint = parse_var_block(data)
    result = await dial(ch.core, endpoint, variables, originator=ch, command=None)
    if _leaving(ch):
        if result.channel is not None and result.channel.alive:
            result.channel.hangup("ORIGINATOR_CANCEL" if not result.ok else "NORMAL_CLEARING")
        return None
    if not result.ok:
        cause = result.cause or "NORMAL_TEMPORARY_FAILURE"
        ch.variables.update(
            {
                "originate_disposition": cause,
                "DIALSTATUS": {"USER_BUSY": "BUSY", "NO_ANSWER": "NOANSWER"}.get(cause, cause),
                "originate_failed_cause": cause,
                "last_bridge_hangup_cause": cause,
            }
        )
        if not ch.true_var("continue_on_fail"):
            ch.hangup(cause)
        return None
    b = result.channel
    assert b is not None
    ch.variables["originate_disposition"] = "SUCCESS"
    ch.variables["DIALSTATUS"] = "SUCCESS"
    if not ch.answered:
        ch.answer()
    _bridge(ch, b)
    start_flow(b, [("__bridged", ch.uuid)], routing=False)
    await stay_bridged(ch, b)
    _unbridge(ch, b)
    if ch.alive and ch.pending_transfer is None:
        after_bridge(ch, dialplan_leg=True)
    return None


def _left_bridge(leg: Channel, owner: Channel) -> None:
    """A B-side leg transferred out of its bridge lets go, so the owner fires CHANNEL_UNBRIDGE."""
    if leg.bridged_to == owner.uuid and leg.pending_transfer is not None:
        leg.bridged_to = None
        owner.interrupt()


async def app_internal_bridged(b: Channel, a_uuid: str) -> str | None:
    """The B-leg of a bridge: it hangs up when the A-leg goes, unless told otherwise."""
    a = b.core.channels.get(a_uuid)
    if a is not None:
        await idle(b, done=lambda: b.bridged_to != a_uuid or not a.alive)
        _left_bridge(b, a)
    if b.alive and b.pending_transfer is None:
        if a is None or not a.alive:
            b.hangup("NORMAL_CLEARING")
        else:
            after_bridge(b, dialplan_leg=False)
    return None


async def app_internal_uuid_bridge(ch: Channel, other_uuid: str) -> str | None:
    """uuid_bridge, A side: bridge to the other leg once it has left its application."""
    other = ch.core.live(other_uuid)
    if other is None or not other.alive:
        after_bridge(ch, dialplan_leg=False)
        return None
    _bridge(ch, other)
    await stay_bridged(ch, other)
    _unbridge(ch, other)
    if ch.alive and ch.pending_transfer is None:
        after_bridge(ch, dialplan_leg=False)
    return None


async def app_internal_uuid_bridged(ch: Channel, other_uuid: str) -> str | None:
    """uuid_bridge, B side: wait for the A side to bridge, then until either leaves."""
    await idle(ch, done=lambda: ch.bridged_to == other_uuid)
    if ch.bridged_to == other_uuid:
        other = ch.core.channels.get(other_uuid)
        await idle(ch, done=lambda: ch.bridged_to != other_uuid or other is None or not other.alive)
        if other is not None:
            _left_bridge(ch, other)
    if ch.alive and ch.pending_transfer is None:
        after_bridge(ch, dialplan_leg=False)
    return None


# ---------------------------------------------------------------- eavesdrop / three_way


EAVESDROP_MODES = {"0": "listen", "1": "whisper_partner", "2": "whisper_target", "3": "three_way"}


async def app_eavesdrop(ch: Channel, data: str, *, mode: str = "listen") -> str | None:
    target = ch.core.live(data.strip())
    if target is None or target is ch or not target.alive:
        log.info("sim_eavesdrop_no_target", uuid=ch.uuid, target=data)
        return None
    if ch.true_var("eavesdrop_whisper_aleg"):
        mode = "whisper_partner"
    elif ch.true_var("eavesdrop_whisper_bleg"):
        mode = "whisper_target"
    ch.set_codec(write=False, function="switch_core_session_set_read_codec")
    key = f"eavesdrop:{ch.uuid}"
    target.add_bug(key, "eavesdrop", target.uuid)
    # The display update FreeSWITCH sends the spy: who it is listening to.
    tp = target.profile
    ch.emit(
        "CALL_UPDATE",
        pre=[
            ("Direction", "SEND"),
            ("Sent-Callee-ID-Name", (tp.caller_id_name or "") if tp else ""),
            ("Sent-Callee-ID-Number", (tp.caller_id_number or "") if tp else ""),
        ],
    )
    ch.eavesdrop = {"target": target.uuid, "mode": mode}
    dtmf_enabled = ch.var("eavesdrop_enable_dtmf", "true").lower() not in ("false", "no", "0")
    ended_by_star = False

    def done() -> bool:
        nonlocal ended_by_star
        while ch.dtmf and dtmf_enabled:
            digit = ch.dtmf.popleft()
            if digit == "*":
                ended_by_star = True
            elif digit in EAVESDROP_MODES and ch.eavesdrop is not None:
                ch.eavesdrop["mode"] = EAVESDROP_MODES[digit]
        return ended_by_star or not target.alive

    await idle(ch, done=done)
    ch.eavesdrop = None
    if target.alive or target.media_bugs.get(key):
        target.remove_bug(key)
    return None


async def app_three_way(ch: Channel, data: str) -> str | None:
    return await app_eavesdrop(ch, data, mode="three_way")


async def app_conference(ch: Channel, data: str) -> str | None:
    await ch.core.conferences.run_member(ch, data)
    return None


async def app_callcenter(ch: Channel, data: str) -> str | None:
    await ch.core.callcenter.run_member(ch, data)
    return None


async def app_no_route(ch: Channel, data: str) -> str | None:
    ch.hangup("NO_ROUTE_DESTINATION")
    return None


APPS: dict[str, AppHandler] = {
    "answer": app_answer,
    "pre_answer": app_pre_answer,
    "ring_ready": app_ring_ready,
    "set": app_set,
    "export": app_export,
    "unset": app_unset,
    "hangup": app_hangup,
    "park": app_park,
    "echo": app_echo,
    "sleep": app_sleep,
    "playback": app_playback,
    "speak": app_speak,
    "endless_playback": app_endless_playback,
    "bridge": app_bridge,
    "transfer": app_transfer,
    "conference": app_conference,
    "callcenter": app_callcenter,
    "eavesdrop": app_eavesdrop,
    "three_way": app_three_way,
    "socket": app_socket,
    "record_session": app_record_session,
    "log": app_noop,
    "info": app_noop,
    "send_dtmf": app_noop,
    "sched_hangup": app_noop,
    "__park": app_internal_park,
    "__bridged": app_internal_bridged,
    "__uuid_bridge": app_internal_uuid_bridge,
    "__uuid_bridged": app_internal_uuid_bridged,
    "__no_route": app_no_route,
}
