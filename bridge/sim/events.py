"""Events as FreeSWITCH 1.10.12 builds and serializes them (esl-captures 01..11).

An event is an ordered list of header pairs, because FreeSWITCH itself keeps an ordered
list: CHANNEL_HANGUP_COMPLETE carries `Hangup-Cause` twice, conference floor-change repeats
the Conference-* block, and the COMMAND event of uuid_broadcast arrives with a second
PRIVATE_COMMAND block appended (esl-captures/04). The serializers keep those duplicates.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from bridge.esl.protocol import url_encode

if TYPE_CHECKING:
    from bridge.sim.channels import CallerProfile, Channel

Headers = list[tuple[str, str]]

FS_VERSION = "1.10.12-release~64bit"

# Where each event comes from in FreeSWITCH (Event-Calling-*), copied from the captures so a
# client that logs them sees what a real switch would send.
CALLING: dict[str, tuple[str, str, int]] = {
    "API": ("switch_loadable_module.c", "switch_api_execute", 2954),
    "BACKGROUND_JOB": ("mod_event_socket.c", "api_exec", 1572),
    "HEARTBEAT": ("switch_core.c", "send_heartbeat", 95),
    "CHANNEL_STATE": ("switch_channel.c", "switch_channel_perform_set_running_state", 2408),
    "CHANNEL_CALLSTATE": ("switch_channel.c", "switch_channel_perform_set_callstate", 301),
    "CHANNEL_CREATE": ("switch_core_state_machine.c", "switch_core_session_run", 626),
    "CHANNEL_ORIGINATE": ("switch_core_state_machine.c", "switch_core_session_run", 632),
    "CHANNEL_OUTGOING": ("switch_core_session.c", "switch_core_session_outgoing_channel", 768),
    "CHANNEL_PROGRESS": ("switch_channel.c", "switch_channel_perform_mark_ring_ready_value", 3487),
    "CHANNEL_PROGRESS_MEDIA": ("switch_channel.c", "switch_channel_perform_mark_pre_answered", 3560),
    "CHANNEL_ANSWER": ("switch_channel.c", "switch_channel_perform_mark_answered", 3846),
    "CALL_UPDATE": ("switch_channel.c", "switch_channel_flip_cid", 3277),
    "CODEC": ("switch_core_codec.c", "switch_core_session_set_read_codec", 279),
    "CHANNEL_EXECUTE": ("switch_core_session.c", "switch_core_session_exec", 2944),
    "CHANNEL_EXECUTE_COMPLETE": ("switch_core_session.c", "switch_core_session_exec", 2967),
    "CHANNEL_PARK": ("switch_ivr.c", "switch_ivr_park", 1002),
    "CHANNEL_UNPARK": ("switch_ivr.c", "switch_ivr_park", 1213),
    "CHANNEL_HOLD": ("switch_ivr.c", "switch_ivr_hold", 1558),
    "CHANNEL_UNHOLD": ("switch_ivr.c", "switch_ivr_unhold", 1638),
    "CHANNEL_BRIDGE": ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", 1641),
    "CHANNEL_UNBRIDGE": ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", 1798),
    "CHANNEL_HANGUP": ("switch_channel.c", "switch_channel_perform_hangup", 3445),
    "CHANNEL_HANGUP_COMPLETE": ("switch_core_state_machine.c", "switch_core_session_reporting_state", 943),
    "CHANNEL_DESTROY": ("switch_core_session.c", "switch_core_session_perform_destroy", 1584),
    "MEDIA_BUG_START": ("switch_core_media_bug.c", "switch_core_media_bug_add", 1014),
    "MEDIA_BUG_STOP": ("switch_core_media_bug.c", "switch_core_media_bug_destroy", 84),
    "PLAYBACK_START": ("switch_ivr_play_say.c", "switch_ivr_play_file", 1646),
    "PLAYBACK_STOP": ("switch_ivr_play_say.c", "switch_ivr_play_file", 2020),
    "RECORD_START": ("switch_ivr_async.c", "record_callback", 1481),
    "RECORD_STOP": ("switch_ivr_async.c", "send_record_stop_event", 1240),
    "DTMF": ("switch_channel.c", "switch_channel_dequeue_dtmf", 677),
    "COMMAND": ("switch_ivr_async.c", "switch_ivr_broadcast", 5731),
    "PRIVATE_COMMAND": ("switch_ivr.c", "switch_ivr_parse_next_event", 804),
    "conference::maintenance": ("mod_conference.c", "conference_new", 3848),
    "callcenter::info": ("mod_callcenter.c", "cc_queue_member_cb", 2994),
    "mod_audio_fork": ("lws_glue.cpp", "eventCallback", 211),
}

CONFERENCE_CALLING: dict[str, tuple[str, str, int]] = {
    "conference-create": ("mod_conference.c", "conference_new", 3848),
    "conference-destroy": ("mod_conference.c", "conference_thread_run", 850),
    "add-member": ("conference_member.c", "conference_member_add", 962),
    "del-member": ("conference_member.c", "conference_member_del", 1355),
    "floor-change": ("conference_member.c", "conference_member_set_floor_holder", 1158),
    "start-talking": ("conference_loop.c", "conference_loop_input", 1154),
    "stop-talking": ("conference_loop.c", "stop_talking_handler", 783),
    "kick-member": ("conference_api.c", "conference_api_sub_kick", 902),
    "hup-member": ("conference_api.c", "conference_api_sub_hup", 931),
    "bgdial-result": ("mod_conference.c", "conference_outcall_run", 1708),
    "dial-result": ("mod_conference.c", "conference_outcall", 1647),
    "play-file": ("conference_file.c", "conference_file_play", 268),
    "play-file-done": ("conference_file.c", "conference_file_close", 52),
    "play-file-member": ("conference_member.c", "conference_member_play_file", 1452),
}


@dataclass(slots=True)
class SimEvent:
    """One event on its way to the listeners."""

    name: str
    headers: Headers
    body: str | None = None
    subclass: str | None = None
    # Further header blocks FreeSWITCH wrote into the same frame (the COMMAND quirk).
    extra: list[Headers] = field(default_factory=list)

    def get(self, name: str, default: str = "") -> str:
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.headers)

    def add(self, name: str, value: str | int | None) -> SimEvent:
        if value is not None:
            self.headers.append((name, str(value)))
        return self

    def extend(self, pairs: Headers) -> SimEvent:
        self.headers.extend(pairs)
        return self

    # ------------------------------------------------------------ wire forms

    def plain(self) -> bytes:
        """The inner text of a text/event-plain frame, duplicates and extra blocks included."""
        blocks = [self.headers, *self.extra]
        lines = "".join(f"{k}: {url_encode(v)}\n" for block in blocks for k, v in block)
        if self.body is not None:
            raw = self.body.encode()
            return (lines + f"Content-Length: {len(raw)}\n\n").encode() + raw
        return (lines + "\n").encode()

    def json(self) -> bytes:
        """text/event-json: one object; duplicate header names stay duplicate keys, as cJSON
        writes them (a dict-based reader keeps the last one)."""
        pairs = [*self.headers, *(p for block in self.extra for p in block)]
        if self.body is not None:
            pairs.append(("Content-Length", str(len(self.body.encode()))))
            pairs.append(("_body", self.body))
        return ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}").encode()

    def xml(self) -> bytes:
        pairs = [*self.headers, *(p for block in self.extra for p in block)]
        inner = "".join(f"    <{k}>{escape(url_encode(v))}</{k}>\n" for k, v in pairs)
        out = f"<event>\n  <headers>\n{inner}  </headers>\n"
        if self.body is not None:
            out += f"  <Content-Length>{len(self.body.encode())}</Content-Length>\n"
            out += f"  <body>{escape(self.body)}</body>\n"
        return (out + "</event>").encode()

    def encode(self, fmt: str) -> bytes:
        body = self.json() if fmt == "json" else self.xml() if fmt == "xml" else self.plain()
        ctype = {"json": "text/event-json", "xml": "text/event-xml"}.get(fmt, "text/event-plain")
        return f"Content-Length: {len(body)}\nContent-Type: {ctype}\n\n".encode() + body


def uptime_text(seconds: float) -> str:
    """`UP ...`/`Up-Time` wording of switch_core_measure_time, singular for 1."""
    whole = int(seconds)
    years, rem = divmod(whole, 365 * 86400)
    days, rem = divmod(rem, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    micro = int((seconds - whole) * 1_000_000)
    parts = [(years, "year"), (days, "day"), (hours, "hour"), (minutes, "minute"), (secs, "second")]
    parts += [(micro // 1000, "millisecond"), (micro % 1000, "microsecond")]
    return ", ".join(f"{n} {word}{'' if n == 1 else 's'}" for n, word in parts)


class EventFactory:
    """Stamps the headers every event carries and hands out Event-Sequence numbers."""

    def __init__(self, *, core_uuid: str, hostname: str, switchname: str, ipv4: str, ipv6: str) -> None:
        self.core_uuid = core_uuid
        self.hostname = hostname
        self.switchname = switchname
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self._seq = itertools.count(1)
        self.started = time.time()

    def next_sequence(self) -> int:
        return next(self._seq)

    def new(
        self,
        name: str,
        *,
        subclass: str | None = None,
        calling: tuple[str, str, int] | None = None,
        sequence: int | None = None,
    ) -> SimEvent:
        now = time.time()
        local = time.localtime(now)
        headers: Headers = []
        if subclass:
            headers.append(("Event-Subclass", subclass))
        headers += [
            ("Event-Name", name),
            ("Core-UUID", self.core_uuid),
            ("FreeSWITCH-Hostname", self.hostname),
            ("FreeSWITCH-Switchname", self.switchname),
            ("FreeSWITCH-IPv4", self.ipv4),
            ("FreeSWITCH-IPv6", self.ipv6),
            ("Event-Date-Local", time.strftime("%Y-%m-%d %H:%M:%S", local)),
            ("Event-Date-GMT", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))),
            ("Event-Date-Timestamp", str(int(now * 1_000_000))),
        ]
        key = subclass.split("::")[0] if subclass and subclass.startswith("mod_audio_fork") else subclass
        file, func, line = (
            calling or CALLING.get(key or name) or CALLING.get(name) or ("switch_event.c", "", 0)
        )
        headers += [
            ("Event-Calling-File", file),
            ("Event-Calling-Function", func),
            ("Event-Calling-Line-Number", str(line)),
            ("Event-Sequence", str(sequence if sequence is not None else self.next_sequence())),
        ]
        return SimEvent(name, headers, subclass=subclass)


# ---------------------------------------------------------------- channel data


def profile_headers(profile: CallerProfile, prefix: str) -> Headers:
    """switch_caller_profile_event_set_data: empty fields are left out."""
    fields: list[tuple[str, str | None]] = [
        ("Direction", profile.direction),
        ("Logical-Direction", profile.logical_direction),
        ("Username", profile.username),
        ("Dialplan", profile.dialplan),
        ("Caller-ID-Name", profile.caller_id_name),
        ("Caller-ID-Number", profile.caller_id_number),
        ("Orig-Caller-ID-Name", profile.orig_caller_id_name),
        ("Orig-Caller-ID-Number", profile.orig_caller_id_number),
        ("Callee-ID-Name", profile.callee_id_name),
        ("Callee-ID-Number", profile.callee_id_number),
        ("Network-Addr", profile.network_addr),
        ("ANI", profile.ani),
        ("Destination-Number", profile.destination_number),
        ("Unique-ID", profile.uuid),
        ("Source", profile.source),
        ("Transfer-Source", profile.transfer_source),
        ("Context", profile.context),
        ("RDNIS", profile.rdnis),
        ("Channel-Name", profile.channel_name),
        ("Profile-Index", str(profile.index)),
        ("Profile-Created-Time", str(profile.profile_created)),
        ("Channel-Created-Time", str(profile.times.created)),
        ("Channel-Answered-Time", str(profile.times.answered)),
        ("Channel-Progress-Time", str(profile.times.progress)),
        ("Channel-Progress-Media-Time", str(profile.times.progress_media)),
        ("Channel-Hangup-Time", str(profile.times.hungup)),
        ("Channel-Transfer-Time", str(profile.times.transferred)),
        ("Channel-Resurrect-Time", "0"),
        ("Channel-Bridged-Time", str(profile.times.bridged)),
        ("Channel-Last-Hold", str(profile.times.last_hold)),
        ("Channel-Hold-Accum", str(profile.times.hold_accum)),
        ("Screen-Bit", "true"),
        ("Privacy-Hide-Name", "false"),
        ("Privacy-Hide-Number", "false"),
    ]
    return [(f"{prefix}-{name}", value) for name, value in fields if value]


def channel_basic(ch: Channel) -> Headers:
    """switch_channel_event_set_basic_data."""
    headers: Headers = [
        ("Channel-State", ch.running_state),
        ("Channel-Call-State", ch.call_state),
        ("Channel-State-Number", str(ch.state_number)),
        ("Channel-Name", ch.name),
        ("Unique-ID", ch.uuid),
        ("Call-Direction", ch.direction),
        ("Presence-Call-Direction", ch.direction),
        ("Channel-HIT-Dialplan", "true" if ch.hit_dialplan else "false"),
        ("Channel-Call-UUID", ch.call_uuid),
        ("Answer-State", ch.answer_state),
    ]
    if ch.hangup_cause:
        headers.append(("Hangup-Cause", ch.hangup_cause))
    if ch.codec_ready:
        headers += [
            ("Channel-Read-Codec-Name", ch.codec),
            ("Channel-Read-Codec-Rate", str(ch.rate)),
            ("Channel-Read-Codec-Bit-Rate", "64000"),
            ("Channel-Write-Codec-Name", ch.codec),
            ("Channel-Write-Codec-Rate", str(ch.rate)),
            ("Channel-Write-Codec-Bit-Rate", "64000"),
        ]
    if ch.profile is not None:
        headers += profile_headers(ch.profile, "Caller")
    other = ch.other_leg_profile()
    if other is not None:
        kind, profile = other
        headers.append(("Other-Type", kind))
        headers += profile_headers(profile, "Other-Leg")
    return headers


def channel_vars(ch: Channel) -> Headers:
    return [(f"variable_{k}", v) for k, v in ch.variables.items()]


def channel_data(ch: Channel) -> Headers:
    """switch_channel_event_set_data: basic data plus every channel variable."""
    return channel_basic(ch) + channel_vars(ch)


def playback_file_type(raw: str) -> list[tuple[str, str]]:
    """switch_ivr_play_file (1.10.12) sets Playback-File-Type for two prefixes only, compared with
    the path as given: local_stream: and tone_stream: (so not http_cache://, nor after a {...})."""
    for kind in ("local_stream", "tone_stream"):
        if raw[: len(kind) + 1].lower() == f"{kind}:":
            return [("Playback-File-Type", kind)]
    return []
