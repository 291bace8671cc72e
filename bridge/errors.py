"""Errors the call layer and the verbs raise, below the HTTP layer: each carries the status and
code the API answers with (bridge.api.errors renders them in the envelope)."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}


class SwitchError(Exception):
    """FreeSWITCH refused or failed a command (a `-ERR`/`-USAGE` reply, or a failed job)."""

    def __init__(self, command: str, reply: str, *, code: str = "switch_command_failed") -> None:
        super().__init__(f"{command!r} -> {reply!r}")
        self.command = command
        self.reply = reply
        self.code = code


class SwitchUnavailable(Exception):
    """No live ESL connection (FreeSWITCH down, or reconnecting)."""
