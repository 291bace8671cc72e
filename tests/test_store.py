from __future__ import annotations

import asyncio
import time

from bridge.media.tokens import TokenStore
from bridge.store import keys
from bridge.store.tenants import TenantStore, hash_secret
from bridge.webhooks.outbox import Outbox


async def test_api_key_is_stored_hashed_and_carries_its_scopes(redis):
    tenants = TenantStore(redis)
    clear, _record = await tenants.create_key("acme", ["voice_agents:write"])
    assert clear.startswith("yt_live_")
    assert not await redis.exists(keys.api_key(clear))
    assert await redis.exists(keys.api_key(hash_secret(clear)))
    found = await tenants.lookup_key(clear)
    assert found is not None and found.tenant_id == "acme"
    assert found.scopes == {"voice_agents:write"}
    assert await tenants.lookup_key(clear + "x") is None


async def test_callback_token_is_a_prefixed_ulid_bound_to_its_call(redis):
    tokens = TokenStore(redis)
    tok = await tokens.mint(call_id="c1", tenant_id="acme", ttl_s=60)
    assert tok.token.startswith("yt_cb_") and len(tok.token) == len("yt_cb_") + 26
    found = await tokens.lookup(tok.token)
    assert found is not None and found.call_id == "c1" and not found.expired
    ttl = await redis.ttl(keys.callback_token(hash_secret(tok.token)))
    assert 60 < ttl <= 60 + keys.TOKEN_GRACE_S
    await tokens.revoke_all_for_call("c1")
    revoked = await tokens.lookup(tok.token)
    assert revoked is not None and revoked.revoked


async def test_revoking_an_expired_token_does_not_resurrect_it(redis):
    tokens = TokenStore(redis)
    tok = await tokens.mint(call_id="c2", tenant_id="acme", ttl_s=60)
    await redis.delete(keys.callback_token(hash_secret(tok.token)))
    assert await tokens.revoke_all_for_call("c2") == 0
    assert not await redis.exists(keys.callback_token(hash_secret(tok.token)))


async def test_outbox_events_are_durable_stream_entries(redis):
    outbox = Outbox(redis)
    before = int(time.time())
    event = await outbox.emit("call.started", "acme", {"call_id": "c1"})
    events = await outbox.read_all()
    assert [e.event_id for e in events] == [event.event_id]
    assert events[0].data == {"call_id": "c1"} and events[0].timestamp >= before


async def test_a_burst_beyond_the_pool_waits_for_a_connection_instead_of_failing(redis_url: str):
    from bridge.store.redis import connect

    client = connect(redis_url)
    try:
        await client.ping()  # as a bridge does at startup (a cluster client learns the layout)
        # 600 commands that each hold a connection for 0.3 s: more than the pool holds at once
        # (and six times redis-py's default of 100), yet none fails.
        replies = await asyncio.gather(*(client.blpop([f"burst:{i}"], timeout=0.3) for i in range(600)))
        assert replies == [None] * 600
    finally:
        await client.aclose()
