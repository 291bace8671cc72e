"""Every Redis key the bridge uses, and its lifetime, in one place.

Key builders are plain functions so a grep for a key's prefix finds its only definition.
Values are strings (decode_responses=True); JSON documents are stored as strings.

Slots (Redis Cluster, docs/redis-cluster.md). A key's hash tag, the part in `{...}`, decides its
slot: keys with the same tag live on the same master, and a Lua script or MULTI may only touch
keys of one slot. The names below leave out PREFIX ("bridge:"). Every key is one of:

- **owned**: `{<owner>:<id>}:<what>`, tagged with the entity it belongs to, so a script that
  works on one entity finds all its keys in one slot. Owners: `call` (a call's session, logs,
  tokens, owner lease, rate window, idempotency records, escalation pointer, monitor links: the
  control endpoint's admission script touches the session, rate window and idempotency record
  together), `tenant` (the tenant and every per-tenant index, its supervisors), `va`, `campaign`
  (the campaign, its lead set and phone index: leads:bulk), `lead`, `conference`, `escalation`,
  `apikey`, `cbtoken`, `box` (a FreeSWITCH box's lease and mark: the lease scripts).
- **grouped**: `{webhooks}:...` (the outbox stream, the retry queue, every delivery and every
  subscription with its log) and `{callbacks}:...` (the due and dialing queues, every callback,
  the booking idempotency keys). Their scripts move an item between a queue and its record
  atomically, so each family is one slot, on one master, on purpose. They are queues of small
  records; a bridge fleet's webhook and callback traffic is bounded by that one master.
- **single**: a global key with no tag (`tenants`, `sessions:live`, `token_refresh:due`,
  `session:deadlines`, `recordings:url_secret`, `bridges`, `keys:version`, the `supervision`
  channel), in a slot of its own. No script touches a single key together with any other key.

What spans slots (an entity and its tenant's index, a session and `sessions:live`) is written in
steps that are each safe alone (bridge.store.redis.multi; MULTI/EXEC on a plain Redis).

Adding a key: a builder here plus its line in the table of its section. Tag it with its owner
(`{call:<id>}`, `{tenant:<id>}`, ... or a new `{<owner>:<id>}`); a global key gets no tag (a single
key; e.g. a lease named `leases:<what>`). If a script must touch it with other keys, every one of
them has the same tag, and every key a script touches is passed in KEYS (never built in Lua).
tests/test_redis_cluster.py checks the tags of every builder.
"""

from __future__ import annotations

PREFIX = "bridge:"
# The tags of the two grouped families (see above).
WEBHOOKS = "{webhooks}"
CALLBACKS = "{callbacks}"

# ---------------------------------------------------------------- the key names themselves
# keys:version               string "2": the keys have their hash-tagged names (bridge.store.migrate
#                             renamed those of an older bridge, once)                       no TTL


def keys_version() -> str:
    return f"{PREFIX}keys:version"


# ---------------------------------------------------------------- tenants and API keys
# {tenant:<tid>}              hash  id, name, default_voice_agent_id, created_at      no TTL
# tenants                     set   of tenant ids                                     no TTL
# {apikey:<sha256(key)>}      hash  id, tenant_id, scopes (json list), prefix, created_at, revoked
# {tenant:<tid>}:apikeys      set   of key hashes


def tenant(tenant_id: str) -> str:
    return f"{PREFIX}{{tenant:{tenant_id}}}"


def tenants() -> str:
    return f"{PREFIX}tenants"


def api_key(key_hash: str) -> str:
    return f"{PREFIX}{{apikey:{key_hash}}}"


def tenant_api_keys(tenant_id: str) -> str:
    return f"{PREFIX}{{tenant:{tenant_id}}}:apikeys"


# ---------------------------------------------------------------- voice agents, campaigns, leads
# {va:<id>}                   string JSON document of the voice agent                no TTL
# {tenant:<tid>}:vas          zset  voice agent ids by created_at
# {va:<id>}:active            set   call_ids holding one of the agent's max_concurrent slots
# {campaign:<id>}             string JSON (tenant_id, voice_agent_id, name, ...)     no TTL
# {tenant:<tid>}:campaigns    set   campaign ids
# {lead:<id>}                 hash  id, tenant_id, campaign_id, phone, name, email, metadata (JSON),
#                             status, status_set_by, attempts, last_attempted_at, created_at, updated_at
# {lead:<id>}:custom_fields   hash  field -> JSON value; one field per hash entry so set_lead_field is one
#                             HSET and concurrent patches of different fields never overwrite each other
# {campaign:<id>}:leads       set   lead ids
# {campaign:<id>}:phones      hash  phone (E.164) -> the first lead id with it; leads:bulk counts a phone
#                             already here as a duplicate (HSETNX, in the same Lua call as the write)


def voice_agent(va_id: str) -> str:
    return f"{PREFIX}{{va:{va_id}}}"


def tenant_voice_agents(tenant_id: str) -> str:
    return f"{PREFIX}{{tenant:{tenant_id}}}:vas"


def voice_agent_active(va_id: str) -> str:
    return f"{PREFIX}{{va:{va_id}}}:active"


def campaign(campaign_id: str) -> str:
    return f"{PREFIX}{{campaign:{campaign_id}}}"


def tenant_campaigns(tenant_id: str) -> str:
    return f"{PREFIX}{{tenant:{tenant_id}}}:campaigns"


def lead(lead_id: str) -> str:
    return f"{PREFIX}{{lead:{lead_id}}}"


def lead_custom_fields(lead_id: str) -> str:
    return f"{PREFIX}{{lead:{lead_id}}}:custom_fields"


def campaign_leads(campaign_id: str) -> str:
    return f"{PREFIX}{{campaign:{campaign_id}}}:leads"


def campaign_phones(campaign_id: str) -> str:
    return f"{PREFIX}{{campaign:{campaign_id}}}:phones"


# ---------------------------------------------------------------- AI sessions (one per call)
# {call:<call_id>}:session    hash  see bridge.calls.sessions.Session                 SESSION_TTL_S after end
# {call:<call_id>}:logs       list  JSON log entries (metadata.logs[])               same
# {call:<call_id>}:tokens     set   token hashes minted for the call                 same
# {tenant:<tid>}:sessions     zset  call ids by started_at (ms)                        trimmed
# sessions:live               set   call ids whose session has not ended (resync, slots)
# {call:<call_id>}:owner      string instance id that owns the call's lifecycle   CALL_OWNER_TTL_S

SESSION_TTL_S = 7 * 86400
CALL_OWNER_TTL_S = 6 * 3600


def session(call_id: str) -> str:
    return f"{PREFIX}{{call:{call_id}}}:session"


def session_logs(call_id: str) -> str:
    return f"{PREFIX}{{call:{call_id}}}:logs"


def session_tokens(call_id: str) -> str:
    return f"{PREFIX}{{call:{call_id}}}:tokens"


def tenant_sessions(tenant_id: str) -> str:
    return f"{PREFIX}{{tenant:{tenant_id}}}:sessions"


def live_sessions() -> str:
    return f"{PREFIX}sessions:live"


def call_owner(call_id: str) -> str:
    return f"{PREFIX}{{call:{call_id}}}:owner"


# ---------------------------------------------------------------- recordings
# recordings:url_secret       string the HMAC secret of signed recording URLs when
#                             BRIDGE_RECORDING_URL_SECRET is not set; SET NX by the first bridge   no TTL


def recording_url_secret() -> str:
    return f"{PREFIX}recordings:url_secret"


# ---------------------------------------------------------------- callback tokens
# {cbtoken:<sha256(token)>}   hash  jti, call_id, tenant_id, expires_at, revoked    TTL expiry+grace
# Kept past expiry for TOKEN_GRACE_S so an expired token answers "expired", not "unknown".

TOKEN_GRACE_S = 3600


def callback_token(token_hash: str) -> str:
    return f"{PREFIX}{{cbtoken:{token_hash}}}"


# token_refresh:due          zset  call ids by when their token_refresh frame is due (ms)


def token_refresh_due() -> str:
    return f"{PREFIX}token_refresh:due"


# session:deadlines          zset  call ids by when their AI session reaches its time limit (ms)
def session_deadlines() -> str:
    return f"{PREFIX}session:deadlines"


# ---------------------------------------------------------------- control endpoint
# {call:<call_id>}:rl         zset   one member per accepted request (request id), scored by Redis TIME
#                             in ms: a sliding one-second window                  PEXPIRE window
# {call:<call_id>}:idem:<key> hash   state (inflight|done), fp, owner (request id), status, body
#                             inflight: lease PEXPIRE; done: 24 h, or 60 s for play_audio/whisper/send_dtmf


def rate_limit(call_id: str) -> str:
    return f"{PREFIX}{{call:{call_id}}}:rl"


def idempotency(call_id: str, key: str) -> str:
    return f"{PREFIX}{{call:{call_id}}}:idem:{key}"


# ---------------------------------------------------------------- domain events and webhooks
# {webhooks}:outbox           stream domain events (event_id, event_type, tenant_id, timestamp, data)
#                             read by the consumer group OUTBOX_WEBHOOK_GROUP; an entry is acked in the
#                             same Lua call that records its fan-out, so a crash re-reads it (XAUTOCLAIM)
# {webhooks}:webhook:<id>     hash   subscription: id, tenant_id, url, test_url, event_types (json),
#                             is_active, created_at, secret, previous_secret, previous_secret_expires_at,
#                             consecutive_failures                                    no TTL
# {tenant:<tid>}:webhooks     set    subscription ids                                 no TTL
# {webhooks}:webhooks:version string a fresh token on every subscription change (create, update,
#                             rotate, delete): senders keep subscriptions in memory while it holds
# {webhooks}:webhook:<id>:deliveries list   JSON delivery log entries (one per attempt), newest first, capped
# {webhooks}:retry            zset   delivery ids by due time (ms). A claim moves the score to a lease
#                             deadline, so a crashed sender's attempt becomes due again on its own
# {webhooks}:delivery:<id>    hash   one event for one subscription: body, attempts, state, ...
#                             no TTL while pending; DELIVERED_TTL_S once delivered, DEAD_TTL_S once dead

OUTBOX_MAXLEN = 1_000_000
OUTBOX_WEBHOOK_GROUP = "webhooks"
DELIVERY_LOG_MAX = 1000
# A delivered record is kept only so a re-read outbox entry does not send the event again.
DELIVERED_TTL_S = 86400
# A dead record is what `redeliver` needs, so it lives as long as a user might still ask.
DEAD_TTL_S = 30 * 86400


def outbox() -> str:
    return f"{PREFIX}{WEBHOOKS}:outbox"


# {webhooks}:once:<fact>      string set with the one event of a fact that must be emitted once
#                             (e.g. call.ended:<call_id>), in the outbox's slot   EMITTED_ONCE_TTL_S
EMITTED_ONCE_TTL_S = 7 * 86400


def emitted_once(fact: str) -> str:
    return f"{PREFIX}{WEBHOOKS}:once:{fact}"


def webhook(sub_id: str) -> str:
    return f"{PREFIX}{WEBHOOKS}:webhook:{sub_id}"


def webhooks_version() -> str:
    return f"{PREFIX}{WEBHOOKS}:webhooks:version"


def tenant_webhooks(tenant_id: str) -> str:
    return f"{PREFIX}{{tenant:{tenant_id}}}:webhooks"


def webhook_deliveries(sub_id: str) -> str:
    return f"{PREFIX}{WEBHOOKS}:webhook:{sub_id}:deliveries"


def webhook_retry_queue() -> str:
    return f"{PREFIX}{WEBHOOKS}:retry"


def delivery(delivery_id: str) -> str:
    return f"{PREFIX}{WEBHOOKS}:delivery:{delivery_id}"


# ---------------------------------------------------------------- callbacks (schedule_callback)
# {callbacks}:callback:<id>   hash   the callback (see bridge.store.callbacks)           no TTL
# {callbacks}:due             zset   scheduled callback ids by when they are due (ms); ZREM claims one
# {callbacks}:dialing         zset   claimed callback ids by lease deadline (ms): a claimer that dies
#                             before recording the dial leaves its callback here, and it is failed
# {tenant:<tid>}:callbacks    zset   callback ids by scheduled_at
# {call:<call_id>}:callbacks  zset   callback ids scheduled from that call, by scheduled_at
# {callbacks}:idem:<call_id>:<key> string callback id created under that Idempotency-Key     TTL 24 h


def callback(callback_id: str) -> str:
    return f"{PREFIX}{CALLBACKS}:callback:{callback_id}"


def callbacks_due() -> str:
    return f"{PREFIX}{CALLBACKS}:due"


def tenant_callbacks(tenant_id: str) -> str:
    return f"{PREFIX}{{tenant:{tenant_id}}}:callbacks"


def callbacks_dialing() -> str:
    return f"{PREFIX}{CALLBACKS}:dialing"


def call_callbacks(call_id: str) -> str:
    return f"{PREFIX}{{call:{call_id}}}:callbacks"


def callback_idempotency(call_id: str, key: str) -> str:
    return f"{PREFIX}{CALLBACKS}:idem:{call_id}:{key}"


# ---------------------------------------------------------------- conferences and supervision
# {conference:<conf_id>}      hash   conference state (call_id, name, ...)
# {conference:<conf_id>}:members hash  member_id -> JSON participant
# {call:<uuid>}:conference_ai_leg string conference id whose AI leg is that channel     conference TTL
# {escalation:<id>}           hash   escalation (call_id, tenant_id, reason, urgency, claimed_by, ...)
# {tenant:<tid>}:escalations  zset   open escalation ids by created_at
# {call:<call_id>}:monitors   hash   target_call_id -> JSON relationship (mode, ...)      MONITOR_TTL_S
# {call:<target>}:monitored_by set    AI call ids monitoring that channel (its hangup ends them) MONITOR_TTL_S


def conference(conf_id: str) -> str:
    return f"{PREFIX}{{conference:{conf_id}}}"


def conference_members(conf_id: str) -> str:
    return f"{PREFIX}{{conference:{conf_id}}}:members"


def conference_ai_leg(channel_uuid: str) -> str:
    return f"{PREFIX}{{call:{channel_uuid}}}:conference_ai_leg"


def escalation(esc_id: str) -> str:
    return f"{PREFIX}{{escalation:{esc_id}}}"


def tenant_escalations(tenant_id: str) -> str:
    return f"{PREFIX}{{tenant:{tenant_id}}}:escalations"


MONITOR_TTL_S = CALL_OWNER_TTL_S


def monitors(call_id: str) -> str:
    return f"{PREFIX}{{call:{call_id}}}:monitors"


def monitored_by(target_call_id: str) -> str:
    return f"{PREFIX}{{call:{target_call_id}}}:monitored_by"


# ---------------------------------------------------------------- supervisors and escalations
# {call:<call_id>}:escalation        string the call's pending escalation id (one at a time)
#                                           TTL SESSION_TTL_S
# {tenant:<tid>}:supervisor:<sid>    hash   supervisor_id, tenant_id, name, contact, first_seen, last_seen
#                                           (the profile outlives the socket, so conference_add can tell
#                                           "unknown" from "off duty")                             no TTL
# {tenant:<tid>}:supervisor:<sid>:conns zset   connection ids (instance:ULID) of open sockets, scored by
#                                           lease expiry (ms); heartbeats renew, a dead instance's lapse
# {tenant:<tid>}:supervisor:<sid>:duty zset   the same, only the connections that are on duty
# {tenant:<tid>}:supervisors         set    supervisor ids
# {tenant:<tid>}:escalations (above) zset   every escalation id by created_at (ms), trimmed to
#                                           ESCALATIONS_KEPT
# supervision                        pub/sub channel: {"tenant_id", "type", "escalation"} for every instance

ESCALATIONS_KEPT = 1000
SUPERVISOR_LEASE_S = 45


def call_escalation(call_id: str) -> str:
    return f"{PREFIX}{{call:{call_id}}}:escalation"


def supervisor(tenant_id: str, supervisor_id: str) -> str:
    return f"{PREFIX}{{tenant:{tenant_id}}}:supervisor:{supervisor_id}"


def supervisor_conns(tenant_id: str, supervisor_id: str) -> str:
    return f"{PREFIX}{{tenant:{tenant_id}}}:supervisor:{supervisor_id}:conns"


def supervisor_duty(tenant_id: str, supervisor_id: str) -> str:
    return f"{PREFIX}{{tenant:{tenant_id}}}:supervisor:{supervisor_id}:duty"


def tenant_supervisors(tenant_id: str) -> str:
    return f"{PREFIX}{{tenant:{tenant_id}}}:supervisors"


def supervision_channel() -> str:
    return f"{PREFIX}supervision"


# ---------------------------------------------------------------- switches and bridges (docs/scaling.md)
# {box:<box>}:lease           string the bridge that handles the box's events           BRIDGE_BOX_LEASE_S
# {box:<box>}:mark            string "<Core-UUID> <Event-Sequence>": every event up to it was handled
# bridges                     zset  lease holders by last heartbeat (ms): the live bridges
# A box's lease and mark share a hash tag, so the lease scripts (bridge.calls.ownership) touch one slot.


def box_lease(box: str) -> str:
    return f"{PREFIX}{{box:{box}}}:lease"


def box_mark(box: str) -> str:
    return f"{PREFIX}{{box:{box}}}:mark"


def bridges() -> str:
    return f"{PREFIX}bridges"
