"""What several verb families share: guarded state transitions, command sequences that undo
themselves, and the audit log.

A state-changing verb never records a state the switch did not accept. It first moves its field
to a `pending` marker with a compare-and-set (so two instances, or two requests, cannot both
start the same change), then sends its commands, then either settles the field on the new value
or puts the old one back.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from redis.commands.core import AsyncScript

from bridge.calls.commands import Command
from bridge.calls.sessions import now_iso
from bridge.calls.switch import Switch
from bridge.errors import ApiError, SwitchError, SwitchUnavailable
from bridge.store import keys
from bridge.store.redis import RedisClient
from bridge.verbs.base import VerbContext

log = structlog.get_logger(__name__)

PENDING = "pending"

# KEYS[1] session hash
# ARGV[1] field, ARGV[2] new value, ARGV[3] '1' = only while the session is live,
# ARGV[4] n, ARGV[5..4+n] the values the field may hold now ('' = unset), then name/value pairs
# written along with it. Returns {1, old} when set, {0, current} when refused, {-1} no session,
# {-2} session ended.
_TRANSITION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, ''} end
if ARGV[3] == '1' and redis.call('HGET', KEYS[1], 'outcome') then return {-2, ''} end
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local n = tonumber(ARGV[4])
for i = 5, 4 + n do
  if cur == ARGV[i] then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
    for j = 5 + n, #ARGV, 2 do
      redis.call('HSET', KEYS[1], ARGV[j], ARGV[j + 1])
    end
    return {1, cur}
  end
end
return {0, cur}
"""

_scripts: weakref.WeakKeyDictionary[RedisClient, AsyncScript] = weakref.WeakKeyDictionary()


def _transition_script(redis: RedisClient) -> AsyncScript:
    script = _scripts.get(redis)
    if script is None:
        script = _scripts[redis] = redis.register_script(_TRANSITION)
    return script


async def transition(
    ctx: VerbContext,
    field: str,
    new: str,
    allowed: Sequence[str],
    *,
    live_only: bool = True,
    also: dict[str, str] | None = None,
) -> tuple[bool, str]:
    """Set `field` to `new` if it holds one of `allowed`: (True, old value) or (False, current)."""
    pairs = [x for item in (also or {}).items() for x in item]
    reply = await _transition_script(ctx.svc.redis)(
        keys=[keys.session(ctx.call_id)],
        args=[field, new, "1" if live_only else "0", len(allowed), *allowed, *pairs],
    )
    code = int(reply[0])
    if code == -1:
        raise ApiError(404, "ai_session_not_found", f"no AI session {ctx.call_id}")
    if code == -2:
        raise terminated(ctx)
    return code == 1, str(reply[1])


async def begin(ctx: VerbContext, field: str, allowed: Sequence[str]) -> tuple[bool, str]:
    """Claim a change of `field` by moving it to PENDING."""
    return await transition(ctx, field, PENDING, allowed)


async def settle(ctx: VerbContext, field: str, value: str, *, also: dict[str, str] | None = None) -> None:
    """End a claimed change: the new value, or the old one after a failure. Also on a session that
    ended meanwhile, so the hash never keeps a marker."""
    await transition(ctx, field, value, (PENDING,), live_only=False, also=also)


def terminated(ctx: VerbContext) -> ApiError:
    return ApiError(409, "ai_session_terminated", "the AI session has ended; stop sending verbs")


def in_progress(what: str) -> ApiError:
    return ApiError(409, "operation_in_progress", f"another {what} request for this call is still running")


def require_answered(ctx: VerbContext) -> None:
    """Media verbs on a ringing call would pre-answer it (uuid_audio, uuid_send_dtmf do)."""
    if ctx.session.state == "ringing":
        raise ApiError(409, "call_not_answered", "the call has not been answered yet")


# ---------------------------------------------------------------- command sequences


@dataclass(frozen=True, slots=True)
class Step:
    command: Command
    undo: Command | None = None
    # An optional step's failure is logged and skipped: it would not change what the caller hears.
    required: bool = True


async def run_steps(switch: Switch, steps: Sequence[Step]) -> None:
    """Send the commands in order. When a required one fails, undo what already ran (newest first,
    best effort) and re-raise, so the switch is back where it was and the verb reports 502."""
    done: list[Step] = []
    for step in steps:
        try:
            await switch.api(step.command)
        except (SwitchError, SwitchUnavailable) as exc:
            if not step.required:
                log.warning("optional_step_failed", command=step.command, error=str(exc))
                continue
            for prior in reversed(done):
                if prior.undo is None:
                    continue
                try:
                    await switch.api(prior.undo)
                except (SwitchError, SwitchUnavailable) as undo_exc:
                    log.error("undo_failed", command=prior.undo, error=str(undo_exc))
            raise
        done.append(step)


# ---------------------------------------------------------------- audit log (metadata.logs[])

MAX_LOG_ENTRIES = 1000


async def audit(ctx: VerbContext, event: str, **fields: Any) -> None:
    """A verb's own entry in metadata.logs[]: `{"ts", "event", ...}`. Not capped: these are few."""
    entry = {"ts": now_iso(), "event": event, **fields}
    await ctx.svc.redis.rpush(keys.session_logs(ctx.call_id), json.dumps(entry, default=str))


async def append_log(ctx: VerbContext, entry: dict[str, Any]) -> None:
    """An AI-written entry, capped so ai_session.ended (which carries every entry) stays bounded."""
    logs_key = keys.session_logs(ctx.call_id)
    length = await ctx.svc.redis.rpush(logs_key, json.dumps(entry, default=str))
    if length > MAX_LOG_ENTRIES:
        await ctx.svc.redis.rpop(logs_key)
        raise ApiError(
            409, "log_full", f"this call already holds {MAX_LOG_ENTRIES} log entries; no more are kept"
        )
