"""A Redis zset of ids by when something is due (ms): schedule, then claim what is due. Each due
id is handed to exactly one claimer across every bridge instance (the one whose ZREM wins), and
a restart loses nothing, since the schedule lives in Redis rather than in timers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from bridge.store.redis import RedisClient

log = structlog.get_logger(__name__)

_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local won = {}
for _, member in ipairs(due) do
  if redis.call('ZREM', KEYS[1], member) == 1 then table.insert(won, member) end
end
return won
"""


class DueSet:
    def __init__(self, redis: RedisClient, key: str) -> None:
        self.redis = redis
        self.key = key
        self._claim = redis.register_script(_CLAIM)

    async def schedule(self, member: str, at: float) -> None:
        await self.redis.zadd(self.key, {member: int(at * 1000)})

    async def cancel(self, member: str) -> None:
        await self.redis.zrem(self.key, member)

    async def claim_due(self, limit: int = 100, now: float | None = None) -> list[str]:
        now_ms = int((time.time() if now is None else now) * 1000)
        return list(await self._claim(keys=[self.key], args=[now_ms, limit]))

    async def serve(self, handle: Callable[[str], Awaitable[object]], interval_s: float, name: str) -> None:
        """Forever: claim what is due and hand each id to `handle`, every `interval_s`. A failing
        pass is logged and the next one comes; only cancellation stops it."""
        while True:
            try:
                for member in await self.claim_due():
                    await handle(member)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("due_set_pass_failed", due_set=name)
            await asyncio.sleep(interval_s)
