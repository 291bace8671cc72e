"""Renames the keys of a Redis written by a bridge from before the hash tags (docs/redis-cluster.md)
to their names now: `bridge:session:<id>` -> `bridge:{call:<id>}:session`, and so on for every
builder in bridge/store/keys.py. It runs once per Redis, at startup (and before `bridge keys
create`), on one server only: a cluster was never written with the old names.

RENAME keeps each key's value, TTL and (for the outbox stream) its consumer group. RENAMENX: a key
whose new name exists already (another instance migrated it meanwhile) is left alone. Afterwards
`bridge:keys:version` says the names are the current ones, so the scan is not done again. An old
bridge still running after that writes old names nobody reads: upgrade every instance at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import structlog
from redis.exceptions import ResponseError

from bridge.store import keys
from bridge.store.redis import RedisClient, is_cluster

log = structlog.get_logger(__name__)

KEYS_VERSION = "2"

_ID = r"([^:{}]+)"
_REST = r"(.+)"

# Single keys kept their names (and `session:deadlines` would otherwise look like a session).
_UNCHANGED = {
    "keys:version",
    "tenants",
    "sessions:live",
    "token_refresh:due",
    "session:deadlines",
    "recordings:url_secret",
    "bridges",
}
# (old name after PREFIX, the builder that names it now); an id has no ':', so at most one matches.
_RULES: list[tuple[re.Pattern[str], Callable[..., str]]] = [
    (re.compile(p), fn)
    for p, fn in [
        (rf"tenant:{_ID}", keys.tenant),
        (rf"tenant:{_ID}:apikeys", keys.tenant_api_keys),
        (rf"tenant:{_ID}:vas", keys.tenant_voice_agents),
        (rf"tenant:{_ID}:campaigns", keys.tenant_campaigns),
        (rf"tenant:{_ID}:sessions", keys.tenant_sessions),
        (rf"tenant:{_ID}:webhooks", keys.tenant_webhooks),
        (rf"tenant:{_ID}:callbacks", keys.tenant_callbacks),
        (rf"tenant:{_ID}:escalations", keys.tenant_escalations),
        (rf"tenant:{_ID}:supervisors", keys.tenant_supervisors),
        (rf"apikey:{_ID}", keys.api_key),
        (rf"va:{_ID}", keys.voice_agent),
        (rf"va:{_ID}:active", keys.voice_agent_active),
        (rf"campaign:{_ID}", keys.campaign),
        (rf"campaign:{_ID}:leads", keys.campaign_leads),
        (rf"campaign:{_ID}:phones", keys.campaign_phones),
        (rf"lead:{_ID}", keys.lead),
        (rf"lead:{_ID}:custom_fields", keys.lead_custom_fields),
        (rf"session:{_ID}", keys.session),
        (rf"session:{_ID}:logs", keys.session_logs),
        (rf"session:{_ID}:tokens", keys.session_tokens),
        (rf"session:{_ID}:callbacks", keys.call_callbacks),
        (rf"session:{_ID}:escalation", keys.call_escalation),
        (rf"call:{_ID}:owner", keys.call_owner),
        (rf"cbtoken:{_ID}", keys.callback_token),
        (rf"rl:{_ID}", keys.rate_limit),
        (rf"idem:{_ID}:{_REST}", keys.idempotency),
        ("outbox", keys.outbox),
        (rf"webhook:{_ID}", keys.webhook),
        (rf"webhook:{_ID}:deliveries", keys.webhook_deliveries),
        ("webhooks:retry", keys.webhook_retry_queue),
        (rf"delivery:{_ID}", keys.delivery),
        (rf"callback:idem:{_ID}:{_REST}", keys.callback_idempotency),
        (rf"callback:{_ID}", keys.callback),
        ("callbacks:due", keys.callbacks_due),
        ("callbacks:dialing", keys.callbacks_dialing),
        (rf"conference:ai_leg:{_ID}", keys.conference_ai_leg),
        (rf"conference:{_ID}", keys.conference),
        (rf"conference:{_ID}:members", keys.conference_members),
        (rf"escalation:{_ID}", keys.escalation),
        (rf"monitor:{_ID}", keys.monitors),
        (rf"monitored:{_ID}", keys.monitored_by),
        (rf"supervisor:{_ID}:{_ID}", keys.supervisor),
        (rf"supervisor:{_ID}:{_ID}:conns", keys.supervisor_conns),
        (rf"supervisor:{_ID}:{_ID}:duty", keys.supervisor_duty),
    ]
]


def new_name(old: str) -> str | None:
    """The current name of a key with a name from before the hash tags (None: not one of those)."""
    if not old.startswith(keys.PREFIX) or "{" in old:
        return None
    name = old[len(keys.PREFIX) :]
    if name in _UNCHANGED:
        return None
    for pattern, builder in _RULES:
        match = pattern.fullmatch(name)
        if match:
            return builder(*match.groups())
    return None


async def migrate_key_names(redis: RedisClient) -> int:
    """Rename every old-named key (once per Redis); returns how many were renamed."""
    if is_cluster(redis) or await redis.get(keys.keys_version()) == KEYS_VERSION:
        return 0
    renamed = 0
    async for old in redis.scan_iter(match=f"{keys.PREFIX}*", count=1000):
        new = new_name(old)
        if new is None:
            continue
        try:
            renamed += int(await redis.renamenx(old, new))
        except ResponseError:  # gone meanwhile (expired, or another instance renamed it)
            continue
    await redis.set(keys.keys_version(), KEYS_VERSION)
    if renamed:
        log.info("redis_keys_renamed", renamed=renamed, version=KEYS_VERSION)
    return renamed
