"""The control pipeline behind `POST /api/v1/ai-sessions/{call_id}/control`.

Order (docs/control-api.md explains each step):

1. authenticate: 401 for a missing, unknown, expired or revoked credential
2. a callback token of another call: 403 `token_call_mismatch` (judged before the call is looked at)
3. a tenant key needs `ai_sessions:control_admin`: 403 `missing_scope`
4. the call, in the credential's tenant: 404 `ai_session_not_found` for a call that does not exist
   and for another tenant's alike, so the answer says nothing about other tenants' calls
5. rate limit: 429 `rate_limited` with Retry-After
6. body: 400 `invalid_json` / `validation_error`, 422 `tts_not_supported` (BRIDGE_TTS=off),
   501 `verb_not_implemented`
7. idempotency: replay (`Idempotent-Replayed: true`), 422 `idempotency_key_reused`, or claim
8. state machine: 409 `ai_session_terminated`
9. the verb's handler

Redis round trips per verb: one before the handler (bridge.api.admission: the credential's and the
session's hashes, the rate limit and the idempotency claim in one script), one after it to store
the answer, sent while the answer goes out (on a busy bridge, the calls of either script made while
one is on the wire share the next pipeline: bridge.store.batch.PipelinedScript). The body is parsed
and validated before that script, because that has no side effect, but a bad body is reported only
after the credential has been judged and the rate limit has counted the request, so the order above
is what a client sees. Both scripts run through redis-py (EVALSHA via `register_script`) on a
client of the pipeline's own (bridge.store.redis.dedicated: its own pool, no per-command socket
timeout, no retries); each exchange is bounded here by one `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import pkgutil
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import ValidationError

from bridge.api import idempotency as idem
from bridge.api.admission import Admitter
from bridge.api.auth import Principal, bearer, credential_key, principal_from
from bridge.api.errors import ApiError, error_body, error_outcome, read_json_object, validation_error
from bridge.calls.sessions import Session, iso
from bridge.config import Settings
from bridge.media.tokens import TOKEN_PREFIX
from bridge.services import Services
from bridge.store.redis import RedisClient, StoreUnavailable, dedicated, is_cluster
from bridge.tts import speech_source
from bridge.verbs.base import REGISTRY, VerbContext, VerbSpec
from bridge.verbs.models import VERB_ADAPTER, VERB_NAMES

log = structlog.get_logger(__name__)

CONTROL_ADMIN_SCOPE = "ai_sessions:control_admin"
# Polling a key another request holds: start fast (most verbs take a few ms), back off to 50 ms.
_WAIT_FIRST_S = 0.002
_WAIT_MAX_S = 0.05
_NOT_VERB_MODULES = {"base", "models"}
# The bound on one Redis exchange (a script call, a connection set up included): what socket_timeout
# is for the rest of the bridge.
_REDIS_TIMEOUT_S = 5.0

T = TypeVar("T")

# Per request: the verb (once the body has parsed) and the answer's error code, for the metrics.
VERB_KEY = "control_verb"
CODE_KEY = "control_code"
UNKNOWN_VERB = "unknown"  # the body names no verb: nothing else to count it under
_VERB_NAMES = frozenset(VERB_NAMES)


def load_verbs() -> None:
    """Import every module of bridge.verbs so each `@verb` registers itself. A verb family that
    lands later (conference, supervision) is picked up without touching the pipeline."""
    import bridge.verbs as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in _NOT_VERB_MODULES and not module.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{module.name}")


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), default=str)


def _response(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text, content_type="application/json", headers=headers)


class ControlPipeline:
    def __init__(self, svc: Services) -> None:
        load_verbs()
        self.svc = svc
        self.metrics = svc.metrics
        settings = svc.settings
        self.rate_limit = settings.rate_limit_per_s
        self.long_ttl_s = settings.idempotency_ttl_s
        self.short_ttl_s = settings.idempotency_short_ttl_s
        # A verb is a few ESL commands, each bounded by the command timeout: the lease outlives
        # the slowest honest verb, so only a crashed owner ever loses its key to the lease.
        lease_s = settings.esl_command_timeout_s * 4 + 5
        self.wait_s = lease_s + 1
        self.redis: RedisClient = dedicated(svc.redis)
        svc.on_close(self.redis.aclose)
        self._stores: set[asyncio.Task[None]] = set()
        lease_ms = int(lease_s * 1000)
        self.idem = idem.IdempotencyStore(self.redis, rate_limit=self.rate_limit, lease_ms=lease_ms)
        # Closers run newest first: the answers being stored, then their batch, then the client.
        svc.on_close(self.idem.aclose)
        svc.on_close(self.drain)
        self.admitter = Admitter(
            self.redis, rate_limit=self.rate_limit, lease_ms=lease_ms, scope=CONTROL_ADMIN_SCOPE
        )
        svc.on_close(self.admitter.aclose)  # first: admissions on the wire, then the stores

    async def warm(self) -> None:
        """A cluster client learns the cluster's layout at its first command; several first commands
        at once (a burst of verbs) race redis-py's discovery, which can drop connections the
        others are using, and this client does not retry. So it learns it here, before serving."""
        if is_cluster(self.redis):
            await self.redis.initialize()

    async def handle(self, request: web.Request) -> web.Response:
        """One control request, counted and timed (bridge_control_verbs_total, by the status and
        code the client gets; an exception's are the ones bridge.api.errors answers it with)."""
        started = time.perf_counter()
        try:
            response = await self._handle(request)
        except Exception as exc:
            status, code = error_outcome(exc)
            elapsed = time.perf_counter() - started
            self.metrics.verb(request.get(VERB_KEY, UNKNOWN_VERB), status, code, elapsed)
            raise
        elapsed = time.perf_counter() - started
        code = response.get(CODE_KEY) or ("ok" if response.status < 400 else "error")
        self.metrics.verb(request.get(VERB_KEY, UNKNOWN_VERB), response.status, code, elapsed)
        return response

    async def _handle(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        request_id: str = request["request_id"]
        secret = bearer(request)
        credential_at = credential_key(secret)  # 401 for a malformed credential, before any I/O

        # Parse now (no side effect), report after the rate limit has counted the request.
        spec: VerbSpec | None = None
        cmd: Any = None
        key: str | None = None
        fp = ""
        problem: ApiError | None = None
        try:
            body = await read_json_object(request)
            event = body.get("event")
            if isinstance(event, str) and event in _VERB_NAMES:  # a name of the code's, not the client's
                request[VERB_KEY] = event
            cmd = self._parse(body, self.svc.settings)
            spec = REGISTRY.get(cmd.event)
            if spec is None:
                raise ApiError(
                    501, "verb_not_implemented", f"the {cmd.event} verb is not implemented by this bridge yet"
                )
            if spec.idempotency != "read":
                key = idem.check_key(request.headers.get(idem.HEADER))
            if key is not None:
                fp = idem.fingerprint(cmd.model_dump(mode="json"))
        except ApiError as exc:
            problem, key = exc, None

        admission = await self._bounded(
            self.admitter.admit(
                credential_key=credential_at,
                is_token=secret.startswith(TOKEN_PREFIX),
                call_id=call_id,
                request_id=request_id,
                key=key,
                fp=fp,
            )
        )
        gate = admission.gate
        try:
            principal = principal_from(secret, admission.credential)
            request["principal"] = principal
            stored = admission.session
            session = Session.from_hash(stored) if stored and "tenant_id" in stored else None
            session = self._check_reach(principal, call_id, session)
        except BaseException:
            if gate.kind == "claimed" and key is not None:
                await self._release(call_id, key, request_id)
            raise
        if gate.kind == "denied":
            # The script's coarse check refused what auth.py accepts (a clock edge on expiry):
            # auth.py is the judge, so admit the request the plain way.
            gate = await self._bounded(self.idem.gate(call_id, request_id, key=key, fp=fp))

        if gate.limited is not None:
            raise gate.limited.error(self.rate_limit)
        if problem is not None:
            raise problem
        assert spec is not None
        if gate.kind == "wait":
            gate = await self._wait_for_owner(call_id, request_id, key, fp)
        if gate.kind == "replay":
            replay = _response(gate.status, gate.body, {idem.REPLAYED_HEADER: "true"})
            replay[CODE_KEY] = "replayed"
            return replay
        if gate.kind == "mismatch":
            raise ApiError(
                422,
                "idempotency_key_reused",
                f"this {idem.HEADER} was already used on this call with a different body",
            )
        if gate.kind != "claimed":
            key = None  # nothing was claimed: nothing to store or release
        return await self._run(spec, cmd, VerbContext(self.svc, session, principal, request_id, key))

    # ------------------------------------------------------------ steps

    async def _bounded(self, awaitable: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(_REDIS_TIMEOUT_S):
                return await awaitable
        except TimeoutError as exc:
            raise StoreUnavailable("Redis did not answer in time") from exc

    @staticmethod
    def _check_reach(principal: Principal, call_id: str, session: Session | None) -> Session:
        """What the credential may reach first (it needs no lookup, so it reveals nothing), then
        the call: missing and another tenant's are the same 404."""
        if principal.kind == "callback_token":
            if principal.call_id != call_id:
                raise ApiError(403, "token_call_mismatch", "this callback token is bound to another call")
        elif not principal.has(CONTROL_ADMIN_SCOPE):
            raise ApiError(
                403,
                "missing_scope",
                f"Scope '{CONTROL_ADMIN_SCOPE}' required: tenant keys drive calls only when given it",
                extra={"scope": CONTROL_ADMIN_SCOPE},
            )
        if session is None or session.tenant_id != principal.tenant_id:
            raise ApiError(404, "ai_session_not_found", f"no AI session {call_id} in this tenant")
        return session

    @staticmethod
    def _parse(body: dict[str, Any], settings: Settings) -> Any:
        try:
            cmd = VERB_ADAPTER.validate_python(body)
        except ValidationError as exc:
            error = validation_error(exc)
            for item in error.extra["errors"]:
                # An unknown or missing verb is a fault of the `event` field; pydantic leaves loc empty.
                if item["type"] in ("union_tag_invalid", "union_tag_not_found"):
                    item["loc"] = ["event"]
                    error.message = f"event: {item['msg']}"
            raise error from exc
        # Through model_fields: pydantic's __getattr__ on a model without the field is slow.
        if "tts_text" in type(cmd).model_fields and cmd.tts_text is not None:
            # v1.1 (bridge.tts): 422 while BRIDGE_TTS=off; else the text and voice are checked
            # here, before the rate limit and the idempotency key, like any other field.
            speech_source(settings.tts, settings.tts_voice, cmd.tts_text, cmd.voice)
        return cmd

    async def _wait_for_owner(
        self, call_id: str, request_id: str, key: str | None, fp: str
    ) -> idem.GateResult:
        """Another request holds the key: wait for its answer (replayed), or for it to let go
        (then this request claims the key and runs the verb itself)."""
        deadline = time.monotonic() + self.wait_s
        delay = _WAIT_FIRST_S
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, _WAIT_MAX_S)
            gate = await self._bounded(self.idem.gate(call_id, request_id, key=key, fp=fp, check_rate=False))
            if gate.kind != "wait":
                return gate
            if time.monotonic() > deadline:
                raise ApiError(
                    409,
                    "idempotency_key_in_progress",
                    f"a request with this {idem.HEADER} is still running; retry later",
                )

    async def _run(self, spec: VerbSpec, cmd: Any, ctx: VerbContext) -> web.Response:
        key = ctx.idempotency_key
        settled = key is None
        try:
            headers: dict[str, str] | None = None
            code = "ok"
            try:
                if ctx.session.terminal and not spec.allow_terminal:
                    raise ApiError(
                        409,
                        "ai_session_terminated",
                        f"the AI session has ended (outcome {ctx.session.outcome}); stop sending verbs",
                        extra={"outcome": ctx.session.outcome},
                    )
                dispatched_at = iso(time.time())
                result = await spec.handler(ctx, cmd)
                status = 200
                text = _json(
                    {
                        "ok": True,
                        "call_id": ctx.call_id,
                        "dispatched_at": dispatched_at,
                        "result": result or {},
                    }
                )
            except ApiError as exc:
                if not idem.cacheable(exc.status):
                    raise
                status, headers, code = exc.status, exc.headers or None, exc.code
                text = _json(error_body(exc.code, exc.message, **exc.extra))
            log.debug("control_verb", call_id=ctx.call_id, verb=spec.name, status=status)
            if key is not None:
                ttl = self.short_ttl_s if spec.idempotency == "action" else self.long_ttl_s
                self._store_later(ctx.call_id, key, ctx.request_id, status, text, ttl)
                settled = True
            response = _response(status, text, headers)
            response[CODE_KEY] = code
            return response
        finally:
            if not settled:
                assert key is not None
                # Shielded: a cancelled request must still let go of its key.
                await asyncio.shield(self._release(ctx.call_id, key, ctx.request_id))

    def _store_later(self, call_id: str, key: str, owner: str, status: int, text: str, ttl_s: int) -> None:
        """Store the answer while aiohttp sends it: one Redis round trip off the verb's latency. The
        claim stays in place until the store lands, so a duplicate arriving in between waits for
        it and is answered with the replay, exactly as if the store had come first."""
        task = asyncio.get_running_loop().create_task(self._store(call_id, key, owner, status, text, ttl_s))
        self._stores.add(task)
        task.add_done_callback(self._stores.discard)

    async def _store(self, call_id: str, key: str, owner: str, status: int, text: str, ttl_s: int) -> None:
        try:
            await self._bounded(self.idem.store(call_id, key, owner, status=status, body=text, ttl_s=ttl_s))
        except Exception:
            # The claim then lapses with its lease, and a retry after that runs the verb again.
            log.exception("idempotency_store_failed", call_id=call_id)

    async def drain(self) -> None:
        """Shutdown: let answers being stored reach Redis."""
        if self._stores:
            await asyncio.wait(set(self._stores), timeout=_REDIS_TIMEOUT_S)

    async def _release(self, call_id: str, key: str, owner: str) -> None:
        try:
            await self._bounded(self.idem.release(call_id, key, owner))
        except Exception:
            log.exception("idempotency_release_failed", call_id=call_id)
