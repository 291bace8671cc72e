"""Who is calling: a tenant API key (`yt_live_…`/`yt_test_…`) or a per-call callback token."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from bridge.api.errors import ApiError
from bridge.media.tokens import TOKEN_PREFIX, CallbackToken
from bridge.services import services_of
from bridge.store.tenants import LIVE_PREFIX, TEST_PREFIX

CALLBACK_TOKEN_SCOPE = "voice_agent:control"


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # "api_key" | "callback_token"
    tenant_id: str
    scopes: frozenset[str]
    key_id: str | None = None
    token: CallbackToken | None = None

    @property
    def call_id(self) -> str | None:
        return self.token.call_id if self.token else None

    def has(self, scope: str) -> bool:
        return scope in self.scopes


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, "missing_credentials", "send Authorization: Bearer <key or token>")
    return value.strip()


async def authenticate(request: web.Request) -> Principal:
    """Resolve the caller, once per request. Raises 401 for anything unknown or expired."""
    cached = request.get("principal")
    if cached is not None:
        return cached
    secret = bearer(request)
    svc = services_of(request)
    if secret.startswith(TOKEN_PREFIX):
        token = await svc.tokens.lookup(secret)
        if token is None:
            raise ApiError(401, "invalid_token", "unknown callback token")
        if token.revoked:
            raise ApiError(401, "token_revoked", "this callback token was revoked")
        if token.expired:
            raise ApiError(401, "token_expired", "this callback token has expired")
        principal = Principal(
            "callback_token", token.tenant_id, frozenset({CALLBACK_TOKEN_SCOPE}), token=token
        )
    elif secret.startswith((LIVE_PREFIX, TEST_PREFIX)):
        key = await svc.tenants.lookup_key(secret)
        if key is None:
            raise ApiError(401, "invalid_api_key", "Invalid API key")
        principal = Principal("api_key", key.tenant_id, key.scopes, key_id=key.id)
    else:
        raise ApiError(401, "invalid_api_key", "API key must start with yt_live_ or yt_test_")
    request["principal"] = principal
    return principal


async def require_key(request: web.Request, scope: str) -> Principal:
    """A tenant API key holding `scope` (callback tokens never reach these routes)."""
    principal = await authenticate(request)
    if principal.kind != "api_key":
        raise ApiError(403, "api_key_required", "this route takes a tenant API key")
    if not principal.has(scope):
        raise ApiError(403, "missing_scope", f"Scope '{scope}' required", extra={"scope": scope})
    return principal
