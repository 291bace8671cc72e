"""The subscription API: CRUD, the once-shown secret, scopes, URL rules, event-type patterns, rotation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from bridge.api.app import create_app
from bridge.config import Settings
from bridge.services import Services
from bridge.store import keys
from bridge.webhooks.subscriptions import Subscription, check_url, normalize_event_types

BASE = "/api/v1/webhooks"


class Api:
    def __init__(self, client: TestClient, services: Services) -> None:
        self.client = client
        self.services = services

    async def key(self, tenant: str = "acme", scopes: tuple[str, ...] = ("webhooks:manage",)) -> str:
        clear, _ = await self.services.tenants.create_key(tenant, list(scopes))
        return clear

    async def call(self, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
        resp = await self.client.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})
        data = await resp.json() if resp.status != 204 else None
        return resp.status, data


@pytest.fixture
async def api(settings: Settings, redis: aioredis.Redis) -> AsyncIterator[Api]:
    services = Services(settings, redis)
    client = TestClient(TestServer(create_app(services)))
    await client.start_server()
    try:
        yield Api(client, services)
    finally:
        await client.close()


async def test_create_shows_the_secret_once_and_crud_round_trips(api: Api) -> None:
    key = await api.key()
    status, created = await api.call(
        "POST",
        BASE,
        key,
        {"url": "https://hooks.example.com/yotel", "event_types": ["call.ended", "ai_session.*"]},
    )
    assert status == 201, created
    assert created["id"].startswith("wh_sub_") and len(created["id"]) == len("wh_sub_") + 26
    assert created["signing_secret"].startswith("whsec_") and len(created["signing_secret"]) > 30
    assert created["tenant_id"] == "acme"
    assert created["url"] == "https://hooks.example.com/yotel"
    assert created["test_url"] is None
    assert created["event_types"] == ["call.ended", "ai_session.*"]
    assert created["is_active"] is True
    assert created["consecutive_failures"] == 0
    assert created["created_at"].endswith("Z")

    status, fetched = await api.call("GET", f"{BASE}/{created['id']}", key)
    assert status == 200
    assert "signing_secret" not in fetched and created["signing_secret"] not in str(fetched)
    assert {k: v for k, v in created.items() if k != "signing_secret"} == fetched

    status, listed = await api.call("GET", BASE, key)
    assert status == 200 and [s["id"] for s in listed["items"]] == [created["id"]]
    assert created["signing_secret"] not in str(listed)

    status, _ = await api.call("DELETE", f"{BASE}/{created['id']}", key)
    assert status == 204
    status, err = await api.call("GET", f"{BASE}/{created['id']}", key)
    assert status == 404 and err["detail"]["code"] == "webhook_not_found"
    assert (await api.call("GET", BASE, key))[1] == {"items": []}
    assert not await api.services.redis.exists(keys.webhook(created["id"]))


async def test_other_tenants_subscriptions_are_invisible(api: Api) -> None:
    acme, globex = await api.key("acme"), await api.key("globex")
    _, sub = await api.call("POST", BASE, acme, {"url": "https://a.example.com", "event_types": ["*"]})
    for method in ("GET", "DELETE"):
        status, err = await api.call(method, f"{BASE}/{sub['id']}", globex)
        assert status == 404 and err["detail"]["code"] == "webhook_not_found"
    status, _ = await api.call("POST", f"{BASE}/{sub['id']}/rotate_secret", globex)
    assert status == 404
    assert (await api.call("GET", BASE, globex))[1] == {"items": []}
    assert (await api.call("GET", f"{BASE}/{sub['id']}", acme))[0] == 200


async def test_routes_need_a_key_with_webhooks_manage(api: Api) -> None:
    weak = await api.key(scopes=("calls:read",))
    for method, path in (
        ("POST", BASE),
        ("GET", BASE),
        ("GET", f"{BASE}/wh_sub_x"),
        ("DELETE", f"{BASE}/wh_sub_x"),
        ("POST", f"{BASE}/wh_sub_x/rotate_secret"),
        ("GET", f"{BASE}/wh_sub_x/deliveries"),
        ("POST", f"{BASE}/wh_sub_x/deliveries/whdl_x/redeliver"),
    ):
        status, err = await api.call(method, path, weak, {"url": "https://x.example", "event_types": ["*"]})
        assert status == 403, (method, path)
        assert err["detail"]["code"] == "missing_scope"
        assert err["detail"]["message"] == "Scope 'webhooks:manage' required"
    resp = await api.client.get(BASE)
    assert resp.status == 401


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/x",
        "http://127.0.0.1:9000/hook",
        "http://127.8.9.10/hook",
        "http://localhost:8080/hook",
        "http://[::1]:8080/hook",
    ],
)
async def test_https_or_loopback_http_is_accepted(api: Api, url: str) -> None:
    status, body = await api.call("POST", BASE, await api.key(), {"url": url, "event_types": ["*"]})
    assert status == 201, body
    assert body["url"] == url


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",
        "http://10.0.0.5/hook",
        "http://128.0.0.1/hook",
        "http://localhost.evil.com/hook",
        "ftp://127.0.0.1/x",
        "https://",
        "not a url",
        "",
    ],
)
async def test_plain_http_to_another_host_is_refused(api: Api, url: str) -> None:
    status, body = await api.call("POST", BASE, await api.key(), {"url": url, "event_types": ["*"]})
    assert status == 400, body
    assert body["detail"]["code"] in ("insecure_url", "invalid_url")
    assert (await api.call("GET", BASE, await api.key()))[1] == {"items": []}


async def test_test_url_follows_the_same_rule(api: Api) -> None:
    key = await api.key()
    status, body = await api.call(
        "POST",
        BASE,
        key,
        {"url": "https://a.example.com", "test_url": "http://example.com/t", "event_types": ["*"]},
    )
    assert status == 400 and body["detail"]["code"] == "insecure_url"
    assert "test_url" in body["detail"]["message"]
    status, body = await api.call(
        "POST",
        BASE,
        key,
        {"url": "https://a.example.com", "test_url": "http://127.0.0.1:1/t", "event_types": ["*"]},
    )
    assert status == 201 and body["test_url"] == "http://127.0.0.1:1/t"


def test_loopback_http_is_refused_when_the_setting_is_off() -> None:
    from bridge.webhooks.subscriptions import WebhookInputError

    with pytest.raises(WebhookInputError) as err:
        check_url("http://127.0.0.1:9000/x", allow_loopback_http=False)
    assert err.value.code == "insecure_url"
    assert check_url("https://127.0.0.1:9000/x", allow_loopback_http=False) == "https://127.0.0.1:9000/x"


async def test_loopback_http_is_refused_over_the_api_when_off(
    settings: Settings, redis: aioredis.Redis
) -> None:
    services = Services(settings.with_(webhook_allow_loopback_http=False), redis)
    async with TestClient(TestServer(create_app(services))) as client:
        key, _ = await services.tenants.create_key("acme", ["webhooks:manage"])
        resp = await client.post(
            BASE,
            json={"url": "http://127.0.0.1:9000/x", "event_types": ["*"]},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert resp.status == 400
        assert (await resp.json())["detail"]["code"] == "insecure_url"


@pytest.mark.parametrize(
    "event_types",
    [["call.exploded"], ["call.ended", "ai_session.nope"], ["ai_*"], ["ai_session.**"], ["nope.*"], []],
)
async def test_unknown_event_types_are_a_400(api: Api, event_types: list[str]) -> None:
    status, body = await api.call(
        "POST", BASE, await api.key(), {"url": "https://a.example.com", "event_types": event_types}
    )
    assert status == 400, body
    assert body["detail"]["code"] in ("unknown_event_type", "invalid_event_types")


async def test_bad_bodies_are_a_400_in_the_envelope(api: Api) -> None:
    key = await api.key()
    for body in ({"event_types": ["*"]}, {"url": "https://a.example.com"}, {"url": 5, "event_types": ["*"]}):
        status, err = await api.call("POST", BASE, key, body)
        assert status == 400 and err["detail"]["code"] == "validation_error", body
    status, err = await api.call(
        "POST", BASE, key, {"url": "https://a.example.com", "event_types": ["*"], "colour": "red"}
    )
    assert status == 400


def test_wildcards_match_their_family_only() -> None:
    def sub(*patterns: str) -> Subscription:
        return Subscription(
            id="wh_sub_x",
            tenant_id="t",
            url="https://x",
            test_url=None,
            event_types=normalize_event_types(list(patterns)),
            is_active=True,
            created_at="",
            secret="whsec_x",
        )

    ai = sub("ai_session.*")
    assert ai.matches("ai_session.started") and ai.matches("ai_session.conference_changed")
    assert not ai.matches("call.started") and not ai.matches("ai_sessionx.started")
    everything = sub("*")
    assert all(everything.matches(t) for t in ("call.ended", "lead.completed", "agent.logged_in"))
    exact = sub("call.ended", "call.ended", "lead.*")
    assert exact.event_types == ("call.ended", "lead.*")
    assert exact.matches("call.ended") and exact.matches("lead.completed")
    assert not exact.matches("call.started")


async def test_patch_changes_url_types_and_pauses(api: Api) -> None:
    key = await api.key()
    _, sub = await api.call("POST", BASE, key, {"url": "https://a.example.com", "event_types": ["*"]})
    status, patched = await api.call(
        "PATCH",
        f"{BASE}/{sub['id']}",
        key,
        {"url": "https://b.example.com", "event_types": ["call.*"], "is_active": False},
    )
    assert status == 200, patched
    assert patched["url"] == "https://b.example.com"
    assert patched["event_types"] == ["call.*"] and patched["is_active"] is False
    assert "signing_secret" not in patched
    status, err = await api.call("PATCH", f"{BASE}/{sub['id']}", key, {"url": "http://example.com"})
    assert status == 400 and err["detail"]["code"] == "insecure_url"
    status, err = await api.call("PATCH", f"{BASE}/{sub['id']}", key, {"event_types": ["x.y"]})
    assert status == 400 and err["detail"]["code"] == "unknown_event_type"
    assert (await api.call("GET", f"{BASE}/{sub['id']}", key))[1]["url"] == "https://b.example.com"


async def test_rotate_secret_returns_a_new_secret_once_and_keeps_a_grace_window(api: Api) -> None:
    key = await api.key()
    _, sub = await api.call("POST", BASE, key, {"url": "https://a.example.com", "event_types": ["*"]})
    assert sub["previous_secret_expires_at"] is None
    status, rotated = await api.call("POST", f"{BASE}/{sub['id']}/rotate_secret", key)
    assert status == 200, rotated
    assert rotated["id"] == sub["id"]
    assert rotated["signing_secret"].startswith("whsec_")
    assert rotated["signing_secret"] != sub["signing_secret"]
    assert rotated["previous_secret_expires_at"] is not None
    _, fetched = await api.call("GET", f"{BASE}/{sub['id']}", key)
    assert "signing_secret" not in fetched and rotated["signing_secret"] not in str(fetched)
    stored = await api.services.redis.hgetall(keys.webhook(sub["id"]))
    assert stored["secret"] == rotated["signing_secret"]
    assert stored["previous_secret"] == sub["signing_secret"]


async def test_deliveries_of_an_unknown_subscription_are_404(api: Api) -> None:
    key = await api.key()
    status, err = await api.call("GET", f"{BASE}/wh_sub_01ARZ3NDEKTSV4RRFFQ69G5FAV/deliveries", key)
    assert status == 404 and err["detail"]["code"] == "webhook_not_found"
    _, sub = await api.call("POST", BASE, key, {"url": "https://a.example.com", "event_types": ["*"]})
    status, body = await api.call("GET", f"{BASE}/{sub['id']}/deliveries", key)
    assert status == 200 and body == {"items": []}
    status, err = await api.call("GET", f"{BASE}/{sub['id']}/deliveries?limit=0", key)
    assert status == 400
    status, err = await api.call("POST", f"{BASE}/{sub['id']}/deliveries/whdl_nope/redeliver", key)
    assert status == 404 and err["detail"]["code"] == "delivery_not_found"
