"""Who is calling: a tenant API key (`yt_live_…`/`yt_test_…`) or a per-call callback token."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from bridge.api.errors import ApiError
from bridge.media.tokens import TOKEN_PREFIX, CallbackToken
from bridge.services import services_of
from bridge.store import keys
from bridge.store.tenants import LIVE_PREFIX, TEST_PREFIX, ApiKey, hash_secret

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


def credential_key(secret: str) -> str:
    """The Redis hash holding what `secret` grants; 401 for something that is neither a callback
    token nor an API key. Split from `principal_from` so a hot path can fetch the hash in the same
    round trip as other reads (the control pipeline does)."""
    if secret.startswith(TOKEN_PREFIX):
        return keys.callback_token(hash_secret(secret))
    if secret.startswith((LIVE_PREFIX, TEST_PREFIX)):
        return keys.api_key(hash_secret(secret))
    raise ApiError(401, "invalid_api_key", "API key must start with yt_live_ or yt_test_")


def principal_from(secret: str, raw: dict[str, str]) -> Principal:
    """Judge a credential from its stored hash (empty if there is none): 401 unless it is live."""
    if secret.startswith(TOKEN_PREFIX):
        if not raw:
            raise ApiError(401, "invalid_token", "unknown callback token")
        token = CallbackToken.from_hash(secret, raw)
        if token.revoked:
            raise ApiError(401, "token_revoked", "this callback token was revoked")
        if token.expired:
            raise ApiError(401, "token_expired", "this callback token has expired")
        return Principal("callback_token", token.tenant_id, frozenset({CALLBACK_TOKEN_SCOPE}), token=token)
    if not raw or raw.get("revoked") == "1":
        raise ApiError(401, "invalid_api_key", "Invalid API key")
    key = ApiKey.from_hash(raw)
    return Principal("api_key", key.tenant_id, key.scopes, key_id=key.id)


async def authenticate(request: web.Request) -> Principal:
    """Resolve the caller, once per request. Raises 401 for anything unknown or expired."""
    cached = request.get("principal")
    if cached is not None:
        return cached
    secret = bearer(request)
    redis_key = credential_key(secret)
    principal = principal_from(secret, await services_of(request).redis.hgetall(redis_key))
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
