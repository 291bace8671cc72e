"""The AI's audio fork as ESL reports it (mod_audio_fork's CUSTOM events): the WebSocket
connecting, failing or dropping (the agent's ws_disconnect_action decides what the call does
then), and the audio the AI sends back (playAudio, killAudio), which the bridge plays."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import structlog

from bridge.calls.commands import command, join, word
from bridge.calls.sessions import Session
from bridge.errors import SwitchError, SwitchUnavailable
from bridge.esl.protocol import Event

if TYPE_CHECKING:
    from bridge.calls.manager import CallManager

log = structlog.get_logger(__name__)


class AiForkEvents:
    def __init__(self, calls: CallManager) -> None:
        self.calls = calls
        self.svc = calls.svc
        self.settings = calls.settings
        for key, handler in (
            ("mod_audio_fork::connect", self._on_fork_connect),
            ("mod_audio_fork::connect_failed", self._on_fork_lost),
            ("mod_audio_fork::disconnect", self._on_fork_lost),
            ("mod_audio_fork::play_audio", self._on_ai_audio),
            ("mod_audio_fork::kill_audio", self._on_ai_audio_killed),
        ):
            calls.on(key, handler)

    async def fork_session(self, uuid: str) -> Session | None:
        """The session whose AI fork runs on channel `uuid`: the call itself, or, once the AI moved
        into a conference, its conference leg. None for the caller's old fork after that move: the
        bridge closed it on purpose, so its events say nothing about the AI's WebSocket."""
        session = await self.svc.sessions.get(uuid)
        if session is not None:
            return None if session.conference_id else session
        conf_id = await self.svc.conferences.conference_of_leg(uuid)
        conf = await self.svc.conferences.get(conf_id) if conf_id else None
        if conf is None or conf.ai_left:
            return None
        session = await self.svc.sessions.get(conf.call_id)
        if session is None or session.conference_id != conf.conference_id:
            return None
        return session

    async def _on_fork_connect(self, event: Event) -> None:
        session = await self.fork_session(event.unique_id)
        if session is not None:
            await self.svc.sessions.update(session.call_id, fork_connected=True)
            # A no-op unless the bridge that opened the fork died before saying so.
            await self.calls.emit_ai_session_started(session)

    async def _on_ai_audio(self, event: Event) -> None:
        """The AI sent audio over its WebSocket (playAudio): mod_audio_fork only wrote it to a file
        (freeswitch.md §3.2), so the bridge plays it: to the call, or in a conference to the AI
        leg's far side (loopback-b), whose audio is what the AI says into the room."""
        session = await self.fork_session(event.unique_id)
        if session is None or session.terminal:
            return
        try:
            path = json.loads(event.body or "{}").get("file")
        except ValueError:
            path = None
        if not isinstance(path, str) or not path:
            log.warning("ai_audio_without_file", call_id=session.call_id)
            return
        target = session.extra.get("ai_speech_uuid") or session.call_id
        try:
            playback = join("playback::", word(path, "AI audio file"))
            await self.svc.switches.of(session).api(command("uuid_broadcast", target, playback, "aleg"))
        except (SwitchError, SwitchUnavailable) as exc:
            log.warning("ai_audio_not_played", call_id=session.call_id, error=str(exc))

    async def _on_ai_audio_killed(self, event: Event) -> None:
        """killAudio breaks playback on the fork's own channel; in a conference the AI's audio
        plays on loopback-b, which the module does not touch, so the bridge breaks it there."""
        session = await self.fork_session(event.unique_id)
        speech = session.extra.get("ai_speech_uuid") if session is not None else None
        if not speech or session is None or session.terminal:
            return
        try:
            await self.svc.switches.of(session).api(command("uuid_break", speech, "all"))
        except (SwitchError, SwitchUnavailable) as exc:
            log.warning("ai_audio_not_broken", call_id=session.call_id, error=str(exc))

    async def _on_fork_lost(self, event: Event) -> None:
        """The AI's WebSocket dropped or never connected: the agent's ws_disconnect_action decides."""
        session = await self.fork_session(event.unique_id)
        if session is None:
            return
        call_id = session.call_id
        await self.svc.sessions.update(call_id, fork_connected=False)
        if session.token_lifetime == "ws_session":
            await self.svc.tokens.revoke_all_for_call(call_id)
        if session.terminal or event.get("Answer-State") == "hangup":
            return
        if not await self._channel_alive(session):
            return
        agent = await self.svc.voice_agents.get(session.voice_agent_id or "")
        action = agent.ws_disconnect_action if agent else "hangup"
        reason = "ws_connect_failed" if event.subclass.endswith("connect_failed") else "ws_disconnected"
        log.warning("ai_websocket_lost", call_id=call_id, reason=reason, action=action)
        if action == "transfer_to_queue":
            if await self.calls.to_default_queue(session, reason):
                await self.calls.finish(call_id, "transferred_agent_queue", reason)
            else:
                await self.calls.finish(call_id, "error", reason)
                await self.calls.kill_quietly(session, "NORMAL_TEMPORARY_FAILURE")
        else:
            await self.calls.finish(call_id, "error", reason)
            await self.calls.kill_quietly(session, "NORMAL_CLEARING")

    async def _channel_alive(self, session: Session) -> bool:
        try:
            return await self.svc.switches.of(session).exists(session.call_id)
        except (SwitchError, SwitchUnavailable):
            return False
