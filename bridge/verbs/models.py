"""The 25 control verbs as pydantic models, discriminated on `event` (yotel-docs.md §2.5).

Everything that will become part of a FreeSWITCH command is checked here, before any of it
reaches the switch: digits, E.164 numbers, SIP URIs, and http(s) URLs (never a local path
or file: URL that FreeSWITCH would open on its own disk).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from bridge.calls.commands import UnsafeValue, url
from bridge.ids import VoiceAgentId

E164_RE = re.compile(r"^\+[1-9][0-9]{1,14}$")  # [0-9]: \d would match other scripts' digits too
# No ',' (bridge rings every comma-separated endpoint at once), '/' (a second dial string such as
# sofia/gateway/...) or '?' in the user part: a SIP URI must stay one endpoint of our choosing.
# RFC 3261 also allows ! ( ) & $ there; FreeSWITCH reads them in dial strings, so they are refused
# (percent-encode them).
SIP_URI_RE = re.compile(r"^sips?:[A-Za-z0-9_.~*=+;%-]+@[A-Za-z0-9.-]+(:[0-9]{1,5})?(;[A-Za-z0-9_=.-]+)*$")
DTMF_RE = re.compile(r"^[0-9A-Da-d*#wW]{1,99}$")
# Queue / agent / member names end up inside a FreeSWITCH dialplan string: keep them plain.
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    if len(value) > 2048:
        raise ValueError("must be at most 2048 characters")
    try:
        url(value)
    except UnsafeValue as exc:
        raise ValueError(f"{exc.reason}: percent-encode spaces, quotes, commas, braces and '$'") from None
    return value


def _e164(value: str) -> str:
    if not E164_RE.match(value):
        raise ValueError("must be an E.164 number such as +14155550123")
    return value


def _digits(value: str) -> str:
    if not DTMF_RE.match(value):
        raise ValueError("must be 1-99 DTMF characters: 0-9, A-D, *, #, w or W (pauses)")
    return value


def _name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError("must be 1-64 characters of letters, digits, '_', '.', '@' or '-'")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
E164 = Annotated[str, AfterValidator(_e164)]
Digits = Annotated[str, AfterValidator(_digits)]
PlainName = Annotated[str, AfterValidator(_name)]
Metadata = dict[str, Any]


class _Verb(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# ---------------------------------------------------------------- Group 1: call-state primitives


class Transfer(_Verb):
    event: Literal["transfer"]
    destination_type: Literal["agent_queue", "e164", "sip_uri"]
    destination: str = Field(min_length=1, max_length=256)
    metadata: Metadata | None = None

    @model_validator(mode="after")
    def _destination_matches_type(self) -> Transfer:
        if self.destination_type == "e164":
            _e164(self.destination)
        elif self.destination_type == "sip_uri":
            if not SIP_URI_RE.match(self.destination):
                raise ValueError("destination must be a SIP URI such as sip:agent@example.com")
        else:
            _name(self.destination)
        return self


class Hangup(_Verb):
    event: Literal["hangup"]
    metadata: Metadata | None = None


class Log(_Verb):
    event: Literal["log"]
    metadata: Metadata


class Mute(_Verb):
    event: Literal["mute"]
    target: Literal["caller", "agent"] = "caller"


class Unmute(_Verb):
    event: Literal["unmute"]
    target: Literal["caller", "agent"] = "caller"


class Hold(_Verb):
    event: Literal["hold"]
    moh_url: HttpUrl | None = None


class Unhold(_Verb):
    event: Literal["unhold"]


class SendDtmf(_Verb):
    event: Literal["send_dtmf"]
    digits: Digits


class _AudioSource(_Verb):
    audio_url: HttpUrl | None = None
    tts_text: str | None = Field(default=None, max_length=5000)
    voice: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> _AudioSource:
        if (self.audio_url is None) == (self.tts_text is None):
            raise ValueError("exactly one of audio_url and tts_text must be set")
        return self


class PlayAudio(_AudioSource):
    event: Literal["play_audio"]


class SetDisposition(_Verb):
    event: Literal["set_disposition"]
    disposition: str = Field(min_length=1, max_length=100)
    notes: str | None = Field(default=None, max_length=5000)


class RecordingPause(_Verb):
    event: Literal["recording_pause"]
    reason: str | None = Field(default=None, max_length=500)


class RecordingResume(_Verb):
    event: Literal["recording_resume"]


class GetCallState(_Verb):
    event: Literal["get_call_state"]


# ---------------------------------------------------------------- Group 2: conferencing + supervisor


class ConferenceStart(_Verb):
    event: Literal["conference_start"]


class ConferenceAdd(_Verb):
    event: Literal["conference_add"]
    participant_type: Literal["e164", "sip_uri", "agent", "supervisor"]
    destination: str = Field(min_length=1, max_length=256)
    metadata: Metadata | None = None

    @model_validator(mode="after")
    def _destination_matches_type(self) -> ConferenceAdd:
        if self.participant_type == "e164":
            _e164(self.destination)
        elif self.participant_type == "sip_uri":
            if not SIP_URI_RE.match(self.destination):
                raise ValueError("destination must be a SIP URI such as sip:agent@example.com")
        else:
            _name(self.destination)
        return self


class ConferenceRemove(_Verb):
    event: Literal["conference_remove"]
    member_id: str = Field(min_length=1, max_length=64)


class ConferenceLeave(_Verb):
    event: Literal["conference_leave"]


class RequestSupervisor(_Verb):
    event: Literal["request_supervisor"]
    reason: str = Field(min_length=1, max_length=1000)
    urgency: Literal["low", "high"] = "low"


class Whisper(_AudioSource):
    event: Literal["whisper"]
    target_call_id: str = Field(min_length=1, max_length=64)


class Barge(_Verb):
    event: Literal["barge"]
    target_call_id: str = Field(min_length=1, max_length=64)


class MonitorStart(_Verb):
    event: Literal["monitor_start"]
    target_call_id: str = Field(min_length=1, max_length=64)
    mode: Literal["listen", "listen_and_whisper"] = "listen"


class MonitorStop(_Verb):
    event: Literal["monitor_stop"]
    target_call_id: str = Field(min_length=1, max_length=64)


# ---------------------------------------------------------------- Group 3: lead / context


class SetLeadField(_Verb):
    event: Literal["set_lead_field"]
    field: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    value: Any = None

    @model_validator(mode="before")
    @classmethod
    def _value_present(cls, data: Any) -> Any:
        if isinstance(data, dict) and "value" not in data:
            raise ValueError("value is required (null is allowed)")
        return data


class SetLeadStatus(_Verb):
    event: Literal["set_lead_status"]
    status: Literal[
        "pending", "dialing", "connected", "busy", "no_answer", "failed", "dnd", "completed", "callback"
    ]


def _future_aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must carry a timezone, e.g. 2026-05-03T14:00:00Z")
    if value <= datetime.now(UTC):
        raise ValueError("must lie in the future")
    return value


class ScheduleCallback(_Verb):
    event: Literal["schedule_callback"]
    scheduled_at: Annotated[datetime, AfterValidator(_future_aware)]
    reason: str | None = Field(default=None, max_length=1000)
    voice_agent_id: VoiceAgentId | None = None


Verb = Annotated[
    Transfer | Hangup | Log | Mute | Unmute | Hold | Unhold | SendDtmf | PlayAudio | SetDisposition
    | RecordingPause | RecordingResume | GetCallState
    | ConferenceStart | ConferenceAdd | ConferenceRemove | ConferenceLeave | RequestSupervisor | Whisper
    | Barge | MonitorStart | MonitorStop
    | SetLeadField | SetLeadStatus | ScheduleCallback,
    Field(discriminator="event"),
]  # fmt: skip

VERB_ADAPTER: TypeAdapter[Verb] = TypeAdapter(Verb)

VERB_NAMES: tuple[str, ...] = (
    "transfer", "hangup", "log", "mute", "unmute", "hold", "unhold", "send_dtmf", "play_audio",
    "set_disposition", "recording_pause", "recording_resume", "get_call_state",
    "conference_start", "conference_add", "conference_remove", "conference_leave", "request_supervisor",
    "whisper", "barge", "monitor_start", "monitor_stop",
    "set_lead_field", "set_lead_status", "schedule_callback",
)  # fmt: skip
