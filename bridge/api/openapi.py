"""The OpenAPI 3.1 document of the bridge's HTTP API, generated from the pydantic models.

`OPERATIONS` is the table: one entry per route (method and path as aiohttp routes them), with its
credential, scope, request body model, success answer and every error status it can answer.
`build_document` turns the table into the document `GET /openapi.json` serves
(bridge/api/routes/openapi.py); schemas come from pydantic (`TypeAdapter.json_schema` with
`ref_template="#/components/schemas/{model}"`), so a model change changes the document.

What is where:

- request bodies: the models the routes validate with (the control verbs are one union,
  discriminated on `event`, exactly as bridge/verbs/models.py declares it);
- answers: a model where the route answers one (a voice agent, a control verb's envelope, the list
  wrappers), else an object schema that names no fields (sessions, campaigns, leads, webhooks, ...);
- errors: every status an operation can answer, each with the envelope
  `{"detail": {"code", "message", ...}}`; a 5xx also carries `detail.request_id`;
- security: `ApiKey` (a tenant API key, `yt_live_…`/`yt_test_…`) and `CallbackToken` (a call's
  `yt_cb_…` token, accepted only by the control endpoint), both HTTP bearer.

tests/test_openapi.py fails when a route of the app is missing here (or the other way round), and
tests/test_schemathesis.py runs schemathesis against the sandbox with this document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from bridge.api.body import MAX_BODY_BYTES, MAX_DEPTH
from bridge.api.idempotency import HEADER as IDEMPOTENCY_HEADER
from bridge.api.idempotency import REPLAYED_HEADER
from bridge.api.routes.ai_sessions import _RevokeBody as RevokeTokenBody
from bridge.api.routes.calls import CallCreate
from bridge.api.routes.leads import LeadBulkCreate
from bridge.api.routes.sandbox import SandboxCall
from bridge.api.routes.supervisors import STATUSES as ESCALATION_STATUSES
from bridge.api.routes.supervisors import _Claim as ClaimBody
from bridge.api.routes.voice_agents import _DefaultBody as DefaultAgentBody
from bridge.api.routes.webhooks import LOG_STATES
from bridge.api.routes.webhooks import _Create as WebhookCreate
from bridge.api.routes.webhooks import _Update as WebhookUpdate
from bridge.calls.voice_agents import VoiceAgent, VoiceAgentCreate, VoiceAgentUpdate
from bridge.store import keys
from bridge.store.callbacks import CALLBACK_STATES
from bridge.store.crm import CampaignCreate, CampaignUpdate, LeadCreate
from bridge.verbs.models import Verb

REF = "#/components/schemas/{model}"
OPENAPI_VERSION = "3.1.0"

# ---------------------------------------------------------------- answers that have no model elsewhere


class ErrorDetail(BaseModel):
    """`detail` of every error answer. Some codes add fields: `errors` (validation_error), `scope`
    (missing_scope), `retry_after_s` (429), `request_id` (every 5xx), `outcome`, `state`..."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(description="machine-readable, snake_case; the SDK branches on it")
    message: str
    request_id: str | None = Field(default=None, description="on a 5xx: quote it to support")


class Error(BaseModel):
    """The error envelope: `{"detail": {"code", "message", ...}}`."""

    detail: ErrorDetail


class EmbeddedRedisStatus(BaseModel):
    """The bridge's own redis-server (no REDIS_URL), as its supervisor sees it (docs/operations.md)."""

    state: Literal["starting", "running", "restarting", "stopping", "stopped"]
    restarts: int = Field(description="restarts since this bridge started it")
    last_exit: str | None = Field(description="how it last died, or why the last restart failed")


class Health(BaseModel):
    ok: bool
    redis: bool
    freeswitch: bool
    embedded_redis: EmbeddedRedisStatus | None = Field(
        default=None, description="present only when the bridge runs its own redis-server"
    )


class DefaultAgent(BaseModel):
    voice_agent_id: str | None


class CallCreated(BaseModel):
    call_id: str


class ControlAccepted(BaseModel):
    """A control verb's answer (docs/control-api.md): `result` is `{}` unless the verb returns data."""

    ok: Literal[True]
    call_id: str
    dispatched_at: str = Field(description="ISO-8601 UTC with milliseconds and Z")
    result: dict[str, Any]


class TokenRevoked(BaseModel):
    ok: Literal[True]
    jti: str
    revoked_until_ts: int


class RecordingInfo(BaseModel):
    """`GET …/recording` (the SDK's recordings.get_signed_url): metadata and a signed URL."""

    call_id: str
    url: str = Field(description="signed, expiring; needs no key (GET it, Range allowed)")
    expires_at: str = Field(description="ISO-8601 UTC with milliseconds and Z")
    expires_in_s: int
    format: Literal["audio/wav"]
    stereo: bool = Field(description="left the caller, right the AI")
    channels: int | None
    sample_rate_hz: int | None
    duration_s: int | None
    duration_ms: int | None
    size_bytes: int
    audio_url: str = Field(description="the same bytes for an API key with recordings:download")


class SandboxCallPlaced(BaseModel):
    call_id: str
    state: str
    outcome: str | None
    reason: str | None


class SandboxCallEnded(BaseModel):
    call_id: str
    state: str
    outcome: str | None


class VoiceAgentList(BaseModel):
    items: list[VoiceAgent]


class BulkLeadRow(BaseModel):
    index: int = Field(description="the row's position in `leads`")
    phone: str | None = Field(description="E.164 when valid, else as sent (null if not a string)")
    status: Literal["added", "invalid", "duplicate"]
    id: str | None = Field(description="the new lead's id; null unless added")
    reason: str | None = Field(
        description="null when added; `<field>: <message>` when invalid; duplicate_in_request or "
        "already_in_campaign when duplicate"
    )
    duplicate_of: str | None = Field(default=None, description="a duplicate's: the lead that has the phone")


class BulkLeadsAnswer(BaseModel):
    """The SDK's BulkLeadsResponse: total = valid + invalid + duplicates."""

    total: int
    valid: int = Field(description="rows added")
    invalid: int
    duplicates: int
    results: list[BulkLeadRow]


# A record this document does not spell out field by field (its route builds it as a dict).
RECORD: dict[str, Any] = {"type": "object"}


def items_of(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"items": {"type": "array", "items": schema}},
        "required": ["items"],
    }


# ---------------------------------------------------------------- the table


Auth = Literal["key", "key_or_token", "optional_key", "none"]
Schema = type[BaseModel] | TypeAdapter[Any] | dict[str, Any]


@dataclass(frozen=True)
class Param:
    name: str
    where: Literal["query", "header"]
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    auth: Auth
    ok: int
    answer: Schema | None
    errors: tuple[int, ...]
    scope: str | None = None
    body: Schema | None = None
    params: tuple[Param, ...] = ()
    answer_type: str = "application/json"
    description: str = ""
    path_params: dict[str, str] = field(default_factory=dict)
    # Answers Range requests: 206 with the same content as `ok` (the recording's bytes).
    partial: bool = False

    @property
    def operation_id(self) -> str:
        words = re.sub(r"[{}]", "", self.path).replace("/api/v1/", "/").strip("/")
        return self.method.lower() + "_" + re.sub(r"[^A-Za-z0-9]+", "_", words)


_ONE_STATUS = "|".join(ESCALATION_STATUSES)
LIMIT_1000 = Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100})
VERB_BODY: TypeAdapter[Any] = TypeAdapter(Verb)
AUDIO: dict[str, Any] = {"type": "string", "format": "binary"}
RANGE = Param(
    "Range", "header", {"type": "string", "pattern": r"^bytes=[0-9]{0,15}-[0-9]{0,15}$"},
    "one byte range, so a player can seek: 206 with Content-Range", False,
)

# Every route: a header that is not UTF-8 (400), aiohttp's refusals (400, 431). Every route that
# reads Redis: 503 while it is unreachable. Every route with a body: 413 over the size bound.
KEYED = (400, 401, 403, 431, 503)
WITH_BODY = (*KEYED, 413)

OPERATIONS: tuple[Operation, ...] = (
    # ------------------------------------------------------------ meta
    Operation(
        "GET", "/healthz", "Liveness and readiness (Redis, the FreeSWITCH connection)", "meta", "none",
        200, Health, (400, 431), description="503 with the same body when either is down.",
    ),
    Operation(
        "GET", "/openapi.json", "This document", "meta", "none", 200, {"type": "object"}, (400, 431),
    ),
    Operation(
        "GET", "/metrics", "Prometheus metrics of this process (docs/metrics.md)", "meta", "none", 200,
        {"type": "string"}, (400, 401, 431), answer_type="text/plain",
        description="No auth unless BRIDGE_METRICS_TOKEN is set; then `Authorization: Bearer <token>`, "
        "else 401.",
    ),
    Operation(
        "GET", "/console", "The supervisor console (HTML)", "supervisors", "none", 200,
        {"type": "string"}, (400, 431), answer_type="text/html",
    ),
    Operation(
        "GET", "/console/assets/{filename}", "The console's static files", "supervisors", "none", 200,
        {"type": "string"}, (400, 404, 431), answer_type="*/*",
        path_params={"filename": "console.css or console.js"},
    ),
    # ------------------------------------------------------------ voice agents
    Operation(
        "POST", "/api/v1/voice-agents", "Create a voice agent", "voice-agents", "key", 201, VoiceAgent,
        WITH_BODY, scope="voice_agents:write", body=VoiceAgentCreate,
    ),
    Operation(
        "GET", "/api/v1/voice-agents", "List voice agents", "voice-agents", "key", 200, VoiceAgentList,
        KEYED, scope="voice_agents:read",
        params=(Param("status", "query", {"type": "string", "enum": ["active", "paused", "archived"]}),),
    ),
    Operation(
        "GET", "/api/v1/voice-agents/default", "The tenant's default voice agent", "voice-agents", "key",
        200, DefaultAgent, KEYED, scope="voice_agents:read",
    ),
    Operation(
        "POST", "/api/v1/voice-agents/default", "Set (or clear, with null) the tenant's default voice agent",
        "voice-agents", "key", 200, DefaultAgent, (*WITH_BODY, 404, 409), scope="voice_agents:admin",
        body=DefaultAgentBody,
    ),
    Operation(
        "GET", "/api/v1/voice-agents/{va_id}", "Get a voice agent", "voice-agents", "key", 200, VoiceAgent,
        (*KEYED, 404), scope="voice_agents:read",
    ),
    Operation(
        "PATCH", "/api/v1/voice-agents/{va_id}", "Change a voice agent", "voice-agents", "key", 200,
        VoiceAgent, (*WITH_BODY, 404, 409), scope="voice_agents:write", body=VoiceAgentUpdate,
    ),
    Operation(
        "POST", "/api/v1/voice-agents/{va_id}/archive", "Archive a voice agent", "voice-agents", "key", 200,
        VoiceAgent, (*KEYED, 404), scope="voice_agents:write",
    ),
    Operation(
        "DELETE", "/api/v1/voice-agents/{va_id}", "Delete a voice agent no live call uses", "voice-agents",
        "key", 204, None, (*KEYED, 404, 409), scope="voice_agents:write",
    ),
    # ------------------------------------------------------------ calls and AI sessions
    Operation(
        "POST", "/api/v1/calls", "Place an outbound AI call", "calls", "key", 201, CallCreated,
        (*WITH_BODY, 404, 424, 429), scope="calls:write", body=CallCreate,
        description="503 while FreeSWITCH is not connected; the dial itself runs in the background.",
    ),
    Operation(
        "GET", "/api/v1/calls/{call_id}", "Get a call", "calls", "key", 200, RECORD, (*KEYED, 404),
        scope="calls:read",
    ),
    Operation(
        "GET", "/api/v1/calls/{call_id}/recording", "A call's recording: metadata and a signed URL",
        "recordings", "key", 200, RecordingInfo, (*KEYED, 404, 409), scope="calls:read",
        description="409 recording_not_ready until the recording has stopped (call.recording_ready); "
        "404 for a call with no recording, or whose file the bridge cannot read (docs/recordings.md).",
    ),
    Operation(
        "GET", "/api/v1/calls/{call_id}/recording/audio", "A call's recording: the WAV bytes", "recordings",
        "key", 200, AUDIO, (*KEYED, 404, 409, 416), scope="recordings:download", answer_type="audio/wav",
        params=(RANGE,), partial=True,
    ),
    Operation(
        "GET", "/recordings/{call_id}.wav", "A call's recording through a signed URL (no key)", "recordings",
        "none", 200, AUDIO, (400, 403, 404, 409, 416, 431, 503), answer_type="audio/wav",
        params=(
            Param("expires", "query", {"type": "string", "pattern": "^[0-9]{1,12}$"}, "unix seconds", True),
            Param("signature", "query", {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "HMAC-SHA256", True),
            RANGE,
        ),
        partial=True,
        description="The URL GET …/recording answers; 403 invalid_signature or url_expired.",
    ),
    Operation(
        "GET", "/api/v1/ai-sessions", "List AI sessions", "ai-sessions", "key", 200, items_of(RECORD), KEYED,
        scope="ai_sessions:read",
        params=(
            LIMIT_1000,
            Param("started_after", "query", {"type": "string", "format": "date-time"}),
            Param("voice_agent_id", "query", {"type": "string"}),
        ),
    ),
    Operation(
        "GET", "/api/v1/ai-sessions/{call_id}", "Get an AI session and its audit log", "ai-sessions", "key",
        200, RECORD, (*KEYED, 404), scope="ai_sessions:read",
    ),
    Operation(
        "POST", "/api/v1/ai-sessions/{call_id}/revoke_token", "Revoke a call's callback token",
        "ai-sessions", "key", 200, TokenRevoked, (*WITH_BODY, 404), scope="ai_sessions:control_admin",
        body=RevokeTokenBody,
    ),
    Operation(
        "POST", "/api/v1/ai-sessions/{call_id}/control", "Drive a live call with one of the 25 verbs",
        "control", "key_or_token", 200, ControlAccepted,
        (*WITH_BODY, 404, 409, 422, 429, 501, 502),
        scope="ai_sessions:control_admin (a tenant key) or the call's callback token",
        body=VERB_BODY,
        params=(
            Param(
                IDEMPOTENCY_HEADER, "header", {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
                "honoured by state-changing verbs; a replay answers the stored response",
            ),
        ),
        description="docs/control-api.md: the pipeline, each verb's result, idempotency and errors.",
    ),
    # ------------------------------------------------------------ webhooks
    Operation(
        "POST", "/api/v1/webhooks", "Subscribe a URL to events", "webhooks", "key", 201, RECORD, WITH_BODY,
        scope="webhooks:manage", body=WebhookCreate,
    ),
    Operation(
        "GET", "/api/v1/webhooks", "List webhook subscriptions", "webhooks", "key", 200, items_of(RECORD),
        KEYED, scope="webhooks:manage",
    ),
    Operation(
        "GET", "/api/v1/webhooks/{sub_id}", "Get a webhook subscription", "webhooks", "key", 200, RECORD,
        (*KEYED, 404), scope="webhooks:manage",
    ),
    Operation(
        "PATCH", "/api/v1/webhooks/{sub_id}", "Change a webhook subscription", "webhooks", "key", 200, RECORD,
        (*WITH_BODY, 404), scope="webhooks:manage", body=WebhookUpdate,
    ),
    Operation(
        "DELETE", "/api/v1/webhooks/{sub_id}", "Delete a webhook subscription", "webhooks", "key", 204, None,
        (*KEYED, 404), scope="webhooks:manage",
    ),
    Operation(
        "POST", "/api/v1/webhooks/{sub_id}/rotate_secret", "Rotate a subscription's signing secret",
        "webhooks", "key", 200, RECORD, (*KEYED, 404), scope="webhooks:manage",
    ),
    Operation(
        "GET", "/api/v1/webhooks/{sub_id}/deliveries", "A subscription's delivery log", "webhooks", "key",
        200, items_of(RECORD), (*KEYED, 404), scope="webhooks:manage",
        params=(
            Param(
                "limit", "query",
                {"type": "integer", "minimum": 1, "maximum": keys.DELIVERY_LOG_MAX, "default": 100},
            ),
            Param("state", "query", {"type": "string", "enum": list(LOG_STATES)}),
            Param("event_id", "query", {"type": "string"}),
            Param("delivery_id", "query", {"type": "string"}),
        ),
    ),
    Operation(
        "POST", "/api/v1/webhooks/{sub_id}/deliveries/{delivery_id}/redeliver", "Send a dead delivery again",
        "webhooks", "key", 202, RECORD, (*KEYED, 404, 409), scope="webhooks:manage",
    ),
    # ------------------------------------------------------------ campaigns and leads
    Operation(
        "POST", "/api/v1/campaigns", "Create a campaign", "campaigns", "key", 201, RECORD,
        (*WITH_BODY, 404, 409), scope="campaigns:write", body=CampaignCreate,
    ),
    Operation(
        "GET", "/api/v1/campaigns", "List campaigns (a bare array)", "campaigns", "key", 200,
        {"type": "array", "items": RECORD}, KEYED, scope="campaigns:read",
    ),
    Operation(
        "GET", "/api/v1/campaigns/{campaign_id}", "Get a campaign", "campaigns", "key", 200, RECORD,
        (*KEYED, 404), scope="campaigns:read",
    ),
    Operation(
        "PATCH", "/api/v1/campaigns/{campaign_id}", "Change a campaign (only the fields sent)", "campaigns",
        "key", 200, RECORD, (*WITH_BODY, 404, 409), scope="campaigns:write", body=CampaignUpdate,
    ),
    Operation(
        "DELETE", "/api/v1/campaigns/{campaign_id}", "Delete a campaign and its leads", "campaigns", "key",
        204, None, (*KEYED, 404), scope="campaigns:write",
    ),
    Operation(
        "POST", "/api/v1/campaigns/{campaign_id}/leads", "Add a lead to a campaign", "leads", "key", 201,
        RECORD, (*WITH_BODY, 404), scope="leads:write", body=LeadCreate,
    ),
    Operation(
        "POST", "/api/v1/campaigns/{campaign_id}/leads:bulk", "Add up to 500 leads (a result per row)",
        "leads", "key", 200, BulkLeadsAnswer, (*WITH_BODY, 404), scope="leads:write", body=LeadBulkCreate,
        description="A bad envelope is a 400; a bad lead is rejected on its own row (`invalid`, with "
        "`reason`), a phone the campaign has is `duplicate`; the rest are added in one atomic write.",
    ),
    Operation(
        "GET", "/api/v1/leads/{lead_id}", "Get a lead", "leads", "key", 200, RECORD, (*KEYED, 404),
        scope="leads:read",
    ),
    # ------------------------------------------------------------ callbacks
    Operation(
        "GET", "/api/v1/callbacks", "List booked callbacks", "callbacks", "key", 200, items_of(RECORD), KEYED,
        scope="callbacks:read",
        params=(
            Param("state", "query", {"type": "string", "enum": list(CALLBACK_STATES)}),
            Param("call_id", "query", {"type": "string"}),
            LIMIT_1000,
        ),
    ),
    Operation(
        "GET", "/api/v1/callbacks/{callback_id}", "Get a callback", "callbacks", "key", 200, RECORD,
        (*KEYED, 404), scope="callbacks:read",
    ),
    Operation(
        "DELETE", "/api/v1/callbacks/{callback_id}", "Cancel a scheduled callback", "callbacks", "key", 200,
        RECORD, (*KEYED, 404, 409), scope="callbacks:write",
    ),
    # ------------------------------------------------------------ supervisors and escalations
    Operation(
        "GET", "/api/v1/supervisors/ws", "A supervisor's WebSocket (docs/supervision.md)", "supervisors",
        "optional_key", 101, None, KEYED, scope="supervisors:act",
        description="The first text frame is a `hello` carrying the API key, or the upgrade request "
        "carries Authorization. A request that is not a WebSocket upgrade is a 400.",
    ),
    Operation(
        "GET", "/api/v1/supervisors", "The tenant's supervisors", "supervisors", "key", 200,
        items_of(RECORD), KEYED, scope="supervisors:act",
    ),
    Operation(
        "GET", "/api/v1/escalations", "List escalations", "escalations", "key", 200, items_of(RECORD), KEYED,
        scope="supervisors:act",
        params=(
            Param(
                "status", "query",
                {"type": "string", "pattern": rf"^({_ONE_STATUS})(,({_ONE_STATUS}))*$"},
                "comma-separated",
            ),
        ),
    ),
    Operation(
        "GET", "/api/v1/escalations/{esc_id}", "Get an escalation and its call's state", "escalations", "key",
        200, RECORD, (*KEYED, 404), scope="supervisors:act",
    ),
    Operation(
        "POST", "/api/v1/escalations/{esc_id}/claim", "Claim an escalation", "escalations", "key", 200,
        RECORD, (*WITH_BODY, 404, 409), scope="supervisors:act", body=ClaimBody,
    ),
    # ------------------------------------------------------------ sandbox only
    Operation(
        "POST", "/sandbox/calls", "Place a simulated inbound call", "sandbox", "key", 201, SandboxCallPlaced,
        (*WITH_BODY, 404, 504), scope="sandbox:admin", body=SandboxCall,
    ),
    Operation(
        "GET", "/sandbox/calls/{call_id}", "The simulated channel: state and the commands it received",
        "sandbox", "key", 200, RECORD, (*KEYED, 404), scope="sandbox:admin",
    ),
    Operation(
        "DELETE", "/sandbox/calls/{call_id}", "Hang a simulated call up (the caller's side)", "sandbox",
        "key", 200, SandboxCallEnded, (*KEYED, 404), scope="sandbox:admin",
        params=(Param("cause", "query", {"type": "string", "pattern": r"^[A-Z_]{1,64}$"}),),
    ),
)  # fmt: skip


# ---------------------------------------------------------------- building the document

# Components named after what they are, not after the route module's private class.
COMPONENT_NAMES: dict[int, str] = {
    id(VERB_BODY): "ControlVerb",
    id(RevokeTokenBody): "RevokeToken",
    id(DefaultAgentBody): "SetDefaultVoiceAgent",
    id(WebhookCreate): "WebhookCreate",
    id(WebhookUpdate): "WebhookUpdate",
    id(ClaimBody): "ClaimEscalation",
}

STATUS_TEXT = {
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    206: "Partial Content: the Range asked for",
    400: "Bad request: invalid_json, validation_error (the body, a header), a bad query value",
    401: "Unauthorized: missing_credentials, invalid_api_key, invalid_token, token_expired, token_revoked",
    403: "Forbidden: missing_scope, api_key_required, tenant_mismatch, token_call_mismatch",
    404: "Not found in this tenant",
    409: "Conflict with the resource's state",
    413: f"payload_too_large: the body is over {MAX_BODY_BYTES} bytes",
    416: "range_not_satisfiable: not one byte range within the file (Content-Range: bytes */size)",
    422: "Unprocessable: tts_not_supported (BRIDGE_TTS=off), idempotency_key_reused",
    424: "Failed dependency: no_voice_agent_configured, subprotocol_mismatch",
    429: "Too many requests: rate_limited, max_concurrent_exceeded (Retry-After)",
    431: "request_header_fields_too_large: the request line or a header over 8190 bytes, or over 128 headers",
    501: "verb_not_implemented",
    502: "FreeSWITCH refused the command (switch_command_failed)",
    503: "store_unavailable (Redis) or switch_unavailable (FreeSWITCH)",
    504: "Timed out",
}


class _Components:
    """components/schemas, filled from pydantic; a name never stands for two different schemas."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def _put(self, name: str, schema: dict[str, Any]) -> None:
        if self.schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas are both named {name}")

    def ref(self, source: Schema, mode: Literal["validation", "serialization"]) -> dict[str, Any]:
        """A `$ref` to the component for `source` (a model or a named TypeAdapter), or `source` itself
        when it is a plain schema."""
        if isinstance(source, dict):
            return source
        adapter = source if isinstance(source, TypeAdapter) else TypeAdapter(source)
        schema = adapter.json_schema(ref_template=REF, mode=mode)
        for name, sub in schema.pop("$defs", {}).items():
            self._put(name, sub)
        name = COMPONENT_NAMES.get(id(source)) or getattr(source, "__name__", None)
        if name is None:
            return schema
        schema["title"] = name
        self._put(name, schema)
        return {"$ref": REF.format(model=name)}


def _security(op: Operation) -> list[dict[str, list[str]]]:
    return {
        "key": [{"ApiKey": []}],
        "key_or_token": [{"ApiKey": []}, {"CallbackToken": []}],
        "optional_key": [{}, {"ApiKey": []}],
        "none": [],
    }[op.auth]


def _path_params(op: Operation) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1},
            **({"description": op.path_params[name]} if name in op.path_params else {}),
        }
        for name in re.findall(r"{(\w+)}", op.path)
    ]


def _param(p: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name, "in": p.where, "required": p.required, "schema": p.schema}
    if p.description:
        out["description"] = p.description
    return out


def _responses(op: Operation, components: _Components) -> dict[str, Any]:
    request_id = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}
    ok: dict[str, Any] = {"description": STATUS_TEXT[op.ok]}
    if op.ok != 101:
        ok["headers"] = dict(request_id)
    if op.answer is not None:
        ok["content"] = {op.answer_type: {"schema": components.ref(op.answer, "serialization")}}
    if op.path.endswith("/control"):
        ok["headers"][REPLAYED_HEADER] = {
            "description": "`true` when this is the stored answer to an earlier request with the same key",
            "schema": {"type": "string", "enum": ["true"]},
        }
    responses: dict[str, Any] = {str(op.ok): ok}
    if op.partial:
        partial = {**ok, "description": STATUS_TEXT[206], "headers": dict(ok["headers"])}
        partial["headers"]["Content-Range"] = {"required": True, "schema": {"type": "string"}}
        responses["206"] = partial
    error = {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}
    for status in sorted(set(op.errors)):
        answer: dict[str, Any] = {"description": STATUS_TEXT[status], "headers": dict(request_id)}
        if status == 429:
            answer["headers"]["Retry-After"] = {"required": True, "schema": {"type": "string"}}
        answer["content"] = error
        responses[str(status)] = answer
    if op.path == "/healthz":
        responses["503"] = {
            "description": "Redis or FreeSWITCH is down",
            "headers": dict(request_id),
            "content": {"application/json": {"schema": components.ref(Health, "serialization")}},
        }
    return responses


def _operation(op: Operation, components: _Components) -> dict[str, Any]:
    description = op.description
    if op.scope:
        description = f"Scope: `{op.scope}`. {description}".strip()
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "security": _security(op),
        "parameters": _path_params(op) + [_param(p) for p in op.params],
        "responses": _responses(op, components),
    }
    if description:
        out["description"] = description
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": components.ref(op.body, "validation")}},
        }
    return out


def build_document(routes: set[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The document; with `routes` ((METHOD, path) pairs as the app's router has them), only those
    operations (a bridge outside sandbox mode has no /sandbox routes)."""
    components = _Components()
    components.ref(Error, "serialization")
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        if routes is not None and (op.method, op.path) not in routes:
            continue
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, components)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "bridge",
            "version": "1",
            "summary": "Lets a voice AI drive FreeSWITCH calls; wire-compatible with the yotel SDK 0.2.1",
            "description": (
                'Errors: `{"detail": {"code", "message"}}` on every error status, `X-Request-Id` on '
                f"every answer. Request bodies: a JSON object of at most {MAX_BODY_BYTES} bytes, nested at "
                f"most {MAX_DEPTH} levels, every string valid Unicode (docs/control-api.md)."
            ),
        },
        "tags": [{"name": name} for name in dict.fromkeys(op.tag for op in OPERATIONS)],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "headers": {
                "X-Request-Id": {
                    "description": "the request's id (the client's own when it sent a plain one)",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1},
                }
            },
            "securitySchemes": {
                "ApiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "yt_live_… or yt_test_… (a tenant API key)",
                    "description": "A tenant API key; each operation names the scope it needs.",
                },
                "CallbackToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "yt_cb_<26-character ULID>",
                    "description": "The per-call token from the audio fork's metadata frame; valid for the "
                    "control endpoint of its own call only (scope voice_agent:control).",
                },
            },
        },
    }
