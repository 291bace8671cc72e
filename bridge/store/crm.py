"""Campaigns and leads as far as calls touch them: which voice agent a campaign pins, and the
lead a call is about (its metadata goes into the audio fork's metadata frame)."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from bridge.store import keys


class CampaignStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def get(self, campaign_id: str, tenant_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(keys.campaign(campaign_id))
        if raw is None:
            return None
        doc = json.loads(raw)
        return doc if doc.get("tenant_id") == tenant_id else None

    async def put(self, doc: dict[str, Any]) -> None:
        await self.redis.set(keys.campaign(doc["id"]), json.dumps(doc))
        await self.redis.sadd(keys.tenant_campaigns(doc["tenant_id"]), doc["id"])


class LeadStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def get(self, lead_id: str, tenant_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(keys.lead(lead_id))
        if raw is None:
            return None
        doc = json.loads(raw)
        return doc if doc.get("tenant_id") == tenant_id else None

    async def put(self, doc: dict[str, Any]) -> None:
        await self.redis.set(keys.lead(doc["id"]), json.dumps(doc))
        if doc.get("campaign_id"):
            await self.redis.sadd(keys.campaign_leads(doc["campaign_id"]), doc["id"])
