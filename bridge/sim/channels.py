"""The channel model: states, call states, flags, variables and the events their changes fire.

Every transition here fires exactly the events FreeSWITCH 1.10.12 fires for it, in the same
order and with the same state headers (esl-captures 01..10). Two quirks worth knowing:
`Channel-State` is the *running* state while `Channel-State-Number` is the state the channel
is heading to (CHANNEL_DESTROY says CS_REPORTING/12), and a hangup is split in two: the API
fires CHANNEL_HANGUP at once, the channel's own thread fires the rest afterwards.
"""

from __future__ import annotations

import asyncio
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from bridge.sim.events import Headers, SimEvent, channel_basic, channel_data
from bridge.sim.recording import Recording, pre_buffer_frames

if TYPE_CHECKING:
    from bridge.sim.audio_fork import AudioFork
    from bridge.sim.core import SwitchCore

log = structlog.get_logger(__name__)

STATE_NUMBERS = {
    "CS_NEW": 0,
    "CS_INIT": 1,
    "CS_ROUTING": 2,
    "CS_SOFT_EXECUTE": 3,
    "CS_EXECUTE": 4,
    "CS_EXCHANGE_MEDIA": 5,
    "CS_PARK": 6,
    "CS_CONSUME_MEDIA": 7,
    "CS_HIBERNATE": 8,
    "CS_RESET": 9,
    "CS_HANGUP": 10,
    "CS_REPORTING": 11,
    "CS_DESTROY": 12,
    "CS_NONE": 13,
}
CALL_STATE_NUMBERS = {
    "DOWN": 0,
    "DIALING": 1,
    "RINGING": 2,
    "EARLY": 3,
    "ACTIVE": 4,
    "HELD": 5,
    "RING_WAIT": 6,
    "HANGUP": 7,
    "UNHELD": 8,
}

# switch_channel.c CAUSE_CHART (name -> Q.850 code); an unknown name becomes NORMAL_CLEARING.
CAUSES: dict[str, int] = {
    "UNSPECIFIED": 0,
    "UNALLOCATED_NUMBER": 1,
    "NO_ROUTE_TRANSIT_NET": 2,
    "NO_ROUTE_DESTINATION": 3,
    "CHANNEL_UNACCEPTABLE": 6,
    "CALL_AWARDED_DELIVERED": 7,
    "NORMAL_CLEARING": 16,
    "USER_BUSY": 17,
    "NO_USER_RESPONSE": 18,
    "NO_ANSWER": 19,
    "SUBSCRIBER_ABSENT": 20,
    "CALL_REJECTED": 21,
    "NUMBER_CHANGED": 22,
    "REDIRECTION_TO_NEW_DESTINATION": 23,
    "EXCHANGE_ROUTING_ERROR": 25,
    "DESTINATION_OUT_OF_ORDER": 27,
    "INVALID_NUMBER_FORMAT": 28,
    "FACILITY_REJECTED": 29,
    "RESPONSE_TO_STATUS_ENQUIRY": 30,
    "NORMAL_UNSPECIFIED": 31,
    "NORMAL_CIRCUIT_CONGESTION": 34,
    "NETWORK_OUT_OF_ORDER": 38,
    "NORMAL_TEMPORARY_FAILURE": 41,
    "SWITCH_CONGESTION": 42,
    "ACCESS_INFO_DISCARDED": 43,
    "REQUESTED_CHAN_UNAVAIL": 44,
    "PRE_EMPTED": 45,
    "FACILITY_NOT_SUBSCRIBED": 50,
    "OUTGOING_CALL_BARRED": 52,
    "INCOMING_CALL_BARRED": 54,
    "BEARERCAPABILITY_NOTAUTH": 57,
    "BEARERCAPABILITY_NOTAVAIL": 58,
    "SERVICE_UNAVAILABLE": 63,
    "BEARERCAPABILITY_NOTIMPL": 65,
    "CHAN_NOT_IMPLEMENTED": 66,
    "FACILITY_NOT_IMPLEMENTED": 69,
    "SERVICE_NOT_IMPLEMENTED": 79,
    "INVALID_CALL_REFERENCE": 81,
    "INCOMPATIBLE_DESTINATION": 88,
    "INVALID_MSG_UNSPECIFIED": 95,
    "MANDATORY_IE_MISSING": 96,
    "MESSAGE_TYPE_NONEXIST": 97,
    "WRONG_MESSAGE": 98,
    "IE_NONEXIST": 99,
    "INVALID_IE_CONTENTS": 100,
    "WRONG_CALL_STATE": 101,
    "RECOVERY_ON_TIMER_EXPIRE": 102,
    "MANDATORY_IE_LENGTH_ERROR": 103,
    "PROTOCOL_ERROR": 111,
    "INTERWORKING": 127,
    "ORIGINATOR_CANCEL": 487,
    "CRASH": 700,
    "SYSTEM_SHUTDOWN": 701,
    "LOSE_RACE": 702,
    "MANAGER_REQUEST": 703,
    "BLIND_TRANSFER": 800,
    "ATTENDED_TRANSFER": 801,
    "ALLOTTED_TIMEOUT": 802,
    "USER_CHALLENGE": 803,
    "MEDIA_TIMEOUT": 804,
    "PICKED_OFF": 805,
    "USER_NOT_REGISTERED": 806,
    "PROGRESS_TIMEOUT": 807,
    "INVALID_GATEWAY": 808,
    "GATEWAY_DOWN": 809,
    "INVALID_URL": 810,
    "INVALID_PROFILE": 811,
    "NO_PICKUP": 812,
    "SRTP_READ_ERROR": 813,
}
_CODE_TO_CAUSE = {code: name for name, code in CAUSES.items()}


def str2cause(text: str | None) -> str:
    """switch_channel_str2cause, with the reference's documented fallback to NORMAL_CLEARING."""
    if not text:
        return "NORMAL_CLEARING"
    text = text.strip()
    if text[:1].isdigit():
        digits = "".join(ch for ch in text if ch.isdigit())
        return _CODE_TO_CAUSE.get(int(digits or 0), "NORMAL_CLEARING")
    name = text.upper()
    return name if name in CAUSES else "NORMAL_CLEARING"


def now_us() -> int:
    return int(time.time() * 1_000_000)


@dataclass(slots=True)
class Times:
    created: int = 0
    answered: int = 0
    progress: int = 0
    progress_media: int = 0
    hungup: int = 0
    transferred: int = 0
    bridged: int = 0
    last_hold: int = 0
    hold_accum: int = 0


@dataclass(slots=True)
class CallerProfile:
    """switch_caller_profile_t, the source of every Caller-* / Other-Leg-* header."""

    direction: str
    uuid: str
    channel_name: str
    caller_id_name: str | None = None
    caller_id_number: str | None = None
    destination_number: str | None = None
    context: str = "default"
    dialplan: str | None = "XML"
    username: str | None = None
    orig_caller_id_name: str | None = None
    orig_caller_id_number: str | None = None
    callee_id_name: str | None = None
    callee_id_number: str | None = None
    network_addr: str | None = None
    ani: str | None = None
    source: str = "mod_sofia"
    transfer_source: str | None = None
    rdnis: str | None = None
    index: int = 1
    profile_created: int = 0
    times: Times = field(default_factory=Times)

    @property
    def logical_direction(self) -> str:
        return self.direction

    def clone_for_transfer(self, destination: str, dialplan: str, context: str, source: str) -> CallerProfile:
        return CallerProfile(
            direction=self.direction,
            uuid=self.uuid,
            channel_name=self.channel_name,
            caller_id_name=self.caller_id_name,
            caller_id_number=self.caller_id_number,
            destination_number=destination,
            context=context,
            dialplan=dialplan,
            username=self.username,
            orig_caller_id_name=self.orig_caller_id_name,
            orig_caller_id_number=self.orig_caller_id_number,
            callee_id_name=self.callee_id_name,
            callee_id_number=self.callee_id_number,
            network_addr=self.network_addr,
            ani=self.ani,
            source=self.source,
            transfer_source=source,
            rdnis=self.destination_number,
            index=self.index + 1,
            profile_created=now_us(),
            times=self.times,
        )


@dataclass(slots=True)
class MediaBug:
    function: str
    target: str


@dataclass(slots=True)
class Broadcast:
    """A queued uuid_broadcast: the channel plays it at its next poll."""

    app: str
    data: str
    command: SimEvent | None = None
    hangup_cause: str | None = None
    loop: bool = False
    after: Callable[[], None] | None = None  # e.g. stop the partner's hold music


class Channel:
    def __init__(
        self,
        core: SwitchCore,
        *,
        uuid: str,
        name: str,
        direction: str,
        variables: dict[str, str] | None = None,
        speaking: bool = False,
    ) -> None:
        self.core = core
        self.uuid = uuid
        self.name = name
        self.direction = direction
        self.running_state = "CS_NEW"
        self.state_number = 0
        self.call_state = "DOWN"
        self.answered = False
        self.early = False
        self.ring_ready = False
        self.hangup_cause: str | None = None
        self.hit_dialplan = direction == "inbound"
        self.call_uuid = uuid
        self.codec_ready = False
        self.codec = "PCMU"
        self.rate = 8000
        self.profile: CallerProfile | None = None
        self.originator: Channel | None = None  # the leg that dialled us (we are its B-leg)
        self.originatee: Channel | None = None  # the leg we dialled
        self.variables: dict[str, str] = dict(variables or {})
        self.held = False
        self.hold_started = 0
        self.mute = {"read": False, "write": False}
        self.levels = {"read": 0, "write": 0}
        self.media_bugs: dict[str, MediaBug] = {}
        self.recordings: dict[str, Recording] = {}
        self.bridged_to: str | None = None
        self.conference: str | None = None
        self.member_id: int | None = None
        self.forks: dict[str, AudioFork] = {}
        self.commands: list[str] = []
        self.speaking = speaking
        self.created = time.time()
        self.ended_at: float | None = None
        self.current_app: str | None = None
        self.current_app_data = ""
        self.eavesdrop: dict[str, Any] | None = None
        self.callcenter: dict[str, Any] | None = None
        self.playing: str | None = None
        self.displace: dict[str, str] = {}
        # Signals for the application the channel is running (see apps.py).
        self.wakeup = asyncio.Event()
        self.pending_transfer: list[tuple[str, str]] | None = None
        self.pending_routing = True
        self.break_requested = False
        self.broadcasts: deque[Broadcast] = deque()
        self.dtmf: deque[str] = deque()
        self.flow: asyncio.Task[None] | None = None
        self.destroyed = asyncio.Event()
        self.torn_down = False

    # ------------------------------------------------------------ basics

    def __repr__(self) -> str:
        return f"<Channel {self.uuid} {self.name} {self.running_state} {self.call_state}>"

    @property
    def answer_state(self) -> str:
        if self.hangup_cause:
            return "hangup"
        if self.answered:
            return "answered"
        if self.early:
            return "early"
        return "ringing"

    @property
    def alive(self) -> bool:
        return self.state_number < STATE_NUMBERS["CS_HANGUP"] and not self.hangup_cause

    @property
    def partner(self) -> Channel | None:
        return self.core.live(self.bridged_to) if self.bridged_to else None

    def other_leg_profile(self) -> tuple[str, CallerProfile] | None:
        if self.originator is not None and self.originator.profile is not None:
            return "originator", self.originator.profile
        if self.originatee is not None and self.originatee.profile is not None:
            return "originatee", self.originatee.profile
        return None

    def set_var(self, name: str, value: str | None) -> None:
        if value is None:
            self.variables.pop(name, None)
        else:
            self.variables[name] = value

    def var(self, name: str, default: str = "") -> str:
        return self.variables.get(name, default)

    def true_var(self, name: str) -> bool:
        return self.variables.get(name, "").lower() in (
            "true",
            "yes",
            "on",
            "1",
            "enabled",
            "active",
            "allow",
        )

    def interrupt(self) -> None:
        self.wakeup.set()

    # ------------------------------------------------------------ events

    def event(self, name: str, *, pre: Headers = (), post: Headers = (), data: str = "full") -> SimEvent:
        """Build a channel event. `data` is "full" (basic + variables), "basic" or "none"."""
        ev = self.core.events.new(name)
        ev.extend(list(pre))
        if data == "full":
            ev.extend(channel_data(self))
        elif data == "basic":
            ev.extend(channel_basic(self))
        ev.extend(list(post))
        return ev

    def emit(self, name: str, *, pre: Headers = (), post: Headers = (), data: str = "full") -> SimEvent:
        ev = self.event(name, pre=pre, post=post, data=data)
        self.core.fire(ev)
        return ev

    def custom(
        self, subclass: str, *, post: Headers = (), body: str | None = None, data: str = "full"
    ) -> SimEvent:
        ev = self.core.events.new("CUSTOM", subclass=subclass)
        if data == "full":
            ev.extend(channel_data(self))
        elif data == "basic":
            ev.extend(channel_basic(self))
        ev.extend(list(post))
        ev.body = body
        self.core.fire(ev)
        return ev

    # ------------------------------------------------------------ state machine

    def set_running_state(self, state: str, number: int | None = None) -> None:
        self.running_state = state
        self.state_number = STATE_NUMBERS[state] if number is None else number
        self.emit("CHANNEL_STATE", data="basic")

    def set_call_state(self, state: str) -> None:
        if state == self.call_state:
            return
        original = self.call_state
        self.call_state = state
        self.emit(
            "CHANNEL_CALLSTATE",
            pre=[
                ("Original-Channel-Call-State", original),
                ("Channel-Call-State-Number", str(CALL_STATE_NUMBERS[state])),
            ],
            data="basic",
        )

    def enter_routing(self) -> None:
        self.state_number = STATE_NUMBERS["CS_ROUTING"]
        self.running_state = "CS_ROUTING"
        if self.direction == "inbound":
            self.set_call_state("RINGING")
        self.emit("CHANNEL_STATE", data="basic")

    def enter_execute(self) -> None:
        self.state_number = STATE_NUMBERS["CS_EXECUTE"]
        self.running_state = "CS_EXECUTE"
        if self.answered:
            self.set_call_state("ACTIVE")
        self.emit("CHANNEL_STATE", data="basic")

    def set_codec(
        self, *, write: bool = True, function: str = "switch_core_session_set_real_read_codec"
    ) -> None:
        self.codec_ready = True
        self.variables.setdefault("read_codec", self.codec)
        self.variables.setdefault("read_rate", str(self.rate))
        ev = self.core.events.new("CODEC", calling=("switch_core_codec.c", function, 168))
        ev.extend(channel_basic(self))
        ev.extend(
            [
                ("channel-read-codec-name", self.codec),
                ("channel-read-codec-rate", str(self.rate)),
                ("channel-read-codec-bit-rate", "64000"),
            ]
        )
        self.core.fire(ev)
        if write:
            self.variables.setdefault("write_codec", self.codec)
            self.variables.setdefault("write_rate", str(self.rate))
            ev = self.core.events.new(
                "CODEC", calling=("switch_core_codec.c", "switch_core_session_set_write_codec", 0)
            )
            ev.extend(channel_basic(self))
            ev.extend(
                [
                    ("Channel-Write-Codec-Name", self.codec),
                    ("Channel-Write-Codec-Rate", str(self.rate)),
                    ("Channel-Write-codec-bit-rate", "64000"),
                ]
            )
            self.core.fire(ev)

    def mark_ring_ready(self) -> None:
        if self.ring_ready or self.answered:
            return
        self.ring_ready = True
        assert self.profile is not None
        self.profile.times.progress = now_us()
        self.emit("CHANNEL_PROGRESS")
        self.set_call_state("RINGING")

    def pre_answer(self) -> bool:
        """switch_channel_pre_answer: sofia negotiates media first (two CODEC events)."""
        if not self.alive:
            return False
        if self.early or self.answered:
            return True
        if not self.codec_ready:
            self.set_codec()
        self.early = True
        assert self.profile is not None
        self.profile.times.progress_media = now_us()
        self.variables.setdefault("endpoint_disposition", "EARLY MEDIA")
        self.emit("CHANNEL_PROGRESS_MEDIA")
        self.set_call_state("EARLY")
        return True

    def answer(self) -> bool:
        if not self.alive:
            return False
        if self.answered:
            return True
        if self.direction == "inbound":
            self.pre_answer()
        elif not self.codec_ready:
            self.set_codec()
        self.answered = True
        assert self.profile is not None
        self.profile.times.answered = now_us()
        self.variables["endpoint_disposition"] = "ANSWER"
        self.emit("CHANNEL_ANSWER")
        self.set_call_state("ACTIVE")
        return True

    def flip_cid(self) -> None:
        """switch_channel_flip_cid (switch_channel.c:3236) on an answered outbound leg: the caller
        id becomes the callee's ("Outbound Call" <number> unless the far end named itself), the
        callee the old caller id."""
        assert self.profile is not None
        p = self.profile
        old_name, old_number = p.caller_id_name, p.caller_id_number
        if p.callee_id_name:
            self.variables["pre_transfer_caller_id_name"] = old_name or ""
            p.caller_id_name, p.callee_id_name = p.callee_id_name, old_name
        if p.callee_id_number:
            self.variables["pre_transfer_caller_id_number"] = old_number or ""
            p.caller_id_number, p.callee_id_number = p.callee_id_number, old_number
        self.hit_dialplan = True
        self.variables["channel_cid_flipped"] = "yes"
        self.emit("CALL_UPDATE", pre=[("Direction", "RECV")])

    # ------------------------------------------------------------ applications (events only)

    def execute_event(self, app: str, data: str, app_uuid: str) -> None:
        self.current_app, self.current_app_data = app, data
        self.variables["current_application"] = app
        if data:
            self.variables["current_application_data"] = data
        else:
            self.variables.pop("current_application_data", None)
        post: Headers = [("Application", app)]
        if data:
            post.append(("Application-Data", data))
        post.append(("Application-UUID", app_uuid))
        self.emit("CHANNEL_EXECUTE", post=post)

    def execute_complete_event(self, app: str, data: str, app_uuid: str, response: str = "_none_") -> None:
        self.variables["current_application_response"] = response
        post: Headers = [("Application", app)]
        if data:
            post.append(("Application-Data", data))
        post += [("Application-Response", response), ("Application-UUID", app_uuid)]
        self.emit("CHANNEL_EXECUTE_COMPLETE", post=post)
        self.variables["last_app"] = app
        if data:
            self.variables["last_arg"] = data

    # ------------------------------------------------------------ hold

    def hold(self) -> bool:
        if self.held or not self.alive:
            return False
        self.held = True
        assert self.profile is not None
        self.hold_started = now_us()
        self.profile.times.last_hold = self.hold_started
        self.set_call_state("HELD")
        self.emit("CHANNEL_HOLD")
        return True

    def unhold(self) -> bool:
        if not self.held or not self.alive:
            return False
        self.held = False
        assert self.profile is not None
        self.profile.times.hold_accum += now_us() - self.hold_started
        self.set_call_state("UNHELD")
        self.emit("CHANNEL_UNHOLD")
        return True

    # ------------------------------------------------------------ media bugs

    def add_bug(self, key: str, function: str, target: str) -> None:
        self.media_bugs[key] = MediaBug(function, target)
        self.emit("MEDIA_BUG_START", pre=[("Media-Bug-Function", function), ("Media-Bug-Target", target)])

    def remove_bug(self, key: str) -> bool:
        bug = self.media_bugs.pop(key, None)
        if bug is None:
            return False
        self.emit(
            "MEDIA_BUG_STOP", pre=[("Media-Bug-Function", bug.function), ("Media-Bug-Target", bug.target)]
        )
        return True

    def start_recording(self, path: str) -> bool:
        if path in self.recordings or not self.alive:
            return False
        # At the channel's rate unless record_sample_rate says otherwise; stereo on RECORD_STEREO.
        rate = self.variables.get("record_sample_rate", "")
        self.recordings[path] = Recording(
            path,
            time.monotonic(),
            rate=int(rate) if rate.isdigit() and int(rate) in (8000, 16000, 32000, 48000) else self.rate,
            stereo=self.variables.get("RECORD_STEREO", "").lower() == "true",
            muted=self.mute["read"],
            pre_buffer_frames=pre_buffer_frames(self.variables.get("RECORD_PRE_BUFFER_FRAMES")),
        )
        self.emit("RECORD_START", post=[("Record-File-Path", path)])
        self.add_bug(f"record:{path}", "session_record", path)
        return True

    def stop_recording(self, path: str) -> bool:
        paths = list(self.recordings) if path == "all" else [path] if path in self.recordings else []
        for p in paths:
            rec = self.recordings.pop(p)
            # The file is complete before RECORD_STOP fires; what it holds (paused time left out)
            # is what record_seconds says, as on the real switch.
            samples = rec.write(time.monotonic())
            ms = samples * 1000 // rec.rate
            self.variables.update(
                {
                    "record_file_size": str(44 + samples * 2 * (2 if rec.stereo else 1)),
                    "record_samples": str(samples),
                    "record_seconds": str(ms // 1000),
                    "record_ms": str(ms),
                    "record_completion_cause": "success-maxtime",
                }
            )
            self.emit(
                "RECORD_STOP", post=[("Record-File-Path", p), ("Record-Completion-Cause", "success-maxtime")]
            )
            self.remove_bug(f"record:{p}")
        return bool(paths)

    # ------------------------------------------------------------ hangup

    def hangup(self, cause: str = "NORMAL_CLEARING") -> bool:
        """switch_channel_hangup: fires CHANNEL_HANGUP now; the channel's thread does the rest."""
        if not self.alive:
            return False
        self.hangup_cause = cause
        self.state_number = STATE_NUMBERS["CS_HANGUP"]
        assert self.profile is not None
        self.profile.times.hungup = now_us()
        self.variables["hangup_cause"] = cause
        self.variables["hangup_cause_q850"] = str(CAUSES.get(cause, 16))
        log.debug("sim_hangup", uuid=self.uuid, cause=cause)
        self.emit("CHANNEL_HANGUP")
        self.interrupt()
        if self.flow is None or self.flow.done():
            self.core.spawn(self.teardown(), name=f"teardown:{self.uuid}")
        return True

    async def teardown(self) -> None:
        """The rest of the hangup, as the channel's state machine runs it."""
        if self.torn_down:
            return
        self.torn_down = True
        self.running_state = "CS_HANGUP"
        self.emit("CHANNEL_STATE", data="basic")
        self.set_call_state("HANGUP")
        await self.core.on_channel_hangup(self)
        for path in list(self.recordings):
            self.stop_recording(path)
        for key in list(self.media_bugs):
            self.remove_bug(key)
        self.running_state = "CS_REPORTING"
        self.state_number = STATE_NUMBERS["CS_REPORTING"]
        self.emit("CHANNEL_STATE", data="basic")
        self._set_cdr_variables()
        self.emit("CHANNEL_HANGUP_COMPLETE", pre=[("Hangup-Cause", self.hangup_cause or "NORMAL_CLEARING")])
        self.state_number = STATE_NUMBERS["CS_DESTROY"]
        self.emit("CHANNEL_DESTROY")
        self.running_state = "CS_DESTROY"
        self.emit("CHANNEL_STATE", data="basic")
        self.ended_at = time.time()
        self.destroyed.set()
        self.core.on_channel_destroyed(self)

    def _set_cdr_variables(self) -> None:
        assert self.profile is not None
        t = self.profile.times
        end = t.hungup or now_us()
        start = t.created

        def stamp(us: int) -> str:
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(us / 1_000_000))

        billusec = end - t.answered if t.answered else 0
        cid = self.profile.caller_id_number or ""
        if self.profile.caller_id_name:
            cid = f'"{self.profile.caller_id_name}" <{cid}>'
        self.variables.update(
            {
                "digits_dialed": "none",
                "start_stamp": stamp(start),
                "profile_start_stamp": stamp(self.profile.profile_created or start),
                **({"answer_stamp": stamp(t.answered)} if t.answered else {}),
                **({"progress_media_stamp": stamp(t.progress_media)} if t.progress_media else {}),
                "end_stamp": stamp(end),
                "start_epoch": str(start // 1_000_000),
                "start_uepoch": str(start),
                "answer_epoch": str(t.answered // 1_000_000),
                "answer_uepoch": str(t.answered),
                "bridge_epoch": str(t.bridged // 1_000_000),
                "bridge_uepoch": str(t.bridged),
                "last_hold_epoch": str(t.last_hold // 1_000_000),
                "last_hold_uepoch": str(t.last_hold),
                "hold_accum_seconds": str(t.hold_accum // 1_000_000),
                "hold_accum_usec": str(t.hold_accum),
                "hold_accum_ms": str(t.hold_accum // 1000),
                "progress_epoch": str(t.progress // 1_000_000),
                "progress_uepoch": str(t.progress),
                "progress_media_epoch": str(t.progress_media // 1_000_000),
                "progress_media_uepoch": str(t.progress_media),
                "end_epoch": str(end // 1_000_000),
                "end_uepoch": str(end),
                "caller_id": cid,
                "duration": str(end // 1_000_000 - start // 1_000_000),
                "billsec": str(end // 1_000_000 - t.answered // 1_000_000) if t.answered else "0",
                "progresssec": str((t.progress - start) // 1_000_000) if t.progress else "0",
                "answersec": str((t.answered - start) // 1_000_000) if t.answered else "0",
                "waitsec": str((t.bridged - start) // 1_000_000) if t.bridged else "0",
                "progress_mediasec": str((t.progress_media - start) // 1_000_000)
                if t.progress_media
                else "0",
                "flow_billsec": str(end // 1_000_000 - start // 1_000_000),
                "mduration": str((end - start) // 1000),
                "billmsec": str(billusec // 1000),
                "progressmsec": str((t.progress - start) // 1000) if t.progress else "0",
                "answermsec": str((t.answered - start) // 1000) if t.answered else "0",
                "waitmsec": str((t.bridged - start) // 1000) if t.bridged else "0",
                "progress_mediamsec": str((t.progress_media - start) // 1000) if t.progress_media else "0",
                "flow_billmsec": str((end - start) // 1000),
                "uduration": str(end - start),
                "billusec": str(billusec),
                "sip_hangup_disposition": self.variables.get("sip_hangup_disposition", "send_bye"),
            }
        )
        if self.variables.get("last_bridge_hangup_cause") is None and self.bridged_to:
            self.variables["last_bridge_hangup_cause"] = self.hangup_cause or "NORMAL_CLEARING"


def new_uuid() -> str:
    return str(uuidlib.uuid4())
