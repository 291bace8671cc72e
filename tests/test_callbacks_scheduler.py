"""Callbacks and the scheduler against the real Redis: exactly-once dialing across instances,
cancel/claim races, 429 retries, failures and dead claimers."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from bridge.api.errors import ApiError, SwitchUnavailable
from bridge.calls.scheduler import CallbackScheduler
from bridge.store import keys
from bridge.store.callbacks import Callback, CallbackStore
from bridge.store.crm import LeadStore
from bridge.store.redis import connect


def soon(seconds: float = 0.0) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def book(
    store: CallbackStore, n: int = 1, *, at: datetime | None = None, **kw: object
) -> list[Callback]:
    booked = []
    for i in range(n):
        cb, created = await store.create(
            tenant_id=kw.get("tenant_id", "acme"),  # type: ignore[arg-type]
            call_id=f"call-{i}",
            to=f"+1415555{i:04d}",
            from_="+14155550000",
            scheduled_at=at or soon(),
            lead_id=kw.get("lead_id"),  # type: ignore[arg-type]
        )
        assert created
        booked.append(cb)
    return booked


async def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_two_schedulers_on_one_redis_dial_each_due_callback_exactly_once(redis, redis_url):
    store = CallbackStore(redis)
    booked = await book(store, 20, at=soon(0.3))
    dialed: Counter[str] = Counter()
    by_instance: Counter[str] = Counter()

    def dialer(name: str):
        async def dial(cb: Callback) -> str:
            dialed[cb.id] += 1
            by_instance[name] += 1
            await asyncio.sleep(0.005)  # an originate takes a few round trips
            return f"call-of-{cb.id}"

        return dial

    clients = [connect(redis_url), connect(redis_url)]
    schedulers = [
        CallbackScheduler(CallbackStore(c), dialer(f"i{n}"), instance_id=f"i{n}", interval_s=0.01, batch=7)
        for n, c in enumerate(clients)
    ]
    tasks = [asyncio.create_task(s.run()) for s in schedulers]
    try:

        async def all_dialed() -> bool:
            return [(await store.get(cb.id)).state for cb in booked] == ["dialed"] * 20

        await wait_until(all_dialed)
        await asyncio.sleep(0.2)  # give a double dial the chance to happen
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in clients:
            await c.aclose()
    assert dialed == Counter({cb.id: 1 for cb in booked})
    assert sum(by_instance.values()) == 20
    assert set(by_instance) == {"i0", "i1"}  # both really competed for the work
    for cb in booked:
        stored = await store.get(cb.id)
        assert stored.result_call_id == f"call-of-{cb.id}" and stored.attempts == 1
        assert stored.dialed_at and stored.error_code is None
    assert await redis.zcard(keys.callbacks_due()) == 0
    assert await redis.zcard(keys.callbacks_dialing()) == 0


async def test_many_racing_ticks_claim_each_callback_once(redis, redis_url):
    store = CallbackStore(redis)
    booked = await book(store, 20)
    dialed: Counter[str] = Counter()

    async def dial(cb: Callback) -> str:
        dialed[cb.id] += 1
        return "x"

    clients = [connect(redis_url) for _ in range(5)]
    try:
        schedulers = [
            CallbackScheduler(CallbackStore(c), dial, instance_id=f"i{n}") for n, c in enumerate(clients)
        ]
        claimed = await asyncio.gather(*(s.tick() for s in schedulers for _ in range(3)))
    finally:
        for c in clients:
            await c.aclose()
    assert sum(claimed) == 20
    assert dialed == Counter({cb.id: 1 for cb in booked})


async def test_future_callbacks_wait_and_a_not_ready_scheduler_claims_nothing(redis):
    store = CallbackStore(redis)
    [later] = await book(store, at=soon(60))
    [now] = await book(store)
    calls: list[str] = []

    async def dial(cb: Callback) -> str:
        calls.append(cb.id)
        return "c1"

    offline = CallbackScheduler(store, dial, instance_id="a", ready=lambda: False)
    assert await offline.tick() == 0
    assert (await store.get(now.id)).state == "scheduled"
    online = CallbackScheduler(store, dial, instance_id="b")
    assert await online.tick() == 1
    assert calls == [now.id]
    assert (await store.get(later.id)).state == "scheduled"


async def test_cancel_and_claim_cannot_both_win(redis):
    store = CallbackStore(redis)
    booked = await book(store, 10)
    for cb in booked:
        results = await asyncio.gather(
            store.cancel(cb.id, "acme"), store.claim(cb.id, "me", int(time.time() * 1000) + 60_000)
        )
        cancelled, claimed = results[0] == "cancelled", results[1] is not None
        assert cancelled != claimed
        assert (await store.get(cb.id)).state == ("cancelled" if cancelled else "dialing")


async def test_cancel_rules(redis):
    store = CallbackStore(redis)
    [cb] = await book(store)
    assert await store.cancel(cb.id, "other") is None
    assert await store.cancel("cb_missing", "acme") is None
    assert await store.cancel(cb.id, "acme") == "cancelled"
    assert await store.cancel(cb.id, "acme") == "cancelled"
    assert await redis.zscore(keys.callbacks_due(), cb.id) is None
    [cb2] = await book(store)
    await store.claim(cb2.id, "me", int(time.time() * 1000) + 60_000)
    assert await store.cancel(cb2.id, "acme") == "dialing"


async def test_busy_agent_is_retried_then_dialed(redis):
    store = CallbackStore(redis)
    [cb] = await book(store)
    outcomes: list[Exception | str] = [
        ApiError(429, "max_concurrent_exceeded", "agent full", extra={"retry_after_s": 5}),
        "call-2",
    ]

    async def dial(_: Callback) -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    scheduler = CallbackScheduler(store, dial, instance_id="a", retry_delay_s=0.2)
    assert await scheduler.tick() == 1
    waiting = await store.get(cb.id)
    assert waiting.state == "scheduled" and waiting.attempts == 1
    assert waiting.error_code == "max_concurrent_exceeded" and waiting.next_attempt_at
    assert await scheduler.tick() == 0  # not due again yet
    await asyncio.sleep(0.25)
    assert await scheduler.tick() == 1
    done = await store.get(cb.id)
    assert done.state == "dialed" and done.result_call_id == "call-2" and done.attempts == 2
    assert done.error_code is None and done.public()["error"] is None


async def test_busy_past_the_retry_window_fails(redis):
    store = CallbackStore(redis)
    [cb] = await book(store)

    async def dial(_: Callback) -> str:
        raise ApiError(429, "max_concurrent_exceeded", "agent full")

    scheduler = CallbackScheduler(store, dial, instance_id="a", retry_window_s=0)
    await scheduler.tick()
    failed = await store.get(cb.id)
    assert failed.state == "failed" and failed.public()["error"]["code"] == "max_concurrent_exceeded"


async def test_originate_errors_fail_the_callback_with_the_error(redis):
    store = CallbackStore(redis)
    booked = await book(store, 3)
    errors = {
        booked[0].id: ApiError(424, "no_voice_agent_configured", "nothing resolves"),
        booked[1].id: SwitchUnavailable("no ESL connection to FreeSWITCH"),
        booked[2].id: RuntimeError("boom"),
    }

    async def dial(cb: Callback) -> str:
        raise errors[cb.id]

    await CallbackScheduler(store, dial, instance_id="a").tick()
    codes = [(await store.get(cb.id)).public()["error"]["code"] for cb in booked]
    assert codes == ["no_voice_agent_configured", "switch_unavailable", "internal_error"]
    assert [(await store.get(cb.id)).state for cb in booked] == ["failed"] * 3
    assert await redis.zcard(keys.callbacks_dialing()) == 0


async def test_a_claim_whose_claimer_died_fails_and_is_never_redialed(redis):
    store = CallbackStore(redis)
    [cb] = await book(store)
    now_ms = int(time.time() * 1000)
    assert await store.claim(cb.id, "dead-instance:1", now_ms + 1000) is not None
    calls: list[str] = []

    async def dial(c: Callback) -> str:
        calls.append(c.id)
        return "x"

    scheduler = CallbackScheduler(store, dial, instance_id="alive")
    await scheduler.tick(now_ms + 500)
    assert (await store.get(cb.id)).state == "dialing"
    await scheduler.tick(now_ms + 1500)
    lost = await store.get(cb.id)
    assert lost.state == "failed" and lost.error_code == "claim_lost" and calls == []
    # The slow claimer's real outcome still lands: the truth beats the guess.
    assert await store.mark_dialed(cb.id, "dead-instance:1", "late-call")
    assert (await store.get(cb.id)).state == "dialed"
    assert not await store.mark_dialed(cb.id, "someone-else", "other")


async def test_a_successful_dial_counts_an_attempt_on_the_lead(redis):
    leads = LeadStore(redis)
    await leads.put({"id": "lead_1", "tenant_id": "acme", "campaign_id": "cmp_1", "phone": "+14155550100"})
    store = CallbackStore(redis)
    await book(store, lead_id="lead_1")

    async def dial(_: Callback) -> str:
        return "c"

    await CallbackScheduler(store, dial, instance_id="a", leads=leads).tick()
    lead = await leads.get("lead_1", "acme")
    assert lead["attempts"] == 1 and lead["last_attempted_at"]


async def test_idempotency_key_books_once_per_call(redis: aioredis.Redis):
    store = CallbackStore(redis)
    args = dict(tenant_id="acme", to="+14155550100", from_="+14155550000", scheduled_at=soon(60))
    first, created1 = await store.create(call_id="c1", idempotency_key="k1", **args)
    again, created2 = await store.create(call_id="c1", idempotency_key="k1", **args)
    other_call, created3 = await store.create(call_id="c2", idempotency_key="k1", **args)
    unkeyed, created4 = await store.create(call_id="c1", **args)
    assert (created1, created2, created3, created4) == (True, False, True, True)
    assert again.id == first.id and len({first.id, other_call.id, unkeyed.id}) == 3
    assert [cb.id for cb in await store.list("acme", call_id="c1")] == [first.id, unkeyed.id]
    assert 0 < await redis.ttl(keys.callback_idempotency("c1", "k1")) <= 86400


async def test_list_filters_and_fences(redis):
    store = CallbackStore(redis)
    a, b = await book(store, 2, at=soon(60))
    [other] = await book(store, tenant_id="globex", at=soon(60))
    await store.cancel(a.id, "acme")
    assert [cb.id for cb in await store.list("acme")] == [a.id, b.id]
    assert [cb.id for cb in await store.list("acme", state="scheduled")] == [b.id]
    assert [cb.id for cb in await store.list("acme", state="cancelled")] == [a.id]
    assert [cb.id for cb in await store.list("acme", call_id=b.call_id)] == [b.id]
    assert [cb.id for cb in await store.list("globex")] == [other.id]
    assert await store.get(other.id, "acme") is None
    assert [cb.id for cb in await store.list("acme", limit=1)] == [a.id]
