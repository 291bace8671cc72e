"""FreeSWITCH commands as the call layer uses them, with failures mapped to API errors.

`bridge.esl` only knows the wire and `bridge.calls.commands` how values become arguments; this
module knows which replies mean failure, and turns ESL faults into SwitchError (502) or
SwitchUnavailable (503). It sends nothing but a `Command`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog

from bridge.calls.commands import Arg, Command, arg_list, command, inline_dialplan, json_text, url, word
from bridge.errors import SwitchError, SwitchUnavailable

if TYPE_CHECKING:
    from bridge.esl.client import EslClient
    from bridge.metrics import BridgeMetrics

log = structlog.get_logger(__name__)


def queue_dialplan(queue: str, domain: str) -> Arg:
    """A mod_callcenter queue as an inline dialplan; a bare name is in `domain`."""
    name = queue if "@" in queue else f"{queue}@{domain}"
    return inline_dialplan(("callcenter", word(name, "queue")))


class Switch:
    def __init__(
        self,
        esl: EslClient,
        *,
        command_timeout: float = 10.0,
        box: str = "default",
        metrics: BridgeMetrics | None = None,
    ) -> None:
        self.esl = esl
        self.command_timeout = command_timeout
        self.box = box  # the box's name (bridge.calls.pool; the metrics' `box` label)
        self.metrics = metrics

    async def api(self, command: Command, *, timeout: float | None = None) -> str:
        from bridge.esl.client import EslCommandError, EslConnectionError, EslTimeout

        _require_command(command)
        started = time.perf_counter()
        result = "cancelled"  # unless one of the outcomes below
        try:
            reply = await self.esl.api(command, timeout=timeout or self.command_timeout)
            result = "ok"
            return reply
        except EslCommandError as exc:
            result = "error"
            raise SwitchError(command, exc.reply) from exc
        except EslTimeout as exc:
            result = "timeout"
            raise SwitchUnavailable(f"no reply to {command.split(' ')[0]} in time") from exc
        except EslConnectionError as exc:
            result = "disconnected"
            raise SwitchUnavailable(str(exc)) from exc
        finally:
            if self.metrics is not None:
                self.metrics.esl_command(self.box, command, result, time.perf_counter() - started)

    async def bgapi(self, command: Command, *, timeout: float | None = None) -> str:
        from bridge.esl.client import EslCommandError, EslConnectionError, EslTimeout

        _require_command(command)
        started = time.perf_counter()
        result = "cancelled"  # unless one of the outcomes below
        try:
            reply = await self.esl.bgapi(command, timeout=timeout or self.command_timeout)
            result = "ok"
            return reply
        except EslCommandError as exc:
            result = "error"
            raise SwitchError(command, exc.reply) from exc
        except EslTimeout as exc:
            result = "timeout"
            raise SwitchUnavailable(f"job {command.split(' ')[0]} did not finish in time") from exc
        except EslConnectionError as exc:
            result = "disconnected"
            raise SwitchUnavailable(str(exc)) from exc
        finally:
            if self.metrics is not None:
                self.metrics.esl_command(self.box, command, result, time.perf_counter() - started)

    # ------------------------------------------------------------ channel basics

    async def exists(self, uuid: str) -> bool:
        return (await self.api(command("uuid_exists", word(uuid, "uuid")))).strip() == "true"

    async def require_channel(self, uuid: str) -> None:
        """Some commands answer +OK for a channel that is gone (uuid_hold): check first."""
        if not await self.exists(uuid):
            raise SwitchError(f"uuid_exists {uuid}", "-ERR No such channel!", code="channel_gone")

    async def answer(self, uuid: str) -> None:
        await self.api(command("uuid_answer", word(uuid, "uuid")))

    async def kill(self, uuid: str, cause: str = "NORMAL_CLEARING") -> None:
        await self.api(command("uuid_kill", word(uuid, "uuid"), word(cause, "hangup cause")))

    async def setvar(self, uuid: str, name: str, value: str) -> None:
        await self.api(command("uuid_setvar", word(uuid, "uuid"), word(name, "variable"), word(value, name)))

    # ------------------------------------------------------------ recording

    async def record_start(self, uuid: str, path: str) -> None:
        await self.setvar(uuid, "RECORD_STEREO", "true")
        # FreeSWITCH's recording bug holds back 25 frames by default (RECORD_PRE_BUFFER_FRAMES,
        # switch_ivr_async.c): the file then lags the call by 0.5 s, so `uuid_record mask` (the
        # recording_pause verb) silences the half second before the pause and writes the last
        # half second of the paused stretch in clear, and the call's last 0.5 s is not in the file.
        # Seen on 1.10.12 (tests/freeswitch/test_calls.py); 0 turns the pre-buffer off.
        await self.setvar(uuid, "RECORD_PRE_BUFFER_FRAMES", "0")
        await self.api(command("uuid_record", word(uuid, "uuid"), "start", word(path, "recording path")))

    # ------------------------------------------------------------ audio fork

    async def fork_start(
        self,
        uuid: str,
        ws_url: str,
        *,
        sample_rate_hz: int,
        metadata: dict[str, Any],
        mix: str = "mono",
        bugname: str = "ai_fork",
    ) -> None:
        rate = f"{sample_rate_hz // 1000}k" if sample_rate_hz in (8000, 16000) else str(sample_rate_hz)
        args = arg_list(
            word(uuid, "uuid"),
            "start",
            url(ws_url, "ws_url", schemes=("ws", "wss")),
            word(mix, "mix"),
            word(rate, "sample rate"),
            word(bugname, "bug name"),
            json_text(metadata),
        )
        await self.api(command("uuid_audio_fork", args))

    async def fork_stop(self, uuid: str, bugname: str = "ai_fork") -> None:
        await self.api(command("uuid_audio_fork", word(uuid, "uuid"), "stop", word(bugname, "bug name")))

    async def fork_send_text(self, uuid: str, payload: dict[str, Any], bugname: str = "ai_fork") -> None:
        args = arg_list(word(uuid, "uuid"), "send_text", word(bugname, "bug name"), json_text(payload))
        await self.api(command("uuid_audio_fork", args))


def _require_command(value: str) -> None:
    if not isinstance(value, Command):
        # A programming error, never a user's: every command goes through bridge.calls.commands.
        raise TypeError(f"Switch sends only commands built by bridge.calls.commands, not {value[:40]!r}")
