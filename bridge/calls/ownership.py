"""Which bridge handles which box's events, with several bridges on one Redis and no leader.

Every bridge keeps an ESL connection to every box (it sends the commands of the verbs it serves
over its own), but a box's events are handled by one bridge at a time: the holder of the box's
lease in Redis. Leases last `BRIDGE_BOX_LEASE_S` and are renewed three times per lease; a bridge
takes a free lease while it holds fewer than its share (boxes / live bridges, rounded up), or any
lease left free for two rounds, and gives one back while it holds more than its share, so a new
bridge gets work and a dead one's boxes are taken over within about one lease and two rounds.

With each renewal the holder writes the box's mark: the Core-UUID and the Event-Sequence up to
which it has finished every event. A bridge that does not hold a box keeps the box's recent events;
when it takes the lease it replays those after the mark, then reconciles with `show channels`
(bridge.calls.resync), so a bridge killed mid-call loses no event another bridge received.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Awaitable, Callable

import structlog
from redis.exceptions import RedisError

from bridge.store import keys
from bridge.store.redis import RedisClient

log = structlog.get_logger(__name__)

# KEYS[1] lease, KEYS[2] mark; ARGV holder, mark, ttl ms. 1 = renewed, 0 = not ours any more.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2]) end
return 1
"""

# KEYS[1] lease, KEYS[2] mark; ARGV holder, ttl ms. The mark when taken, false when held.
_ACQUIRE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[2]) or ''
"""

# KEYS[1] lease, KEYS[2] mark; ARGV holder, mark.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2]) end
redis.call('DEL', KEYS[1])
return 1
"""

OnAcquired = Callable[[str, str], Awaitable[None]]


class BoxOwnership:
    def __init__(
        self,
        redis: RedisClient,
        holder: str,
        boxes: list[str],
        *,
        lease_s: float,
        mark_of: Callable[[str], str],
        on_acquired: OnAcquired,
        on_lost: Callable[[str], None],
    ) -> None:
        self.redis = redis
        self.holder = holder
        self.lease_ms = max(100, int(lease_s * 1000))
        self.interval = lease_s / 3
        self.owned: set[str] = set()
        self._mark_of = mark_of
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self._free_rounds: dict[str, int] = {}
        self._acquired_at: dict[str, float] = {}
        self._last_release = 0.0
        # Bridges prefer different boxes first, so two starting at once do not race for one.
        start = int(hashlib.sha256(holder.encode()).hexdigest(), 16) % len(boxes)
        self.boxes = boxes[start:] + boxes[:start]
        self._renew = redis.register_script(_RENEW)
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)

    def owns(self, box: str) -> bool:
        return box in self.owned

    @property
    def _live_window_ms(self) -> int:
        # A live bridge beats every third of a lease: one that missed a whole lease is gone,
        # and so are its leases by then.
        return self.lease_ms + int(self.interval * 1000)

    async def alive(self, holder: str) -> bool:
        """Has that bridge beaten within the last lease?"""
        seen = await self.redis.zscore(keys.bridges(), holder)
        return seen is not None and seen >= time.time() * 1000 - self._live_window_ms

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except RedisError as exc:
                # Leases we cannot renew run out on their own; another bridge takes them.
                log.warning("box_leases_unreachable", error=str(exc))

    async def tick(self) -> None:
        now_ms = int(time.time() * 1000)
        await self.redis.zadd(keys.bridges(), {self.holder: now_ms})
        await self.redis.zremrangebyscore(keys.bridges(), 0, now_ms - 10 * self.lease_ms)
        for box in sorted(self.owned):
            mark = self._mark_of(box)
            ok = await self._renew(keys=self._keys(box), args=[self.holder, mark, self.lease_ms])
            if not ok:
                self.owned.discard(box)
                log.warning("box_lease_lost", box=box)
                self._on_lost(box)
        live = await self.redis.zcount(keys.bridges(), now_ms - self._live_window_ms, "+inf")
        share = math.ceil(len(self.boxes) / max(1, live))
        for box in self.boxes:
            if box in self.owned:
                continue
            if await self.redis.exists(keys.box_lease(box)):
                self._free_rounds.pop(box, None)
                continue
            rounds = self._free_rounds[box] = self._free_rounds.get(box, 0) + 1
            if len(self.owned) >= share and rounds < 2:
                continue
            mark = await self._acquire(keys=self._keys(box), args=[self.holder, self.lease_ms])
            if mark is None:
                continue
            self._free_rounds.pop(box, None)
            self.owned.add(box)
            self._acquired_at[box] = time.monotonic()
            log.info("box_lease_taken", box=box, mark=mark, share=share, live_bridges=live)
            await self._on_acquired(box, mark)
        # Handing back: one box at a time, never one taken within the last few leases (a box
        # taken over from a dead bridge is not given back while that bridge still looks alive).
        now = time.monotonic()
        settled = [b for b in self.owned if now - self._acquired_at.get(b, 0.0) > 3 * self.lease_ms / 1000]
        if len(self.owned) > share and settled and now - self._last_release > 2 * self.interval:
            box = sorted(settled)[-1]
            await self.release(box)
            self._last_release = time.monotonic()
            log.info("box_lease_handed_back", box=box, share=share, live_bridges=live)

    async def release(self, box: str) -> None:
        # Out of `owned` first: events from here on are kept for whoever takes the box next.
        self.owned.discard(box)
        self._on_lost(box)
        await self._release(keys=self._keys(box), args=[self.holder, self._mark_of(box)])

    async def release_all(self) -> None:
        for box in sorted(self.owned):
            try:
                await self.release(box)
            except RedisError as exc:
                log.warning("box_lease_not_released", box=box, error=str(exc))
        try:
            await self.redis.zrem(keys.bridges(), self.holder)
        except RedisError:
            pass

    @staticmethod
    def _keys(box: str) -> list[str]:
        return [keys.box_lease(box), keys.box_mark(box)]
