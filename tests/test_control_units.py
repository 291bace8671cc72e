"""The control machinery without HTTP: the rate-limit / idempotency script against a real Redis, the
transfer dialplan, and command sequences that undo themselves."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.api.errors import ApiError, SwitchError
from bridge.api.idempotency import IdempotencyStore, cacheable, check_key, fingerprint
from bridge.api.ratelimit import RateLimiter
from bridge.calls.sessions import Session
from bridge.config import Settings
from bridge.store import keys
from bridge.store.redis import connect
from bridge.verbs.call_control import transfer_dialplan
from bridge.verbs.common import Step, run_steps
from bridge.verbs.models import Transfer

# ---------------------------------------------------------------- rate limit


async def test_ten_per_second_then_429_with_a_wait(redis: aioredis.Redis):
    limiter = RateLimiter(redis, 10)
    results = [await limiter.hit("call-1", f"r{i}") for i in range(11)]
    assert results[:10] == [None] * 10
    limited = results[10]
    assert limited is not None and 0 < limited.retry_after_ms <= 1000
    assert limited.retry_after_s == 1
    error = limited.error(10)
    assert (error.status, error.code) == (429, "rate_limited")
    assert error.headers == {"Retry-After": "1"} and error.extra == {"retry_after_s": 1}
    assert await limiter.hit("call-2", "r0") is None  # per call


async def test_the_window_slides(redis: aioredis.Redis):
    limiter = RateLimiter(redis, 3)
    for i in range(3):
        assert await limiter.hit("c", f"a{i}") is None
    assert await limiter.hit("c", "a3") is not None
    await asyncio.sleep(1.05)
    assert await limiter.hit("c", "b0") is None


async def test_instances_on_one_redis_share_the_limit(redis_url: str, redis: aioredis.Redis):
    # Two bridge processes = two connections and two script objects; one window, one clock (Redis TIME).
    other = connect(redis_url)
    await other.ping()  # as a bridge does at startup (a cluster client learns the layout then)
    try:
        a, b = RateLimiter(redis, 10), RateLimiter(other, 10)
        hits = await asyncio.gather(*[(a if i % 2 else b).hit("shared", f"r{i}") for i in range(14)])
        assert sum(1 for h in hits if h is None) == 10
    finally:
        await other.aclose()


# ---------------------------------------------------------------- idempotency


@pytest.fixture
def store(redis: aioredis.Redis) -> IdempotencyStore:
    return IdempotencyStore(redis, rate_limit=1000, lease_ms=300)


async def test_claim_wait_store_replay(store: IdempotencyStore):
    assert (await store.gate("c", "req1", key="k", fp="f1")).kind == "claimed"
    assert (await store.gate("c", "req2", key="k", fp="f1")).kind == "wait"
    assert (await store.gate("c", "req3", key="k", fp="f2")).kind == "mismatch"
    assert await store.store("c", "k", "req1", status=200, body='{"ok":true}', ttl_s=60)
    replay = await store.gate("c", "req4", key="k", fp="f1")
    assert (replay.kind, replay.status, replay.body) == ("replay", 200, '{"ok":true}')
    assert (await store.gate("c", "req5", key="k", fp="f2")).kind == "mismatch"
    assert (await store.gate("other-call", "req6", key="k", fp="f2")).kind == "claimed"
    assert (await store.gate("c", "req7", key=None)).kind == "run"


async def test_exactly_one_of_many_concurrent_claims_wins(store: IdempotencyStore):
    kinds = await asyncio.gather(*[store.gate("c", f"r{i}", key="k", fp="f") for i in range(50)])
    assert sorted(k.kind for k in kinds).count("claimed") == 1


async def test_release_lets_a_retry_claim_and_only_the_owner_may_finish(store: IdempotencyStore):
    await store.gate("c", "owner", key="k", fp="f")
    assert not await store.release("c", "k", "someone-else")
    assert not await store.store("c", "k", "someone-else", status=200, body="{}", ttl_s=60)
    assert await store.release("c", "k", "owner")
    assert (await store.gate("c", "retry", key="k", fp="f")).kind == "claimed"


async def test_a_crashed_owner_loses_the_key_to_the_lease(store: IdempotencyStore):
    await store.gate("c", "crashed", key="k", fp="f")
    await asyncio.sleep(0.35)
    assert (await store.gate("c", "next", key="k", fp="f")).kind == "claimed"
    # The late owner cannot overwrite what the new owner will store.
    assert not await store.store("c", "k", "crashed", status=200, body="{}", ttl_s=60)


async def test_the_rate_limit_is_checked_before_the_key_is_claimed(redis: aioredis.Redis):
    store = IdempotencyStore(redis, rate_limit=1, lease_ms=1000)
    assert (await store.gate("c", "r1", key="a", fp="f")).kind == "claimed"
    limited = await store.gate("c", "r2", key="b", fp="f")
    assert limited.kind == "limited" and limited.limited is not None
    assert not await redis.exists(keys.idempotency("c", "b"))
    # Polling a held key does not count against the limit.
    assert (await store.gate("c", "r3", key="a", fp="f", check_rate=False)).kind == "wait"


def test_fingerprint_ignores_key_order_and_check_key():
    assert fingerprint({"a": 1, "b": {"x": 1, "y": 2}}) == fingerprint({"b": {"y": 2, "x": 1}, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert check_key(None) is None
    assert check_key("3f0d2c1e-8a4b-4c4e-9f1a-2b3c4d5e6f70") == "3f0d2c1e-8a4b-4c4e-9f1a-2b3c4d5e6f70"
    for bad in ("", "with space", "x" * 256, "é"):
        with pytest.raises(ApiError):
            check_key(bad)


def test_what_is_cached():
    assert all(cacheable(s) for s in (200, 400, 403, 404, 409, 422))
    assert not any(cacheable(s) for s in (401, 429, 500, 502, 503))


# ---------------------------------------------------------------- transfer dialplan


def _session(**fields: Any) -> Session:
    return Session(call_id="u-1", tenant_id="t", from_="+14155550100", to="+14155550199", **fields)


@pytest.mark.parametrize(
    ("destination_type", "destination", "expected"),
    [
        ("agent_queue", "tier1", "callcenter:tier1@cc.example"),
        ("agent_queue", "tier1@other", "callcenter:tier1@other"),
        (
            "e164",
            "+442079460958",
            "m:^:set:continue_on_fail=true^set:hangup_after_bridge=true^bridge:"
            "{origination_caller_id_number=+14155550100,ignore_early_media=true,originate_timeout=30}sofia/gateway/gw1/+442079460958^park",
        ),
        (
            "sip_uri",
            "sip:ag-7@pbx.example.com;transport=tcp",
            "m:^:set:continue_on_fail=true^set:hangup_after_bridge=true^bridge:"
            "{origination_caller_id_number=+14155550100,ignore_early_media=true,originate_timeout=30}"
            "sofia/prof/sip:ag-7@pbx.example.com;transport=tcp^park",
        ),
    ],
)
def test_transfer_dialplan(destination_type: str, destination: str, expected: str):
    settings = Settings().with_(gateway="gw1", sip_profile="prof", callcenter_domain="cc.example")
    cmd = Transfer(event="transfer", destination_type=destination_type, destination=destination)
    assert transfer_dialplan(settings, _session(), cmd) == f"'{expected}'"  # quoted: one argument


def test_transfer_shows_the_customer_and_omits_a_withheld_number():
    settings = Settings()
    cmd = Transfer(event="transfer", destination_type="e164", destination="+14155550123")
    outbound = transfer_dialplan(settings, _session(direction="outbound"), cmd)
    assert "origination_caller_id_number=+14155550199," in outbound
    withheld = transfer_dialplan(settings, Session(call_id="u", tenant_id="t", from_="anonymous"), cmd)
    assert "origination_caller_id_number" not in withheld
    assert "{ignore_early_media=true,originate_timeout=30}" in withheld


# ---------------------------------------------------------------- command sequences


class FakeSwitch:
    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.sent: list[str] = []

    async def api(self, command: str) -> str:
        self.sent.append(command)
        if command in self.failing:
            raise SwitchError(command, "-ERR nope")
        return "+OK"


async def test_a_failed_step_undoes_the_earlier_ones_newest_first():
    switch = FakeSwitch({"c"})
    steps = [Step("a", undo="undo a"), Step("b", undo="undo b"), Step("c", undo="undo c")]
    with pytest.raises(SwitchError):
        await run_steps(switch, steps)  # type: ignore[arg-type]
    assert switch.sent == ["a", "b", "c", "undo b", "undo a"]


async def test_an_optional_step_may_fail():
    switch = FakeSwitch({"b"})
    await run_steps(switch, [Step("a"), Step("b", required=False), Step("c")])  # type: ignore[arg-type]
    assert switch.sent == ["a", "b", "c"]
