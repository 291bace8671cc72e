"""An upgrade on a Redis that a bridge from before the hash tags wrote (docs/redis-cluster.md):
its keys get their new names once, with their values, TTLs and the outbox's consumer group, so
the API keys, sessions and queued webhooks it had still work."""

from __future__ import annotations

import json

import pytest

from bridge.store import keys
from bridge.store.migrate import migrate_key_names, new_name
from bridge.store.redis import is_cluster
from bridge.store.tenants import TenantStore, hash_secret


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("tenant:acme", keys.tenant("acme")),
        ("tenant:acme:apikeys", keys.tenant_api_keys("acme")),
        ("supervisor:acme:sup-1:duty", keys.supervisor_duty("acme", "sup-1")),
        ("session:c-1", keys.session("c-1")),
        ("session:c-1:escalation", keys.call_escalation("c-1")),
        ("idem:c-1:key:with:colons", keys.idempotency("c-1", "key:with:colons")),
        ("callback:idem:c-1:k", keys.callback_idempotency("c-1", "k")),
        ("callback:cb_1", keys.callback("cb_1")),
        ("conference:ai_leg:u-1", keys.conference_ai_leg("u-1")),
        ("conference:cf:members", keys.conference_members("cf")),
        ("outbox", keys.outbox()),
        ("webhooks:retry", keys.webhook_retry_queue()),
        ("monitored:t-1", keys.monitored_by("t-1")),
        ("session:deadlines", None),
        ("sessions:live", None),
        ("tenants", None),
    ],
)
def test_old_names_map_to_the_builders(old: str, new: str | None):
    assert new_name(keys.PREFIX + old) == new
    if new is not None:
        assert new_name(new) is None  # a new name is left alone


async def test_an_older_bridges_keys_work_after_the_upgrade(redis):
    if is_cluster(redis):
        pytest.skip("a cluster was never written with the old names")
    clear = "yt_live_" + "x" * 40
    digest = hash_secret(clear)
    old = keys.PREFIX
    await redis.hset(
        f"{old}apikey:{digest}",
        mapping={"id": "key_1", "tenant_id": "acme", "scopes": json.dumps(["calls:control"]),
                 "prefix": clear[:12], "created_at": "1", "revoked": "0"},
    )  # fmt: skip
    await redis.sadd(f"{old}tenant:acme:apikeys", digest)
    await redis.hset(f"{old}session:c-1", mapping={"call_id": "c-1", "tenant_id": "acme"})
    await redis.expire(f"{old}session:c-1", 600)
    await redis.sadd(f"{old}sessions:live", "c-1")
    await redis.xadd(f"{old}outbox", {"event_id": "evt_1"})
    await redis.xgroup_create(f"{old}outbox", keys.OUTBOX_WEBHOOK_GROUP, id="0")

    assert await migrate_key_names(redis) == 4
    found = await TenantStore(redis).lookup_key(clear)
    assert found is not None and found.tenant_id == "acme" and "calls:control" in found.scopes
    assert await redis.smembers(keys.tenant_api_keys("acme")) == {digest}
    assert await redis.hget(keys.session("c-1"), "tenant_id") == "acme"
    assert 0 < await redis.ttl(keys.session("c-1")) <= 600
    assert await redis.smembers(keys.live_sessions()) == {"c-1"}  # a single key: same name
    groups = await redis.xinfo_groups(keys.outbox())
    assert [g["name"] for g in groups] == [keys.OUTBOX_WEBHOOK_GROUP]
    assert not await redis.exists(f"{old}apikey:{digest}", f"{old}session:c-1", f"{old}outbox")
    # Once per Redis.
    await redis.hset(f"{old}session:c-2", "call_id", "c-2")
    assert await migrate_key_names(redis) == 0
