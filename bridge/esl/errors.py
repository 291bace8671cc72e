"""Exceptions raised by the ESL client (re-exported by `bridge.esl.client`)."""

from __future__ import annotations


class EslError(Exception):
    """Base class for everything the ESL client raises."""


class EslCommandError(EslError):
    """FreeSWITCH answered, and the answer starts with "-" (-ERR, -USAGE, ...)."""

    def __init__(self, command: str, reply: str) -> None:
        # The full command can carry secrets (audio-fork tokens in originate variables), so the
        # message names only its first words; the caller still gets the whole line in `command`.
        super().__init__(f"{command_name(command)}: {reply}")
        self.command = command
        self.reply = reply


class EslConnectionError(EslError):
    """Not connected, authentication refused, or the connection dropped while waiting."""


class EslAuthError(EslConnectionError):
    """FreeSWITCH refused the password (or the ACL refused this address)."""


class EslTimeout(EslError):
    """No reply (or no BACKGROUND_JOB) within the timeout."""


def command_name(line: str) -> str:
    """`api uuid_kill <uuid>` -> `api uuid_kill`: enough to identify a command in logs and messages
    without copying its arguments."""
    words = line.split(" ", 2)
    if len(words) > 1 and words[0].lower() in ("api", "bgapi"):
        return f"{words[0]} {words[1]}"
    return words[0]
