"""Delivery end to end: real Redis, real HTTP receivers on 127.0.0.1, the SDK's own verifier."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yotel.webhook import InvalidSignature, verify

from bridge.api.app import create_app
from bridge.config import Settings
from bridge.services import Services
from bridge.store import keys
from bridge.store.redis import connect
from bridge.webhooks.deliveries import DeliveryQueue, now_ms
from bridge.webhooks.service import WebhookService
from tests.webhook_receiver import Received, Receiver, statuses

BASE = "/api/v1/webhooks"


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or predicate}")


# ---------------------------------------------------------------- the bridge side


class Bridge:
    """One bridge instance: Services on its own Redis connection, the HTTP API, a WebhookService."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services = Services(settings, connect(settings.redis_url or ""))
        self.client = TestClient(TestServer(create_app(self.services)))
        self.webhooks: WebhookService | None = None

    async def start(self, *, webhooks: bool = True, **service_kwargs: Any) -> Bridge:
        await self.client.start_server()
        if webhooks:
            await self.start_webhooks(**service_kwargs)
        return self

    async def start_webhooks(self, **service_kwargs: Any) -> WebhookService:
        service_kwargs.setdefault("poll_s", 0.05)
        self.webhooks = WebhookService(self.services, **service_kwargs)
        self.services.webhooks = self.webhooks
        await self.webhooks.start()
        return self.webhooks

    async def stop(self) -> None:
        if self.webhooks is not None:
            await self.webhooks.stop()
        await self.client.close()
        await self.services.close()

    async def key(self, tenant: str = "acme") -> str:
        clear, _ = await self.services.tenants.create_key(tenant, ["webhooks:manage"])
        return clear

    async def call(self, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
        resp = await self.client.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})
        return resp.status, (await resp.json() if resp.status != 204 else None)

    async def subscribe(
        self, url: str, event_types: list[str] | None = None, tenant: str = "acme", **extra: Any
    ) -> dict[str, Any]:
        status, sub = await self.call(
            "POST", BASE, await self.key(tenant), {"url": url, "event_types": event_types or ["*"], **extra}
        )
        assert status == 201, sub
        return sub

    async def deliveries(self, sub_id: str, tenant: str = "acme", query: str = "") -> list[dict[str, Any]]:
        status, body = await self.call("GET", f"{BASE}/{sub_id}/deliveries{query}", await self.key(tenant))
        assert status == 200, body
        return body["items"]


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.with_(webhook_retry_schedule_s=(0.1, 0.1, 0.1, 0.1, 0.1, 0.1), webhook_timeout_s=2.0)


@pytest.fixture
async def bridge(fast: Settings) -> AsyncIterator[Bridge]:
    b = Bridge(fast)
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


CALL_ENDED = {
    "call_id": "c-1",
    "campaign_id": None,
    "lead_id": None,
    "end_time": "2026-05-01T14:37:08.102Z",
    "hangup_cause": "NORMAL_CLEARING",
    "talk_duration_s": 42,
    "disposition": "interested",
    "notes": None,
    "recording_url": None,
}


# ---------------------------------------------------------------- tests


async def test_event_reaches_a_subscriber_with_envelope_and_headers_the_sdk_accepts(
    bridge: Bridge, receiver: Receiver
) -> None:
    sub = await bridge.subscribe(receiver.url, ["call.ended"])
    receiver.secrets["current"] = sub["signing_secret"]
    event = await bridge.services.outbox.emit("call.ended", "acme", CALL_ENDED)
    await wait_until(lambda: receiver.requests, what="the delivery")
    (req,) = receiver.requests
    assert req.json == {
        "event_id": event.event_id,
        "event_type": "call.ended",
        "timestamp": event.timestamp,
        "tenant_id": "acme",
        "data": CALL_ENDED,
    }
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-Yotel-Event"] == "call.ended"
    assert req.headers["X-Yotel-Event-Id"] == event.event_id
    assert req.headers["X-Yotel-Delivery"]
    assert req.headers["X-Yotel-Signature"].startswith("sha256=")
    assert "," not in req.headers["X-Yotel-Signature"]
    assert abs(int(req.headers["X-Yotel-Timestamp"]) - time.time()) < 5
    assert req.verified_with == {"current": True}
    with pytest.raises(InvalidSignature):
        verify(raw_body=req.body + b" ", headers=req.headers, signing_secret=sub["signing_secret"])
    with pytest.raises(InvalidSignature):
        verify(raw_body=req.body, headers=req.headers, signing_secret="whsec_someone_else")

    # The SDK's typed parser takes call.* events as they are.
    from yotel.webhook import verify_and_parse

    parsed = verify_and_parse(req.body, headers=req.headers, signing_secret=sub["signing_secret"])
    assert parsed.event_id == event.event_id and parsed.data["disposition"] == "interested"

    log = await _log_until(bridge, sub["id"], lambda log: len(log) == 1)
    entry = log[0]
    assert entry["state"] == "delivered" and entry["status_code"] == 200 and entry["attempt"] == 1
    assert entry["event_id"] == event.event_id and entry["event_type"] == "call.ended"
    assert entry["id"] == req.headers["X-Yotel-Delivery"]
    assert entry["delivered_at"] and entry["next_retry_at"] is None and entry["error"] is None
    assert isinstance(entry["duration_ms"], int)
    record = await bridge.services.redis.hgetall(keys.delivery(entry["delivery_id"]))
    assert record["state"] == "delivered" and "body" not in record
    assert 0 < await bridge.services.redis.ttl(keys.delivery(entry["delivery_id"])) <= keys.DELIVERED_TTL_S


async def test_three_500s_then_the_fourth_attempt_delivers_with_one_event_id(
    bridge: Bridge, receiver: Receiver
) -> None:
    receiver.behaviour = statuses(500, 500, 500)
    sub = await bridge.subscribe(receiver.url, ["call.*"])
    receiver.secrets["current"] = sub["signing_secret"]
    event = await bridge.services.outbox.emit("call.ended", "acme", CALL_ENDED)
    await wait_until(lambda: len(receiver.requests) >= 4, what="four attempts")
    await asyncio.sleep(0.4)  # a fifth attempt would show up within a retry step
    assert len(receiver.requests) == 4
    assert receiver.event_ids() == [event.event_id] * 4
    assert len({r.body for r in receiver.requests}) == 1  # byte-identical body on every attempt
    assert len({r.headers["X-Yotel-Delivery"] for r in receiver.requests}) == 4
    assert all(r.headers["X-Yotel-Event-Id"] == event.event_id for r in receiver.requests)
    assert all(r.verified_with == {"current": True} for r in receiver.requests)
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert all(g >= 0.08 for g in gaps), gaps  # 0.1 s steps, -10 % jitter at most

    log = await _log_until(bridge, sub["id"], lambda log: len(log) == 4)
    assert [e["attempt"] for e in log] == [4, 3, 2, 1]  # newest first
    assert [e["state"] for e in log] == ["delivered", "retrying", "retrying", "retrying"]
    assert [e["status_code"] for e in log] == [200, 500, 500, 500]
    assert all(e["next_retry_at"] for e in log[1:]) and log[0]["next_retry_at"] is None
    assert {e["event_id"] for e in log} == {event.event_id}
    _, fetched = await bridge.call("GET", f"{BASE}/{sub['id']}", await bridge.key())
    assert fetched["consecutive_failures"] == 0  # reset by the success


async def test_retries_run_out_then_the_delivery_is_dead(fast: Settings, receiver: Receiver) -> None:
    bridge = await Bridge(fast.with_(webhook_retry_schedule_s=(0.05, 0.05))).start()
    try:
        receiver.behaviour = statuses(*[503] * 10)
        sub = await bridge.subscribe(receiver.url)
        await bridge.services.outbox.emit("call.started", "acme", {"call_id": "c-1"})
        await wait_until(lambda: len(receiver.requests) >= 3, what="three attempts")
        await asyncio.sleep(0.3)
        assert len(receiver.requests) == 3  # the first try plus one per schedule step
        log = await _log_until(bridge, sub["id"], lambda log: len(log) == 3)
        assert [e["state"] for e in log] == ["dead", "retrying", "retrying"]
        assert log[0]["status_code"] == 503 and log[0]["next_retry_at"] is None
        _, fetched = await bridge.call("GET", f"{BASE}/{sub['id']}", await bridge.key())
        assert fetched["consecutive_failures"] == 3
        assert await bridge.services.redis.zcard(keys.webhook_retry_queue()) == 0
    finally:
        await bridge.stop()


async def test_4xx_is_dead_at_once_and_redeliver_sends_it_again(bridge: Bridge, receiver: Receiver) -> None:
    receiver.behaviour = statuses(404)
    sub = await bridge.subscribe(receiver.url, ["call.ended"])
    event = await bridge.services.outbox.emit("call.ended", "acme", CALL_ENDED)
    await wait_until(lambda: receiver.requests, what="the first attempt")
    await asyncio.sleep(0.4)  # four retry steps' worth: nothing else may arrive
    assert len(receiver.requests) == 1
    log = await _log_until(bridge, sub["id"], lambda log: len(log) == 1)
    assert log[0]["state"] == "dead" and log[0]["status_code"] == 404
    assert log[0]["next_retry_at"] is None
    delivery_id = log[0]["delivery_id"]
    redis = bridge.services.redis
    assert keys.DELIVERED_TTL_S < await redis.ttl(keys.delivery(delivery_id)) <= keys.DEAD_TTL_S

    key = await bridge.key()
    status, queued = await bridge.call("POST", f"{BASE}/{sub['id']}/deliveries/{delivery_id}/redeliver", key)
    assert status == 202, queued
    assert queued["id"] == delivery_id and queued["state"] == "pending"
    assert queued["event_id"] == event.event_id
    await wait_until(lambda: len(receiver.requests) == 2, what="the redelivery")
    assert receiver.event_ids() == [event.event_id, event.event_id]
    assert receiver.requests[0].body == receiver.requests[1].body
    log = await _log_until(bridge, sub["id"], lambda log: len(log) == 2)
    assert [e["state"] for e in log] == ["delivered", "dead"]
    assert log[0]["attempt"] == 2 and log[0]["delivery_id"] == delivery_id

    # Only a dead delivery can be queued again; someone else's is unknown.
    status, err = await bridge.call("POST", f"{BASE}/{sub['id']}/deliveries/{delivery_id}/redeliver", key)
    assert status == 409 and err["detail"]["code"] == "delivery_not_dead"
    other = await bridge.subscribe(receiver.url)
    status, err = await bridge.call("POST", f"{BASE}/{other['id']}/deliveries/{delivery_id}/redeliver", key)
    assert status == 404 and err["detail"]["code"] == "delivery_not_found"
    status, err = await bridge.call(
        "POST", f"{BASE}/{sub['id']}/deliveries/{delivery_id}/redeliver", await bridge.key("globex")
    )
    assert status == 404 and err["detail"]["code"] == "webhook_not_found"


@pytest.mark.parametrize("code", [408, 429, 502])
async def test_408_429_and_5xx_are_retried(bridge: Bridge, receiver: Receiver, code: int) -> None:
    receiver.behaviour = statuses(code)
    sub = await bridge.subscribe(receiver.url)
    await bridge.services.outbox.emit("call.started", "acme", {"call_id": "c-1"})
    await wait_until(lambda: len(receiver.requests) == 2, what="the retry")
    log = await _log_until(bridge, sub["id"], lambda log: len(log) == 2)
    assert [(e["state"], e["status_code"]) for e in log] == [("delivered", 200), ("retrying", code)]


async def test_connection_refused_is_retried(bridge: Bridge) -> None:
    # Take a free port, then close it: the first attempts find nobody listening.
    late = Receiver()
    await late.start()
    url = late.url
    await late.stop()
    sub = await bridge.subscribe(url)
    await bridge.services.outbox.emit("call.started", "acme", {"call_id": "c-1"})
    first = await _log_until(bridge, sub["id"], lambda log: log)
    assert first[-1]["state"] == "retrying"
    assert first[-1]["status_code"] is None and first[-1]["error"].startswith("connection_error")


async def test_rotation_signs_with_both_secrets_and_the_sdk_accepts_either(
    bridge: Bridge, receiver: Receiver
) -> None:
    sub = await bridge.subscribe(receiver.url)
    key = await bridge.key()
    _, rotated = await bridge.call("POST", f"{BASE}/{sub['id']}/rotate_secret", key)
    receiver.secrets.update(old=sub["signing_secret"], new=rotated["signing_secret"], stranger="whsec_x")
    await bridge.services.outbox.emit("call.started", "acme", {"call_id": "c-1"})
    await wait_until(lambda: receiver.requests, what="the delivery")
    (req,) = receiver.requests
    tokens = req.headers["X-Yotel-Signature"].split(",")
    assert len(tokens) == 2 and all(t.startswith("sha256=") for t in tokens)
    assert req.verified_with == {"old": True, "new": True, "stranger": False}


async def test_after_the_grace_window_only_the_new_secret_signs(fast: Settings, receiver: Receiver) -> None:
    bridge = await Bridge(fast.with_(webhook_secret_grace_s=0)).start()
    try:
        sub = await bridge.subscribe(receiver.url)
        _, rotated = await bridge.call("POST", f"{BASE}/{sub['id']}/rotate_secret", await bridge.key())
        assert rotated["previous_secret_expires_at"] is None
        receiver.secrets.update(old=sub["signing_secret"], new=rotated["signing_secret"])
        await bridge.services.outbox.emit("call.started", "acme", {"call_id": "c-1"})
        await wait_until(lambda: receiver.requests, what="the delivery")
        (req,) = receiver.requests
        assert "," not in req.headers["X-Yotel-Signature"]
        assert req.verified_with == {"old": False, "new": True}
    finally:
        await bridge.stop()


async def test_fan_out_follows_tenant_event_types_and_is_active(bridge: Bridge) -> None:
    receivers = {name: Receiver() for name in ("all", "ai", "calls", "other_tenant", "paused")}
    for r in receivers.values():
        await r.start()
    try:
        await bridge.subscribe(receivers["all"].url, ["*"])
        await bridge.subscribe(receivers["ai"].url, ["ai_session.*"])
        await bridge.subscribe(receivers["calls"].url, ["call.started", "call.ended"])
        await bridge.subscribe(receivers["other_tenant"].url, ["*"], tenant="globex")
        paused = await bridge.subscribe(receivers["paused"].url, ["*"], is_active=False)
        emit = bridge.services.outbox.emit
        started = await emit("call.started", "acme", {"call_id": "c-1"})
        ai = await emit("ai_session.started", "acme", {"call_id": "c-1", "ws_url": "wss://ai.example/ws"})
        conf = await emit("ai_session.conference_changed", "acme", {"call_id": "c-1", "participants": []})
        answered = await emit("call.answered", "acme", {"call_id": "c-1"})
        await wait_until(lambda: len(receivers["all"].requests) == 4, what="all four at '*'")
        await wait_until(lambda: len(receivers["ai"].requests) == 2, what="the ai_session events")
        await wait_until(lambda: len(receivers["calls"].requests) == 1, what="call.started")
        await asyncio.sleep(0.3)
        assert sorted(receivers["all"].event_ids()) == sorted(
            [started.event_id, ai.event_id, conf.event_id, answered.event_id]
        )
        assert sorted(receivers["ai"].event_ids()) == sorted([ai.event_id, conf.event_id])
        assert receivers["calls"].event_ids() == [started.event_id]
        assert receivers["other_tenant"].requests == []
        assert receivers["paused"].requests == []
        assert await bridge.deliveries(paused["id"]) == []  # not even parked: a paused endpoint gets nothing
    finally:
        for r in receivers.values():
            await r.stop()


async def test_a_killed_bridge_between_attempts_loses_nothing(fast: Settings, receiver: Receiver) -> None:
    settings = fast.with_(webhook_retry_schedule_s=(1.0, 1.0))
    first = await Bridge(settings).start()
    receiver.behaviour = statuses(500)
    sub = await first.subscribe(receiver.url)
    receiver.secrets["current"] = sub["signing_secret"]
    event = await first.services.outbox.emit("call.ended", "acme", CALL_ENDED)
    await wait_until(lambda: receiver.requests, what="the first attempt")
    await asyncio.sleep(0.1)
    await first.stop()  # the retry is due in ~1 s; nobody is running when it comes due

    # Events emitted while no bridge runs are not lost either.
    later = await Services(settings, connect(settings.redis_url or "")).outbox.emit(
        "call.started", "acme", {"call_id": "c-2"}
    )
    await asyncio.sleep(1.2)
    assert len(receiver.requests) == 1

    second = await Bridge(settings).start()
    try:
        await wait_until(lambda: len(receiver.requests) == 3, what="the retry and the new event")
        await asyncio.sleep(0.3)
        assert sorted(receiver.event_ids()) == sorted([event.event_id, event.event_id, later.event_id])
        assert all(r.verified_with == {"current": True} for r in receiver.requests)
        # X-Yotel-Timestamp is each attempt's send time; the body keeps the event's own timestamp.
        first_try, retry = (r for r in receiver.requests if r.json["event_id"] == event.event_id)
        assert int(retry.headers["X-Yotel-Timestamp"]) > int(first_try.headers["X-Yotel-Timestamp"])
        assert retry.json["timestamp"] == first_try.json["timestamp"] == event.timestamp
        log = await _log_until(second, sub["id"], lambda log: len(log) == 3)
        retried = [e for e in log if e["event_id"] == event.event_id]
        assert [(e["attempt"], e["state"]) for e in retried] == [(2, "delivered"), (1, "retrying")]
    finally:
        await second.stop()


async def test_outbox_entries_a_dead_consumer_never_acked_are_reclaimed(
    fast: Settings, redis: aioredis.Redis, receiver: Receiver
) -> None:
    bridge = Bridge(fast)
    await bridge.start(webhooks=False)
    try:
        sub = await bridge.subscribe(receiver.url)
        wh = WebhookService(bridge.services)
        await wh.ensure_group()
        event = await bridge.services.outbox.emit("call.started", "acme", {"call_id": "c-1"})
        # A consumer reads the entry and dies before recording the fan-out.
        read = await redis.xreadgroup(keys.OUTBOX_WEBHOOK_GROUP, "crashed", {keys.outbox(): ">"}, count=10)
        assert read and read[0][1][0][1]["event_id"] == event.event_id
        await bridge.start_webhooks(claim_idle_s=0.2)
        await wait_until(lambda: receiver.requests, what="the reclaimed event")
        await asyncio.sleep(0.3)
        assert receiver.event_ids() == [event.event_id]
        pending = await redis.xpending(keys.outbox(), keys.OUTBOX_WEBHOOK_GROUP)
        assert pending["pending"] == 0
        log = await _log_until(bridge, sub["id"], lambda log: log)
        assert log[0]["state"] == "delivered"
    finally:
        await bridge.stop()


async def test_two_instances_deliver_each_event_exactly_once(fast: Settings, receiver: Receiver) -> None:
    a = await Bridge(fast).start()
    b = await Bridge(fast).start()
    try:
        sub = await a.subscribe(receiver.url)
        receiver.secrets["current"] = sub["signing_secret"]
        emitted = [
            (await a.services.outbox.emit("call.started", "acme", {"call_id": f"c-{i}"})).event_id
            for i in range(50)
        ]
        await wait_until(lambda: len(receiver.requests) >= 50, what="fifty deliveries")
        await asyncio.sleep(0.5)
        assert len(receiver.requests) == 50
        assert sorted(receiver.event_ids()) == sorted(emitted)
        assert all(r.verified_with == {"current": True} for r in receiver.requests)
        log = await _log_until(a, sub["id"], lambda log: len(log) == 50, query="?limit=1000")
        assert {e["state"] for e in log} == {"delivered"}
    finally:
        await a.stop()
        await b.stop()


async def test_two_instances_share_retries_without_sending_an_attempt_twice(
    fast: Settings, receiver: Receiver
) -> None:
    a = await Bridge(fast).start()
    b = await Bridge(fast).start()
    try:
        receiver.behaviour = statuses(*[500] * 20)
        sub = await a.subscribe(receiver.url)
        emitted = [
            (await a.services.outbox.emit("call.started", "acme", {"call_id": f"c-{i}"})).event_id
            for i in range(10)
        ]
        await wait_until(lambda: len(receiver.requests) >= 30, what="ten deliveries' retries")
        await asyncio.sleep(0.5)
        # 20 failures spread over 10 events, then every event once more with success.
        assert len(receiver.requests) == 30
        assert sorted(set(receiver.event_ids())) == sorted(emitted)
        log = await _log_until(a, sub["id"], lambda log: len(log) == 30, query="?limit=1000")
        attempts = [(e["delivery_id"], e["attempt"]) for e in log]
        assert len(attempts) == len(set(attempts)) == 30  # no attempt number was used twice
    finally:
        await a.stop()
        await b.stop()


async def test_a_receiver_that_sleeps_past_the_timeout_is_retried_and_emit_stays_fast(
    fast: Settings, receiver: Receiver
) -> None:
    bridge = await Bridge(fast.with_(webhook_timeout_s=0.5)).start()
    release = asyncio.Event()

    async def hang_first(n: int, _r: Received) -> web.StreamResponse:
        if n == 0:
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(release.wait(), 5)
        return web.Response(status=200)

    receiver.behaviour = hang_first
    try:
        sub = await bridge.subscribe(receiver.url)
        first = await bridge.services.outbox.emit("call.started", "acme", {"call_id": "c-1"})
        await wait_until(lambda: receiver.in_flight == 1, what="the hanging request")
        # While a delivery is stuck on the receiver, emitting is still just an XADD.
        durations = []
        for i in range(20):
            t0 = time.perf_counter()
            await bridge.services.outbox.emit("call.answered", "acme", {"call_id": f"c-{i}"})
            durations.append(time.perf_counter() - t0)
        assert max(durations) < 0.05, durations
        await wait_until(lambda: len(receiver.requests) >= 22, what="the retry and the other events")
        log = await _log_until(
            bridge, sub["id"], lambda log: len(log) == 2, query=f"?event_id={first.event_id}"
        )
        assert [e["attempt"] for e in log] == [2, 1]
        assert log[1]["state"] == "retrying" and log[1]["status_code"] is None
        assert log[1]["error"].startswith("timeout")
        assert 450 <= log[1]["duration_ms"] < 2000
        assert log[0]["state"] == "delivered"
    finally:
        release.set()
        await bridge.stop()


async def test_a_slow_receiver_does_not_hold_up_other_subscriptions(fast: Settings) -> None:
    bridge = await Bridge(fast.with_(webhook_timeout_s=3.0)).start()
    slow, quick = Receiver(), Receiver()

    async def sleepy(_n: int, _r: Received) -> web.StreamResponse:
        await asyncio.sleep(2.0)
        return web.Response(status=200)

    slow.behaviour = sleepy
    await slow.start()
    await quick.start()
    try:
        await bridge.subscribe(slow.url, ["call.started"])
        await bridge.subscribe(quick.url, ["call.started"])
        for i in range(5):
            await bridge.services.outbox.emit("call.started", "acme", {"call_id": f"c-{i}"})
        t0 = time.monotonic()
        await wait_until(lambda: len(quick.requests) == 5, timeout=1.5, what="the quick receiver")
        assert time.monotonic() - t0 < 1.5
    finally:
        await slow.stop()
        await quick.stop()
        await bridge.stop()


async def test_events_marked_test_mode_go_to_test_url(bridge: Bridge) -> None:
    live, test = Receiver(), Receiver()
    await live.start()
    await test.start()
    try:
        await bridge.subscribe(live.url, ["*"], test_url=test.url)
        live_evt = await bridge.services.outbox.emit("call.started", "acme", {"call_id": "c-1"})
        test_evt = await bridge.services.outbox.emit(
            "call.started", "acme", {"call_id": "c-2", "livemode": False}
        )
        await wait_until(lambda: live.requests and test.requests, what="both deliveries")
        await asyncio.sleep(0.2)
        assert live.event_ids() == [live_evt.event_id]
        assert test.event_ids() == [test_evt.event_id]
    finally:
        await live.stop()
        await test.stop()


async def test_deleting_a_subscription_drops_its_pending_retries(bridge: Bridge, receiver: Receiver) -> None:
    receiver.behaviour = statuses(500)
    sub = await bridge.subscribe(receiver.url)
    await bridge.services.outbox.emit("call.started", "acme", {"call_id": "c-1"})
    await wait_until(lambda: receiver.requests, what="the first attempt")
    status, _ = await bridge.call("DELETE", f"{BASE}/{sub['id']}", await bridge.key())
    assert status == 204
    await asyncio.sleep(0.4)
    assert len(receiver.requests) == 1
    assert await bridge.services.redis.zcard(keys.webhook_retry_queue()) == 0


async def test_a_paused_subscription_parks_pending_retries_as_dead(
    bridge: Bridge, receiver: Receiver
) -> None:
    receiver.behaviour = statuses(500)
    sub = await bridge.subscribe(receiver.url)
    key = await bridge.key()
    await bridge.services.outbox.emit("call.started", "acme", {"call_id": "c-1"})
    await wait_until(lambda: receiver.requests, what="the first attempt")
    await bridge.call("PATCH", f"{BASE}/{sub['id']}", key, {"is_active": False})
    log = await _log_until(bridge, sub["id"], lambda log: log and log[0]["state"] == "dead")
    assert log[0]["error"] == "subscription_inactive"
    assert len(receiver.requests) == 1
    await bridge.call("PATCH", f"{BASE}/{sub['id']}", key, {"is_active": True})
    status, _ = await bridge.call(
        "POST", f"{BASE}/{sub['id']}/deliveries/{log[0]['delivery_id']}/redeliver", key
    )
    assert status == 202
    await wait_until(lambda: len(receiver.requests) == 2, what="the redelivery")


async def test_concurrent_claims_never_hand_one_delivery_to_two_senders(
    fast: Settings, redis: aioredis.Redis
) -> None:
    ids = [f"whdl_{i:04d}" for i in range(300)]
    await redis.zadd(keys.webhook_retry_queue(), dict.fromkeys(ids, 1))
    clients = [connect(fast.redis_url or "") for _ in range(8)]
    try:
        queues = [DeliveryQueue(c) for c in clients]

        async def drain(q: DeliveryQueue) -> list[str]:
            got: list[str] = []
            while batch := (await q.claim_due(now_ms(), now_ms() + 60_000, 7))[0]:
                got += batch
            return got

        claimed = [i for batch in await asyncio.gather(*(drain(q) for q in queues)) for i in batch]
        assert sorted(claimed) == ids  # each exactly once
    finally:
        for c in clients:
            await c.aclose()


async def test_recording_the_same_outbox_entry_twice_creates_one_delivery(
    fast: Settings, redis: aioredis.Redis
) -> None:
    services = Services(fast, redis)
    wh = WebhookService(services)
    await wh.ensure_group()
    sub = await wh.store.create("acme", url="https://a.example.com", event_types=("*",))
    event = await services.outbox.emit("call.started", "acme", {"call_id": "c-1"})
    entry_id = (await redis.xrange(keys.outbox()))[0][0]
    assert await wh.queue.fan_out(keys.OUTBOX_WEBHOOK_GROUP, entry_id, event, [sub], now_ms()) == 1
    assert await wh.queue.fan_out(keys.OUTBOX_WEBHOOK_GROUP, entry_id, event, [sub], now_ms()) == 0
    assert await redis.zcard(keys.webhook_retry_queue()) == 1


async def _log_until(
    bridge: Bridge,
    sub_id: str,
    predicate: Callable[[list[dict[str, Any]]], Any],
    *,
    query: str = "",
    timeout: float = 5.0,
) -> list[dict[str, Any]]:
    """The delivery log once it matches: the receiver sees a request before the bridge records it."""
    deadline = time.monotonic() + timeout
    log: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        log = await bridge.deliveries(sub_id, query=query)
        if predicate(log):
            return log
        await asyncio.sleep(0.02)
    raise AssertionError(f"delivery log never matched: {log}")


async def test_subscription_changes_made_through_another_bridge_reach_a_warm_sender(
    fast: Settings, receiver: Receiver
) -> None:
    """The sending bridge keeps subscriptions in memory between changes (SubscriptionCache): an
    edit made through another bridge's API must still govern the very next event."""
    api = await Bridge(fast.with_(webhook_secret_grace_s=0)).start(webhooks=False)
    sender = await Bridge(fast).start()
    moved = Receiver()
    await moved.start()
    try:
        key = await api.key()
        sub = await api.subscribe(receiver.url, ["call.started"])
        receiver.secrets["first"] = sub["signing_secret"]
        emit = sender.services.outbox.emit

        async def one(call_id: str) -> str:
            return (await emit("call.started", "acme", {"call_id": call_id})).event_id

        first = await one("c-1")  # warms both of the sender's caches
        await wait_until(lambda: len(receiver.requests) == 1, what="the first delivery")

        _, rotated = await api.call("POST", f"{BASE}/{sub['id']}/rotate_secret", key)
        receiver.secrets["rotated"] = rotated["signing_secret"]
        second = await one("c-2")
        await wait_until(lambda: len(receiver.requests) == 2, what="the delivery after rotation")
        assert receiver.requests[1].verified_with == {"first": False, "rotated": True}

        status, _ = await api.call("PATCH", f"{BASE}/{sub['id']}", key, {"url": moved.url})
        assert status == 200
        moved.secrets["rotated"] = rotated["signing_secret"]
        third = await one("c-3")
        await wait_until(lambda: moved.requests, what="the delivery to the new url")

        status, _ = await api.call("PATCH", f"{BASE}/{sub['id']}", key, {"event_types": ["call.ended"]})
        assert status == 200
        await one("c-4")
        status, _ = await api.call("PATCH", f"{BASE}/{sub['id']}", key, {"event_types": ["*"]})
        assert status == 200
        fifth = await one("c-5")
        await wait_until(lambda: len(moved.requests) == 2, what="the delivery after '*'")

        status, _ = await api.call("DELETE", f"{BASE}/{sub['id']}", key)
        assert status == 204
        await one("c-6")
        await asyncio.sleep(0.5)
        assert receiver.event_ids() == [first, second]
        assert moved.event_ids() == [third, fifth]
        assert all(r.verified_with == {"rotated": True} for r in moved.requests)
    finally:
        await moved.stop()
        await sender.stop()
        await api.stop()


async def test_non_ascii_event_data_arrives_intact_and_verifies(bridge: Bridge, receiver: Receiver) -> None:
    sub = await bridge.subscribe(receiver.url, ["call.ended"])
    receiver.secrets["current"] = sub["signing_secret"]
    data = {**CALL_ENDED, "notes": 'José said "no" 📞\u2028\x00 ${x}', "disposition": "über"}
    await bridge.services.outbox.emit("call.ended", "acme", data)
    await wait_until(lambda: receiver.requests, what="the delivery")
    (req,) = receiver.requests
    assert req.json["data"] == data
    assert req.verified_with == {"current": True}


async def test_a_receiver_s_cookie_is_not_sent_back(bridge: Bridge, receiver: Receiver) -> None:
    async def set_cookie(_n: int, _r: Received) -> web.StreamResponse:
        resp = web.Response(text="ok")
        resp.set_cookie("session", "s3cret")
        return resp

    receiver.behaviour = set_cookie
    # By name: aiohttp's default jar would keep a cookie for a host name, not for 127.0.0.1.
    await bridge.subscribe(receiver.url.replace("127.0.0.1", "localhost"), ["call.started"])
    for i in range(2):
        await bridge.services.outbox.emit("call.started", "acme", {"call_id": f"c-{i}"})
        await wait_until(lambda i=i: len(receiver.requests) == i + 1, what=f"delivery {i + 1}")
    assert all("Cookie" not in r.headers for r in receiver.requests)
