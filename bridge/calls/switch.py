"""FreeSWITCH commands as the call layer uses them, with failures mapped to API errors.

`bridge.esl` only knows the wire; this module knows FreeSWITCH's argument quoting, which
replies mean failure, and turns ESL faults into SwitchError (502) or SwitchUnavailable (503).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import structlog

from bridge.api.errors import SwitchError, SwitchUnavailable

if TYPE_CHECKING:
    from bridge.esl.client import EslClient

log = structlog.get_logger(__name__)


def quote_arg(value: str, delim: str = " ") -> str:
    """Escape one argument for switch_separate_string: a backslash makes the next quote,
    delimiter or backslash literal, and a bare single quote would start a quoted group."""
    out = value.replace("\\", "\\\\").replace("'", "\\'")
    if delim != " ":
        out = out.replace(delim, "\\" + delim)
    elif " " in out:
        out = out.replace(" ", "\\s")
    return out


def join_args(*args: str, delim: str = "|") -> str:
    """`^^|a|b|c`: the delimiter override jambonz uses so JSON with spaces stays one argument."""
    return "^^" + delim + delim.join(quote_arg(a, delim) for a in args)


class Switch:
    def __init__(self, esl: EslClient, *, command_timeout: float = 10.0) -> None:
        self.esl = esl
        self.command_timeout = command_timeout

    async def api(self, command: str, *, timeout: float | None = None) -> str:
        from bridge.esl.client import EslCommandError, EslConnectionError, EslTimeout

        try:
            return await self.esl.api(command, timeout=timeout or self.command_timeout)
        except EslCommandError as exc:
            raise SwitchError(command, exc.reply) from exc
        except EslTimeout as exc:
            raise SwitchUnavailable(f"no reply to {command.split(' ')[0]} in time") from exc
        except EslConnectionError as exc:
            raise SwitchUnavailable(str(exc)) from exc

    async def bgapi(self, command: str, *, timeout: float | None = None) -> str:
        from bridge.esl.client import EslCommandError, EslConnectionError, EslTimeout

        try:
            return await self.esl.bgapi(command, timeout=timeout or self.command_timeout)
        except EslCommandError as exc:
            raise SwitchError(command, exc.reply) from exc
        except EslTimeout as exc:
            raise SwitchUnavailable(f"job {command.split(' ')[0]} did not finish in time") from exc
        except EslConnectionError as exc:
            raise SwitchUnavailable(str(exc)) from exc

    # ------------------------------------------------------------ channel basics

    async def exists(self, uuid: str) -> bool:
        return (await self.api(f"uuid_exists {uuid}")).strip() == "true"

    async def require_channel(self, uuid: str) -> None:
        """Some commands answer +OK for a channel that is gone (uuid_hold): check first."""
        if not await self.exists(uuid):
            raise SwitchError(f"uuid_exists {uuid}", "-ERR No such channel!", code="channel_gone")

    async def answer(self, uuid: str) -> None:
        await self.api(f"uuid_answer {uuid}")

    async def kill(self, uuid: str, cause: str = "NORMAL_CLEARING") -> None:
        await self.api(f"uuid_kill {uuid} {cause}")

    async def setvar(self, uuid: str, name: str, value: str) -> None:
        await self.api(f"uuid_setvar {uuid} {name} {quote_arg(value)}")

    # ------------------------------------------------------------ recording

    async def record_start(self, uuid: str, path: str) -> None:
        await self.setvar(uuid, "RECORD_STEREO", "true")
        await self.api(f"uuid_record {uuid} start {path}")

    # ------------------------------------------------------------ audio fork

    async def fork_start(
        self,
        uuid: str,
        url: str,
        *,
        sample_rate_hz: int,
        metadata: dict[str, Any],
        mix: str = "mono",
        bugname: str = "ai_fork",
    ) -> None:
        rate = f"{sample_rate_hz // 1000}k" if sample_rate_hz in (8000, 16000) else str(sample_rate_hz)
        meta = json.dumps(metadata, separators=(",", ":"))
        await self.api("uuid_audio_fork " + join_args(uuid, "start", url, mix, rate, bugname, meta))

    async def fork_stop(self, uuid: str, bugname: str = "ai_fork") -> None:
        await self.api(f"uuid_audio_fork {uuid} stop {bugname}")

    async def fork_send_text(self, uuid: str, payload: dict[str, Any], bugname: str = "ai_fork") -> None:
        text = json.dumps(payload, separators=(",", ":"))
        await self.api("uuid_audio_fork " + join_args(uuid, "send_text", bugname, text))
