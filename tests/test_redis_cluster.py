"""The bridge on a real Redis Cluster (tests/redis_cluster.py: three masters from the redis-server
the other tests use): the client, the health check, and keys that must share a slot."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster

from bridge.store.redis import connect, ping


@pytest.fixture
async def cluster(redis_cluster_url: str):
    client = connect(redis_cluster_url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_cluster_url_gives_a_cluster_client_that_reaches_every_master(cluster):
    assert isinstance(cluster, RedisCluster)
    await ping(cluster)
    await cluster.initialize()
    assert len(cluster.get_primaries()) == 3
