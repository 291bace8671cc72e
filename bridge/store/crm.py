"""Campaigns and leads as far as calls touch them: which voice agent a campaign pins, the lead a call
is about (its metadata goes into the audio fork's metadata frame), and what the AI writes back to it.

A campaign is one JSON document: it is written once and read often. A lead is a hash, with its
custom fields in a second hash, because the AI patches it field by field while the call runs and
several of those writes may be in flight at once: every change is one HSET (or a small Lua script
that also checks the tenant), so no write ever rewrites a field somebody else just set.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from redis.exceptions import WatchError
from ulid import ULID

from bridge.ids import VoiceAgentId
from bridge.store import keys
from bridge.store.redis import RedisClient, mget, multi

LEAD_STATUSES = (
    "pending",
    "dialing",
    "connected",
    "busy",
    "no_answer",
    "failed",
    "dnd",
    "completed",
    "callback",
)
# The statuses after which Yotel fires `lead.completed` (yotel-docs §5.3).
TERMINAL_LEAD_STATUSES = ("completed", "failed", "dnd")

# A misbehaving AI at 10 verbs/s for 30 minutes could add 18,000 fields; a lead is not a log.
MAX_CUSTOM_FIELDS = 500
MAX_CUSTOM_VALUE_BYTES = 16 * 1024

E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")
# Yotel's own rule for a bare number: Indian, 10 digits, an optional 0 or 91 in front.
INDIAN_NATIONAL_RE = re.compile(r"^(?:0|91)?([6-9][0-9]{9})$")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def now_iso(ts: float | None = None) -> str:
    moment = datetime.fromtimestamp(ts if ts is not None else time.time(), UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def normalize_phone(raw: str) -> str:
    """E.164 as given; a bare Indian national number the way Yotel reads it, as +91XXXXXXXXXX.

    Separators people paste (spaces, dashes, dots, parentheses) are dropped first."""
    compact = re.sub(r"[\s().-]", "", raw)
    if E164_RE.match(compact):
        return compact
    national = INDIAN_NATIONAL_RE.match(compact)
    if national:
        return f"+91{national.group(1)}"
    raise ValueError(
        "phone must be an E.164 number such as +14155550123 (any country), or a 10-digit Indian mobile number"
    )


# ---------------------------------------------------------------- campaigns


class CampaignCreate(BaseModel):
    """The body of `POST /api/v1/campaigns`: the SDK's CampaignCreate, which sends every field."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    dial_mode: Literal["preview", "progressive", "predictive"] = "progressive"
    description: str | None = Field(default=None, max_length=2000)
    caller_id: str | None = Field(default=None, max_length=32)
    max_attempts: int = Field(default=3, ge=1, le=20)
    retry_delay_mins: int = Field(default=60, ge=0, le=10_080)
    start_time: str = Field(default="09:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end_time: str = Field(default="21:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    timezone: str = "Asia/Kolkata"
    # The SDK's Literal has only these two; storing the docs' `connect_voice_agent` would make
    # `client.campaigns.get` fail to parse the campaign.
    post_answer_action: Literal["run_flow", "connect_agent"] = "connect_agent"
    max_concurrent: int = Field(default=10, ge=1, le=10_000)
    voice_agent_id: VoiceAgentId | None = None
    predictive_min_dial_ratio: float = Field(default=1.0, ge=1.0, le=10.0)
    predictive_max_dial_ratio: float = Field(default=3.0, ge=1.0, le=10.0)
    predictive_target_abandon: float = Field(default=0.025, ge=0.0, le=0.03)
    predictive_max_wait_s: int = Field(default=6, ge=1, le=60)
    predictive_wrap_up_s: int = Field(default=30, ge=0, le=600)

    @field_validator("caller_id")
    @classmethod
    def _caller_id(cls, value: str | None) -> str | None:
        return None if value is None else normalize_phone(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("timezone must be an IANA name such as Asia/Kolkata") from None
        return value

    @model_validator(mode="after")
    def _ratios(self) -> CampaignCreate:
        if self.predictive_max_dial_ratio < self.predictive_min_dial_ratio:
            raise ValueError("predictive_max_dial_ratio must not be below predictive_min_dial_ratio")
        return self


def _optional(model: type[BaseModel], name: str, doc: str) -> type[BaseModel]:
    """`model` with every field optional (default None, same constraints): a PATCH body."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        optional = FieldInfo.merge_field_infos(info, default=None)
        fields[field_name] = (info.annotation | None, optional)
    made = create_model(name, __config__=ConfigDict(extra="forbid", str_strip_whitespace=True), **fields)
    made.__doc__ = doc
    return made


# The body of `PATCH /api/v1/campaigns/{id}`: any CampaignCreate field; the campaign after the patch
# is validated as a whole by CampaignCreate (ratios, phone, timezone). `null` clears description,
# caller_id and voice_agent_id; `null` for a field that has a default is a validation error.
CampaignUpdate = _optional(
    CampaignCreate,
    "CampaignUpdate",
    "Any CampaignCreate field; the patched campaign is validated whole. null clears description, "
    "caller_id, voice_agent_id.",
)
CAMPAIGN_FIELDS = tuple(CampaignCreate.model_fields)


class CampaignNotFound(Exception):
    pass


class CampaignStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    async def create(self, tenant_id: str, spec: CampaignCreate) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": f"cmp_{ULID()}",
            "tenant_id": tenant_id,
            **spec.model_dump(),
            "status": "draft",
            "created_at": now_iso(),
            "started_at": None,
            "completed_at": None,
        }
        await self.put(doc)
        return doc

    async def get(self, campaign_id: str, tenant_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(keys.campaign(campaign_id))
        if raw is None:
            return None
        doc = json.loads(raw)
        return doc if doc.get("tenant_id") == tenant_id else None

    async def list(self, tenant_id: str) -> list[dict[str, Any]]:
        ids = sorted(await self.redis.smembers(keys.tenant_campaigns(tenant_id)))
        if not ids:
            return []
        raws = await mget(self.redis, [keys.campaign(i) for i in ids])
        docs = [json.loads(r) for r in raws if r]
        return [d for d in docs if d.get("tenant_id") == tenant_id]

    async def put(self, doc: dict[str, Any]) -> None:
        pipe = multi(self.redis)  # the campaign first; the tenant's set is another slot
        pipe.set(keys.campaign(doc["id"]), json.dumps(doc))
        pipe.sadd(keys.tenant_campaigns(doc["tenant_id"]), doc["id"])
        await pipe.execute()

    async def update(self, campaign_id: str, tenant_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Apply `patch` (CampaignCreate fields, already checked by CampaignUpdate) and return the
        campaign. The whole patched campaign is validated again (ValidationError). Optimistic: the
        document is WATCHed, so two PATCHes at once never lose one another's fields, and a DELETE
        racing a PATCH wins (CampaignNotFound) instead of the PATCH bringing the campaign back."""
        key = keys.campaign(campaign_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    doc = json.loads(raw) if raw else None
                    if doc is None or doc.get("tenant_id") != tenant_id:
                        raise CampaignNotFound(campaign_id)
                    merged = {name: doc.get(name) for name in CAMPAIGN_FIELDS} | patch
                    # None for an absent default-bearing field means "keep the default".
                    merged = {k: v for k, v in merged.items() if v is not None or k in patch}
                    spec = CampaignCreate.model_validate(merged)
                    updated = {**doc, **spec.model_dump(), "updated_at": now_iso()}
                    pipe.multi()
                    pipe.set(key, json.dumps(updated))
                    await pipe.execute()
                    return updated
                except WatchError:
                    continue

    async def delete(self, campaign_id: str, tenant_id: str) -> bool:
        """Delete the campaign and its leads (their custom fields and the phone index too).
        False when there is no such campaign in the tenant. The lead set is WATCHed, so a lead
        added while the delete runs is deleted with the rest, not left behind."""
        key = keys.campaign(campaign_id)
        leads_key = keys.campaign_leads(campaign_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key, leads_key)
                    raw = await pipe.get(key)
                    doc = json.loads(raw) if raw else None
                    if doc is None or doc.get("tenant_id") != tenant_id:
                        return False
                    lead_ids = await pipe.smembers(leads_key)
                    # The leads live in other slots ({lead:<id>}), so they go first, outside the
                    # MULTI; a stop here leaves the campaign with ids of missing leads (listing
                    # skips them), and a DELETE again finishes the job.
                    if lead_ids:  # (a cluster client splits a DEL by slot)
                        await self.redis.delete(
                            *[k for i in lead_ids for k in (keys.lead(i), keys.lead_custom_fields(i))]
                        )
                    pipe.multi()
                    pipe.delete(key, leads_key, keys.campaign_phones(campaign_id))
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        # The tenant's set is another slot; a reader skips an id whose campaign is gone.
        await self.redis.srem(keys.tenant_campaigns(tenant_id), campaign_id)
        return True


# ---------------------------------------------------------------- leads


class LeadCreate(BaseModel):
    """The body of `POST /api/v1/campaigns/{id}/leads`: the SDK's LeadInput (plus custom_fields)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    phone: str = Field(min_length=5, max_length=32)
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    metadata: dict[str, Any] | None = None
    custom_fields: dict[str, Any] | None = None

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        return normalize_phone(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not EMAIL_RE.match(value):
            raise ValueError("email must look like name@example.com")
        return value

    @field_validator("custom_fields")
    @classmethod
    def _custom_fields(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(value) > MAX_CUSTOM_FIELDS:
            raise ValueError(f"at most {MAX_CUSTOM_FIELDS} custom fields")
        return value


class LeadNotFound(Exception):
    pass


class TooManyCustomFields(Exception):
    pass


# Patches one custom field if the lead belongs to ARGV[1].
# 1 written; 0 no such lead in this tenant; -1 the field is new and the lead already has ARGV[4].
_SET_FIELD = """
if redis.call('HGET', KEYS[1], 'tenant_id') ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then
  return -1
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
return 1
"""

# Sets the status if the lead belongs to ARGV[1]. {0} no such lead; {1, previous status}.
_SET_STATUS = """
if redis.call('HGET', KEYS[1], 'tenant_id') ~= ARGV[1] then return {0} end
local previous = redis.call('HGET', KEYS[1], 'status') or ''
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'status_set_by', ARGV[3], 'updated_at', ARGV[4])
return {1, previous}
"""

# Counts a dial attempt on a lead of tenant ARGV[1]; returns the new count, or -1 for no such lead.
_ATTEMPT = """
if redis.call('HGET', KEYS[1], 'tenant_id') ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'last_attempted_at', ARGV[2], 'updated_at', ARGV[2])
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"""


def _lead_from_hash(raw: dict[str, str], custom: dict[str, str]) -> dict[str, Any]:
    return {
        "id": raw["id"],
        "tenant_id": raw["tenant_id"],
        "campaign_id": raw.get("campaign_id") or None,
        "phone": raw.get("phone", ""),
        "name": raw.get("name") or None,
        "email": raw.get("email") or None,
        "metadata": json.loads(raw["metadata"]) if raw.get("metadata") else {},
        "custom_fields": {name: json.loads(value) for name, value in sorted(custom.items())},
        "status": raw.get("status") or "pending",
        "status_set_by": raw.get("status_set_by") or None,
        "attempts": int(raw.get("attempts") or 0),
        "last_attempted_at": raw.get("last_attempted_at") or None,
        "created_at": raw.get("created_at") or None,
        "updated_at": raw.get("updated_at") or None,
    }


# leads:bulk, the campaign's side. KEYS: campaign, campaign:leads, campaign:phones (one slot:
# {campaign:<id>}). ARGV: per lead its id and phone. {0} when the campaign is gone (a DELETE won the
# race); else {1, per lead: '' when added, or the id of the lead that has its phone}. The leads'
# own hashes are other slots ({lead:<id>}): _bulk_write writes them before (with a TTL, so a write
# that stops halfway leaves nothing behind for good) and makes the added ones permanent after.
_BULK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local out = {1}
for i = 1, #ARGV, 2 do
  local id, phone = ARGV[i], ARGV[i + 1]
  if redis.call('HSETNX', KEYS[3], phone, id) == 1 then
    redis.call('SADD', KEYS[2], id)
    out[#out + 1] = ''
  else
    out[#out + 1] = redis.call('HGET', KEYS[3], phone)
  end
end
return out
"""

# How long a bulk-written lead hash lives before the campaign's script has taken it.
BULK_PENDING_TTL_S = 3600

MAX_BULK_LEADS = 500


def _new_lead(tenant_id: str, campaign_id: str, spec: LeadCreate) -> dict[str, Any]:
    now = now_iso()
    return {
        "id": f"lead_{ULID()}",
        "tenant_id": tenant_id,
        "campaign_id": campaign_id,
        "phone": spec.phone,
        "name": spec.name,
        "email": spec.email,
        "metadata": spec.metadata or {},
        "custom_fields": spec.custom_fields or {},
        "status": "pending",
        "status_set_by": None,
        "attempts": 0,
        "last_attempted_at": None,
        "created_at": now,
        "updated_at": now,
    }


def _lead_mapping(doc: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """A lead document as its two Redis hashes: the lead, and its custom fields (JSON values)."""
    now = now_iso()
    mapping = {
        "id": doc["id"],
        "tenant_id": doc["tenant_id"],
        "campaign_id": doc.get("campaign_id") or "",
        "phone": doc.get("phone") or "",
        "name": doc.get("name") or "",
        "email": doc.get("email") or "",
        "metadata": json.dumps(doc.get("metadata") or {}),
        "status": doc.get("status") or "pending",
        "status_set_by": doc.get("status_set_by") or "",
        "attempts": str(int(doc.get("attempts") or 0)),
        "last_attempted_at": doc.get("last_attempted_at") or "",
        "created_at": doc.get("created_at") or now,
        "updated_at": doc.get("updated_at") or now,
    }
    custom = {name: json.dumps(value) for name, value in (doc.get("custom_fields") or {}).items()}
    return mapping, custom


def _invalid_row(index: int, row: Any, exc: ValidationError) -> dict[str, Any]:
    """A leads:bulk row that failed LeadCreate: its phone as sent (when it sent a string), and why."""
    first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "lead"
    phone = row.get("phone") if isinstance(row, dict) else None
    return {
        "index": index,
        "phone": phone if isinstance(phone, str) else None,
        "status": "invalid",
        "id": None,
        "reason": f"{where}: {first.get('msg', 'invalid')}",
    }


class LeadStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._set_field = redis.register_script(_SET_FIELD)
        self._set_status = redis.register_script(_SET_STATUS)
        self._attempt = redis.register_script(_ATTEMPT)
        self._bulk = redis.register_script(_BULK)

    async def create(self, tenant_id: str, campaign_id: str, spec: LeadCreate) -> dict[str, Any]:
        doc = _new_lead(tenant_id, campaign_id, spec)
        await self.put(doc)
        return doc

    async def get(self, lead_id: str, tenant_id: str) -> dict[str, Any] | None:
        """The lead, or None when it does not exist or belongs to another tenant."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(keys.lead(lead_id))
        pipe.hgetall(keys.lead_custom_fields(lead_id))
        raw, custom = await pipe.execute()
        if not raw or raw.get("tenant_id") != tenant_id:
            return None
        return _lead_from_hash(raw, custom)

    async def put(self, doc: dict[str, Any]) -> None:
        """Write a whole lead (create, imports and tests); custom fields are replaced."""
        mapping, custom = _lead_mapping(doc)
        # The lead's hashes ({lead:<id>}) and the campaign's set and phone index ({campaign:<id>}).
        pipe = multi(self.redis)
        pipe.delete(keys.lead(doc["id"]), keys.lead_custom_fields(doc["id"]))
        pipe.hset(keys.lead(doc["id"]), mapping=mapping)
        if custom:
            pipe.hset(keys.lead_custom_fields(doc["id"]), mapping=custom)
        if doc.get("campaign_id"):
            pipe.sadd(keys.campaign_leads(doc["campaign_id"]), doc["id"])
            if doc.get("phone"):
                # The first lead with a phone stands for it when leads:bulk looks for duplicates.
                pipe.hsetnx(keys.campaign_phones(doc["campaign_id"]), doc["phone"], doc["id"])
        await pipe.execute()

    async def bulk_create(self, tenant_id: str, campaign_id: str, rows: list[Any]) -> dict[str, Any] | None:
        """`POST …/leads:bulk`: validate each row on its own (LeadCreate), then add every valid row
        whose phone the campaign does not have yet, in one Lua call (so the batch is written whole
        or not at all, and two batches at once cannot both add a phone). None when the campaign
        is gone by the time of the write. The answer is the SDK's BulkLeadsResponse."""
        results: list[dict[str, Any]] = []
        docs: list[dict[str, Any]] = []
        for index, row in enumerate(rows):
            try:
                spec = LeadCreate.model_validate(row)
            except ValidationError as exc:
                results.append(_invalid_row(index, row, exc))
                continue
            doc = _new_lead(tenant_id, campaign_id, spec)
            docs.append(doc)
            results.append(
                {"index": index, "phone": spec.phone, "status": "added", "id": doc["id"], "reason": None}
            )
        added = await self._bulk_write(campaign_id, docs)
        if added is None:
            return None
        batch_ids = {doc["id"] for doc in docs}
        by_id = {r["id"]: r for r in results if r["status"] == "added"}
        for doc, existing in zip(docs, added, strict=True):
            if existing is None:
                continue
            row = by_id[doc["id"]]
            row.update(
                status="duplicate",
                id=None,
                duplicate_of=existing,
                reason="duplicate_in_request" if existing in batch_ids else "already_in_campaign",
            )
        counts = {
            status: sum(1 for r in results if r["status"] == status)
            for status in ("added", "invalid", "duplicate")
        }
        return {
            "total": len(results),
            "valid": counts["added"],
            "invalid": counts["invalid"],
            "duplicates": counts["duplicate"],
            "results": results,
        }

    async def _bulk_write(self, campaign_id: str, docs: list[dict[str, Any]]) -> list[str | None] | None:
        """Per doc: None when it was written, else the id of the lead that already has its phone."""
        if not docs:
            return [] if await self.redis.exists(keys.campaign(campaign_id)) else None
        # 1. The lead hashes, not yet in the campaign (no reader finds them), with a TTL.
        pipe = multi(self.redis)
        for doc in docs:
            mapping, custom = _lead_mapping(doc)
            pipe.hset(keys.lead(doc["id"]), mapping=mapping)
            pipe.expire(keys.lead(doc["id"]), BULK_PENDING_TTL_S)
            if custom:
                pipe.hset(keys.lead_custom_fields(doc["id"]), mapping=custom)
                pipe.expire(keys.lead_custom_fields(doc["id"]), BULK_PENDING_TTL_S)
        await pipe.execute()
        # 2. The campaign takes them, in one script: two batches at once cannot both add a phone.
        args: list[Any] = []
        for doc in docs:
            args += [doc["id"], doc["phone"]]
        campaign_keys = [
            keys.campaign(campaign_id),
            keys.campaign_leads(campaign_id),
            keys.campaign_phones(campaign_id),
        ]
        reply = await self._bulk(keys=campaign_keys, args=args)
        gone = int(reply[0]) == 0
        taken = [False] * len(docs) if gone else [not existing for existing in reply[1:]]
        # 3. Added leads stay; duplicates (or every lead, when the campaign is gone) go.
        pipe = multi(self.redis)
        for doc, added in zip(docs, taken, strict=True):
            lead_keys = (keys.lead(doc["id"]), keys.lead_custom_fields(doc["id"]))
            for key in lead_keys:
                if added:
                    pipe.persist(key)
                else:
                    pipe.delete(key)
        await pipe.execute()
        if gone:
            return None
        return [str(existing) if existing else None for existing in reply[1:]]

    async def set_custom_field(self, lead_id: str, tenant_id: str, field: str, value: Any) -> None:
        """custom_fields[field] = value, one atomic HSET. Raises LeadNotFound, TooManyCustomFields."""
        encoded = json.dumps(value)
        result = int(
            await self._set_field(
                keys=[keys.lead(lead_id), keys.lead_custom_fields(lead_id)],
                args=[tenant_id, field, encoded, MAX_CUSTOM_FIELDS, now_iso()],
            )
        )
        if result == 0:
            raise LeadNotFound(lead_id)
        if result == -1:
            raise TooManyCustomFields(lead_id)

    async def set_status(self, lead_id: str, tenant_id: str, status: str, *, set_by: str) -> str:
        """Set the status; returns the previous one. Raises LeadNotFound."""
        if status not in LEAD_STATUSES:
            raise ValueError(f"not a lead status: {status}")
        reply = await self._set_status(keys=[keys.lead(lead_id)], args=[tenant_id, status, set_by, now_iso()])
        if int(reply[0]) == 0:
            raise LeadNotFound(lead_id)
        return str(reply[1])

    async def record_attempt(self, lead_id: str, tenant_id: str) -> int | None:
        """A dial of the lead: attempts += 1, last_attempted_at = now. None if the lead is gone."""
        result = int(await self._attempt(keys=[keys.lead(lead_id)], args=[tenant_id, now_iso()]))
        return None if result < 0 else result
