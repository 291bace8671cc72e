"""`/api/v1/webhooks`: a tenant's webhook subscriptions, their secrets and their delivery log.

Every route takes a tenant API key with `webhooks:manage`. A subscription of another tenant is a
404, never a 403, so ids cannot be probed across tenants.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from bridge.api.auth import Principal, require_key
from bridge.api.errors import ApiError, read_json_object, validation_error
from bridge.services import Services, services_of
from bridge.store import keys
from bridge.webhooks.deliveries import DeliveryQueue
from bridge.webhooks.subscriptions import (
    Subscription,
    WebhookInputError,
    WebhookStore,
    check_url,
    normalize_event_types,
)

SCOPE = "webhooks:manage"
LOG_STATES = ("delivered", "retrying", "dead")


class _Create(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    event_types: list[str]
    test_url: str | None = None
    is_active: bool = True


class _Update(BaseModel):
    """PATCH: absent fields stay as they are; `test_url: null` clears it."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    event_types: list[str] | None = None
    test_url: str | None = None
    is_active: bool | None = None


def _store(svc: Services) -> WebhookStore:
    # Built per request: the routes need Redis only, not a running WebhookService.
    return WebhookStore(svc.redis)


def _input_error(exc: WebhookInputError) -> ApiError:
    return ApiError(400, exc.code, exc.message, extra=exc.extra)


async def _subscription(request: web.Request, principal: Principal) -> Subscription:
    sub = await _store(services_of(request)).get(request.match_info["sub_id"], principal.tenant_id)
    if sub is None:
        raise ApiError(404, "webhook_not_found", "no such webhook subscription in this tenant")
    return sub


def _with_secret(sub: Subscription, secret: str) -> dict[str, Any]:
    return {**sub.public(), "signing_secret": secret}


async def create(request: web.Request) -> web.Response:
    principal = await require_key(request, SCOPE)
    svc = services_of(request)
    try:
        spec = _Create.model_validate(await read_json_object(request))
    except ValidationError as exc:
        raise validation_error(exc) from exc
    allow = svc.settings.webhook_allow_loopback_http
    try:
        url = check_url(spec.url, allow_loopback_http=allow)
        test_url = (
            check_url(spec.test_url, allow_loopback_http=allow, field="test_url") if spec.test_url else None
        )
        event_types = normalize_event_types(spec.event_types)
    except WebhookInputError as exc:
        raise _input_error(exc) from exc
    sub = await _store(svc).create(
        principal.tenant_id,
        url=url,
        event_types=event_types,
        test_url=test_url,
        is_active=spec.is_active,
    )
    return web.json_response(_with_secret(sub, sub.secret), status=201)


async def list_subscriptions(request: web.Request) -> web.Response:
    principal = await require_key(request, SCOPE)
    subs = await _store(services_of(request)).list(principal.tenant_id)
    return web.json_response({"items": [s.public() for s in subs]})


async def get(request: web.Request) -> web.Response:
    principal = await require_key(request, SCOPE)
    return web.json_response((await _subscription(request, principal)).public())


async def update(request: web.Request) -> web.Response:
    principal = await require_key(request, SCOPE)
    svc = services_of(request)
    sub = await _subscription(request, principal)
    body = await read_json_object(request)
    try:
        spec = _Update.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    allow = svc.settings.webhook_allow_loopback_http
    changes: dict[str, Any] = {}
    try:
        if spec.url is not None:
            changes["url"] = check_url(spec.url, allow_loopback_http=allow)
        if "test_url" in spec.model_fields_set:
            changes["test_url"] = (
                check_url(spec.test_url, allow_loopback_http=allow, field="test_url")
                if spec.test_url
                else None
            )
        if spec.event_types is not None:
            changes["event_types"] = normalize_event_types(spec.event_types)
    except WebhookInputError as exc:
        raise _input_error(exc) from exc
    if spec.is_active is not None:
        changes["is_active"] = spec.is_active
        if spec.is_active:
            # Re-enabling is the user saying the endpoint is fixed: start counting afresh.
            changes["consecutive_failures"] = 0
    updated = await _store(svc).update(sub, **changes)
    if updated is None:
        raise ApiError(404, "webhook_not_found", "no such webhook subscription in this tenant")
    return web.json_response(updated.public())


async def delete(request: web.Request) -> web.Response:
    principal = await require_key(request, SCOPE)
    sub = await _subscription(request, principal)
    await _store(services_of(request)).delete(sub)
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    principal = await require_key(request, SCOPE)
    svc = services_of(request)
    sub = await _subscription(request, principal)
    rotated = await _store(svc).rotate_secret(sub, svc.settings.webhook_secret_grace_s)
    if rotated is None:
        raise ApiError(404, "webhook_not_found", "no such webhook subscription in this tenant")
    new_sub, secret = rotated
    return web.json_response(_with_secret(new_sub, secret))


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= keys.DELIVERY_LOG_MAX:
        raise ApiError(400, "invalid_limit", f"limit must be an integer from 1 to {keys.DELIVERY_LOG_MAX}")
    return limit


async def list_deliveries(request: web.Request) -> web.Response:
    principal = await require_key(request, SCOPE)
    sub = await _subscription(request, principal)
    limit = _limit(request)
    state = request.query.get("state")
    if state is not None and state not in LOG_STATES:
        raise ApiError(400, "invalid_state", f"state must be one of {', '.join(LOG_STATES)}")
    event_id = request.query.get("event_id")
    delivery_id = request.query.get("delivery_id")
    entries = await DeliveryQueue(services_of(request).redis).log(sub.id)
    picked = [
        e
        for e in entries
        if (state is None or e.get("state") == state)
        and (event_id is None or e.get("event_id") == event_id)
        and (delivery_id is None or e.get("delivery_id") == delivery_id)
    ]
    return web.json_response({"items": picked[:limit]})


async def redeliver(request: web.Request) -> web.Response:
    principal = await require_key(request, SCOPE)
    svc = services_of(request)
    sub = await _subscription(request, principal)
    delivery_id = request.match_info["delivery_id"]
    queue = DeliveryQueue(svc.redis)
    result = await queue.redeliver(sub.id, delivery_id)
    if result < 0:
        raise ApiError(404, "delivery_not_found", "no such delivery for this subscription")
    if result == 0:
        raise ApiError(409, "delivery_not_dead", "only a dead delivery can be redelivered")
    delivery = await queue.load(delivery_id)
    if delivery is None:  # expired in the instant since; nothing will be sent
        raise ApiError(404, "delivery_not_found", "no such delivery for this subscription")
    return web.json_response(delivery.public(), status=202)


def setup(app: web.Application) -> None:
    base = "/api/v1/webhooks"
    app.router.add_post(base, create)
    app.router.add_get(base, list_subscriptions)
    app.router.add_get(base + "/{sub_id}", get)
    app.router.add_patch(base + "/{sub_id}", update)
    app.router.add_delete(base + "/{sub_id}", delete)
    app.router.add_post(base + "/{sub_id}/rotate_secret", rotate_secret)
    app.router.add_get(base + "/{sub_id}/deliveries", list_deliveries)
    app.router.add_post(base + "/{sub_id}/deliveries/{delivery_id}/redeliver", redeliver)
