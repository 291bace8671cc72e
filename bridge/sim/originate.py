"""Outbound legs: originate, the bridge application and conference dial all create them here.

The far end is simulated: by default it answers after `answer_delay_s` (ringing first when
that delay is above zero, no ringing when it is zero, like the FreeSWITCH far end of the
captures); `set_originate_outcome` makes a dial-string prefix busy, unanswered, etc.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from bridge.sim.channels import STATE_NUMBERS, CallerProfile, Channel, new_uuid, now_us, str2cause

if TYPE_CHECKING:
    from bridge.sim.core import SwitchCore

log = structlog.get_logger(__name__)

DEFAULT_TIMEOUT_S = 60


@dataclass(slots=True)
class DialResult:
    channel: Channel | None
    cause: str | None  # None: answered

    @property
    def ok(self) -> bool:
        return self.cause is None


def channel_name_for(endpoint: str) -> tuple[str, str]:
    """(channel name, destination number) for a dial string, the way the endpoint modules name legs."""
    parts = endpoint.split("/")
    if parts[0] == "sofia" and len(parts) >= 4 and parts[1] == "gateway":
        # a gateway leg is named after the SIP profile the gateway lives on ("external" in the lab)
        dest = "/".join(parts[3:])
        return f"sofia/external/{dest}", dest.split("@")[0]
    if parts[0] == "sofia" and len(parts) >= 3:
        dest = "/".join(parts[2:])
        return endpoint, dest.removeprefix("sip:").split("@")[0]
    if parts[0] in ("user", "loopback") and len(parts) >= 2:
        dest = parts[1].split("@")[0]
        return f"{parts[0]}/{parts[1]}" + ("-a" if parts[0] == "loopback" else ""), dest
    return endpoint, parts[-1].split("@")[0] if parts else endpoint


def sanitize_number(number: str) -> str:
    """switch_sanitize_number (switch_utils.h:736): a dial string's user part, what
    switch_ivr_originate makes a leg's callee_id_number ("bridge_ai_leg/lab" -> "lab")."""
    if not any(c in number for c in "/:@"):
        return number
    number = number.split("@", 1)[0]
    for warp in "/:":
        number = number.rpartition(warp)[2]
    return number


def far_end_identifies(endpoint: str) -> bool:
    """Whether the far end's answer names it (sofia_update_callee_id, sofia.c:1207: its
    P-Asserted-Identity or Remote-Party-ID): a phone does (capture 06: the far end answered as
    "5000" <5000>); a carrier through a gateway gives no display name (the lab's real gateway far
    end: the leg kept "Outbound Call"); a loopback leg has no SIP at all."""
    parts = endpoint.split("/")
    return parts[0] == "user" or (parts[0] == "sofia" and len(parts) > 1 and parts[1] != "gateway")


def _error_endpoint(endpoint: str) -> str | None:
    m = re.match(r"^error/(\w+)", endpoint)
    return str2cause(m.group(1)) if m else None


async def dial(
    core: SwitchCore,
    endpoint: str,
    variables: dict[str, str],
    *,
    originator: Channel | None = None,
    cid_name: str | None = None,
    cid_num: str | None = None,
    timeout_s: int | None = None,
    command: str | None = None,
    speaking: bool = False,
) -> DialResult:
    """Create an outbound leg and run it to answer or failure (the far end decides)."""
    uuid = variables.get("origination_uuid") or new_uuid()
    if core.live(uuid) is not None:
        return DialResult(None, "CHAN_NOT_IMPLEMENTED")
    err = _error_endpoint(endpoint)
    if err is not None:
        return DialResult(None, err)
    name, dest = channel_name_for(endpoint)
    cid_name = variables.get("origination_caller_id_name") or cid_name
    cid_num = variables.get("origination_caller_id_number") or cid_num or "0000000000"
    if originator is not None and originator.profile is not None:
        cid_name = variables.get("origination_caller_id_name") or originator.profile.caller_id_name
        cid_num = variables.get("origination_caller_id_number") or originator.profile.caller_id_number
    ch = Channel(core, uuid=uuid, name=name, direction="outbound", speaking=speaking)
    if command:
        ch.commands.append(command)
    created = now_us()
    ch.profile = CallerProfile(
        direction="outbound",
        uuid=uuid,
        channel_name=name,
        caller_id_name=cid_name,
        caller_id_number=cid_num,
        orig_caller_id_name=cid_name,
        orig_caller_id_number=cid_num,
        # switch_ivr_originate.c:2971: every leg's callee starts as "Outbound Call" <its number>
        callee_id_name="Outbound Call",
        callee_id_number=sanitize_number(endpoint.partition("/")[2]),
        ani=cid_num,
        destination_number=dest,
        dialplan=None,
        source="src/switch_ivr_originate.c",
        profile_created=created,
    )
    ch.profile.times.created = created
    if originator is not None:
        ch.originator = originator
        originator.originatee = ch
    ch.variables.update(
        {
            "direction": "outbound",
            "is_outbound": "true",
            "uuid": uuid,
            "call_uuid": uuid,
            "session_id": str(core.sessions_since_startup + 1),
            "channel_name": name,
            **variables,
            "originate_endpoint": endpoint.split("/")[0],
        }
    )
    core.add_channel(ch)
    timeout = timeout_s or _int(variables.get("originate_timeout")) or _int(variables.get("leg_timeout"))
    timeout = timeout or DEFAULT_TIMEOUT_S

    ch.running_state, ch.state_number = "CS_NONE", STATE_NUMBERS["CS_INIT"]
    ch.emit("CHANNEL_OUTGOING", data="basic")
    ch.set_running_state("CS_INIT")
    ch.state_number = STATE_NUMBERS["CS_ROUTING"]
    ch.emit("CHANNEL_CREATE")
    ch.emit("CHANNEL_ORIGINATE")
    ch.set_running_state("CS_ROUTING")
    ch.set_running_state("CS_CONSUME_MEDIA")

    if endpoint.startswith("loopback/"):
        # mod_loopback: the far end is not a phone but the -b leg routing through the dialplan,
        # so the originate answers when that leg answers (a scenario knob has no say in it).
        cause = await _loopback_far_end(core, ch, endpoint, variables, float(timeout))
        delay = 0.0
    else:
        cause, delay = core.originate_outcome(endpoint)
    log.debug("sim_dial", uuid=uuid, endpoint=endpoint, cause=cause, delay_s=delay, timeout_s=timeout)
    # The far end's first reply (180 or 200) tells us its address.
    if delay > 0:
        ch.profile.network_addr = "127.0.0.1"
        ch.mark_ring_ready()
        waited = await _wait(ch, originator, min(delay, float(timeout)))
        if waited is not None:
            cause = waited
        elif cause is None and delay > timeout:
            cause = "NO_ANSWER"
    if cause is None and not ch.alive:
        cause = ch.hangup_cause or "NORMAL_CLEARING"
    if cause is not None:
        ch.variables["originate_disposition"] = cause
        ch.variables["sip_hangup_disposition"] = (
            "recv_refuse" if cause != "ORIGINATOR_CANCEL" else "send_cancel"
        )
        ch.hangup(cause)
        await ch.destroyed.wait()
        return DialResult(ch, cause)
    ch.profile.network_addr = "127.0.0.1"
    if far_end_identifies(endpoint):
        ch.profile.callee_id_name = ch.profile.callee_id_number
    ch.answer()
    ch.flip_cid()
    return DialResult(ch, None)


def parse_loopback(endpoint: str) -> tuple[str, str, str]:
    """`loopback/<exten>[/<context>[/<dialplan>]]` -> (exten, context, dialplan), mod_loopback's defaults."""
    parts = endpoint.split("/")
    exten = parts[1] if len(parts) > 1 else ""
    context = parts[2] if len(parts) > 2 and parts[2] else "default"
    dialplan = parts[3] if len(parts) > 3 and parts[3] else "XML"
    return exten, context, dialplan


async def _loopback_far_end(
    core: SwitchCore, a: Channel, endpoint: str, variables: dict[str, str], timeout: float
) -> str | None:
    """Create loopback-b and run it through the dialplan; None once it answers, else a cause.

    As mod_loopback does: the -b leg is an inbound channel named `loopback/<exten>-b` that gets
    every variable of the originate's {} block (its `__loopback_vars__`, origination_uuid
    included, though its own uuid is new), both legs point at each other through
    `other_loopback_leg_uuid`, and a hangup of either leg hangs up the other (SwitchCore)."""
    from bridge.sim.apps import start_flow
    from bridge.sim.dialplan import lookup

    exten, context, dialplan = parse_loopback(endpoint)
    b_uuid = new_uuid()
    name = f"loopback/{exten}-b"
    b = Channel(core, uuid=b_uuid, name=name, direction="inbound")
    assert a.profile is not None
    created = now_us()
    b.profile = CallerProfile(
        direction="inbound",
        uuid=b_uuid,
        channel_name=name,
        caller_id_name=a.profile.caller_id_name,
        caller_id_number=a.profile.caller_id_number,
        orig_caller_id_name=a.profile.caller_id_name,
        orig_caller_id_number=a.profile.caller_id_number,
        destination_number=exten,
        context=context,
        dialplan=dialplan,
        ani=a.profile.caller_id_number,
        source="mod_loopback",
        profile_created=created,
    )
    b.profile.times.created = created
    b.variables.update(
        {
            "direction": "inbound",
            "uuid": b_uuid,
            "call_uuid": b_uuid,
            "session_id": str(core.sessions_since_startup + 1),
            "channel_name": name,
            **variables,
            "other_loopback_leg_uuid": a.uuid,
        }
    )
    a.variables["other_loopback_leg_uuid"] = b_uuid
    core.add_channel(b)
    b.set_running_state("CS_INIT")
    b.state_number = STATE_NUMBERS["CS_ROUTING"]
    b.emit("CHANNEL_CREATE")
    start_flow(b, lookup(exten, dialplan, context), routing=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not b.answered:
        if not b.alive:
            return b.hangup_cause or "NORMAL_CLEARING"
        if not a.alive:
            return a.hangup_cause or "NORMAL_CLEARING"
        if loop.time() >= deadline:
            b.hangup("NO_ANSWER")
            return "NO_ANSWER"
        b.wakeup.clear()
        a.wakeup.clear()
        await asyncio.sleep(0.005)
    return None


async def _wait(ch: Channel, originator: Channel | None, seconds: float) -> str | None:
    """Ring for `seconds`; a cause if the leg or the originator went away meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        if not ch.alive:
            return ch.hangup_cause or "NORMAL_CLEARING"
        if originator is not None and not originator.alive:
            return "ORIGINATOR_CANCEL"
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        ch.wakeup.clear()
        if originator is not None:
            originator.wakeup.clear()
            waiters = [
                asyncio.ensure_future(ch.wakeup.wait()),
                asyncio.ensure_future(originator.wakeup.wait()),
            ]
        else:
            waiters = [asyncio.ensure_future(ch.wakeup.wait())]
        try:
            await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if originator is not None and originator.alive and originator.pending_transfer is not None:
            return "ORIGINATOR_CANCEL"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
