"""The switch itself, minus the socket: channels, the event bus, scenario knobs, tasks.

`SwitchCore` is what every other module of the simulator talks to. The ESL server only
registers listeners here and passes command lines to `bridge.sim.commands`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from bridge.sim.arguments import separate_string
from bridge.sim.channels import Channel, new_uuid
from bridge.sim.events import EventFactory, SimEvent

if TYPE_CHECKING:
    from bridge.sim.callcenter import CallCenter
    from bridge.sim.conference import Conferences

log = structlog.get_logger(__name__)

MAX_ENDED_CHANNELS = 2000


class Listener(Protocol):
    def offer(self, event: SimEvent) -> None: ...


@dataclass(slots=True)
class OriginateOutcome:
    """What the far end does when dialled: hang up with `cause` (None = answer) after `delay_s`."""

    prefix: str
    cause: str | None
    answer_delay_s: float | None


# The speech modules of the real-switch build (mod_flite, mod_tts_commandline) and mod_flite's
# voices (flite_speech_open); mod_tts_commandline passes any voice to its command.
SPEECH_MODULES = frozenset({"flite", "tts_commandline"})
FLITE_VOICES = frozenset({"awb", "kal", "kal16", "rms", "slt"})


@dataclass(slots=True)
class PlaybackOutcome:
    prefix: str
    response: str  # FILE PLAYED | FILE NOT FOUND | PLAYBACK ERROR
    duration_s: float | None


@dataclass(slots=True)
class Settings:
    switchname: str
    hostname: str
    answer_delay_s: float
    audio_frame_ms: int
    fork_subprotocol: str
    playback_duration_s: float
    heartbeat_interval_s: float
    # How long the speech of mod_ssml's tts:// takes per character of text (measured on the real
    # switch: docs/control-api.md "TTS").
    tts_ms_per_char: float = 75.0


class SwitchCore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.events = EventFactory(
            core_uuid=new_uuid(),
            hostname=settings.hostname,
            switchname=settings.switchname,
            ipv4="127.0.0.1",
            ipv6="::1",
        )
        self.listeners: set[Listener] = set()
        self.channels: OrderedDict[str, Channel] = OrderedDict()
        self.command_log: list[str] = []
        self.failures: list[tuple[str, str]] = []
        self.originate_outcomes: list[OriginateOutcome] = []
        self.playback_outcomes: list[PlaybackOutcome] = []
        self.sessions_since_startup = 0
        self.peak_sessions = 0
        self.started = time.time()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closing = False
        from bridge.sim.callcenter import CallCenter
        from bridge.sim.conference import Conferences

        self.conferences: Conferences = Conferences(self)
        self.callcenter: CallCenter = CallCenter(self)

    # ------------------------------------------------------------ events

    def fire(self, event: SimEvent) -> None:
        for listener in list(self.listeners):
            try:
                listener.offer(event)
            except Exception:  # a broken socket must not stop the switch
                log.exception("sim_listener_failed", sim_event=event.name)

    # ------------------------------------------------------------ channels

    def add_channel(self, ch: Channel) -> None:
        self.channels[ch.uuid] = ch
        self.sessions_since_startup += 1
        self.peak_sessions = max(self.peak_sessions, self.session_count())

    def live(self, uuid: str | None) -> Channel | None:
        """The channel if it still exists in the switch (not yet destroyed)."""
        if not uuid:
            return None
        ch = self.channels.get(uuid)
        return ch if ch is not None and not ch.destroyed.is_set() else None

    def live_channels(self) -> list[Channel]:
        return [ch for ch in self.channels.values() if not ch.destroyed.is_set()]

    def session_count(self) -> int:
        return len(self.live_channels())

    async def on_channel_hangup(self, ch: Channel) -> None:
        """Hangup side effects outside the channel: its partner, forks, eavesdroppers."""
        for fork in list(ch.forks.values()):
            await fork.close(graceful=True, reason="hangup")
        if ch.name.startswith("loopback/"):
            # mod_loopback: the two legs are one call; either hanging up takes the other along.
            peer = self.live(ch.variables.get("other_loopback_leg_uuid"))
            if peer is not None and peer.alive:
                peer.hangup(ch.hangup_cause or "NORMAL_CLEARING")
        partner = self.live(ch.bridged_to)
        if partner is not None and partner.alive and partner.bridged_to == ch.uuid:
            partner.interrupt()
        for other in self.live_channels():
            if other.eavesdrop and other.eavesdrop.get("target") == ch.uuid:
                other.interrupt()

    def on_channel_destroyed(self, ch: Channel) -> None:
        ended = [u for u, c in self.channels.items() if c.destroyed.is_set()]
        for uuid in ended[: max(0, len(ended) - MAX_ENDED_CHANNELS)]:
            del self.channels[uuid]

    # ------------------------------------------------------------ scenario knobs

    def originate_outcome(self, endpoint: str) -> tuple[str | None, float]:
        """(cause or None for answer, delay) for a dial string, longest matching prefix wins."""
        best: OriginateOutcome | None = None
        for outcome in self.originate_outcomes:
            if endpoint.startswith(outcome.prefix) and (
                best is None or len(outcome.prefix) > len(best.prefix)
            ):
                best = outcome
        if best is None:
            return None, self.settings.answer_delay_s
        delay = self.settings.answer_delay_s if best.answer_delay_s is None else best.answer_delay_s
        return best.cause, delay

    def playback_outcome(self, path: str) -> tuple[str, float | None]:
        best: PlaybackOutcome | None = None
        for outcome in self.playback_outcomes:
            if path.startswith(outcome.prefix) and (best is None or len(outcome.prefix) > len(best.prefix)):
                best = outcome
        if best is not None:
            return best.response, best.duration_s
        if path[:6].lower() == "tts://":
            return self._speech_outcome(path[6:])
        endless = path.startswith(("local_stream://", "silence_stream://-1")) or "loops=-1" in path
        return "FILE PLAYED", None if endless else self.settings.playback_duration_s

    def _speech_outcome(self, spec: str) -> tuple[str, float | None]:
        """mod_ssml's tts_file_open: `<module>|<voice>|<text>` (three parts, split on `|` like
        switch_separate_string does, the last one keeping any further `|`); a module that is not
        loaded, or a voice mod_flite does not know, fails the open. The speech lasts
        tts_ms_per_char per character of the text."""
        parts = separate_string(spec, "|", 3)
        if len(parts) != 3 or not parts[2]:
            return "FILE NOT FOUND", None
        module, voice, text = parts
        if module not in SPEECH_MODULES or (module == "flite" and voice.lower() not in FLITE_VOICES):
            return "FILE NOT FOUND", None
        return "FILE PLAYED", len(text) * self.settings.tts_ms_per_char / 1000

    def take_failure(self, command: str) -> str | None:
        for i, (prefix, reply) in enumerate(self.failures):
            if command.startswith(prefix):
                del self.failures[i]
                return reply
        return None

    # ------------------------------------------------------------ tasks

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not self.closing:
            log.error("sim_task_failed", task=task.get_name(), error=repr(task.exception()))

    async def close(self) -> None:
        self.closing = True
        for ch in self.live_channels():
            for fork in list(ch.forks.values()):
                await fork.close(graceful=False, reason="shutdown")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
