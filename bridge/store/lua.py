"""A Lua script called with EVALSHA, re-loaded when Redis has forgotten it (restart, SCRIPT FLUSH).

It runs on a redis-py client or on the hot path's RespClient. redis-py's own Script object does
the same through two wrapper layers and an import per call, which on the control endpoint's hot
path cost more than the script itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from bridge.store.resp import RespClient


class LuaScript:
    def __init__(self, client: aioredis.Redis | RespClient, source: str) -> None:
        self._execute = client.execute if isinstance(client, RespClient) else client.execute_command
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self._execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.sha = await self._execute("SCRIPT", "LOAD", self.source)
            return await self._execute("EVALSHA", self.sha, len(keys), *keys, *args)
