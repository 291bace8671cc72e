"""Sandbox mode: the bridge, the switch simulator and Redis in one process.

The bridge reaches the simulator through its real ESL client over TCP, so every verb runs
the same code path it runs against FreeSWITCH.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.config import Settings
from bridge.runtime import BridgeRuntime
from bridge.sim.server import SwitchSimulator
from bridge.store.tenants import ALL_SCOPES


@dataclass
class SandboxInfo:
    base_url: str
    tenant_id: str
    admin_key: str
    esl_url: str


class Sandbox:
    def __init__(
        self,
        settings: Settings,
        *,
        tenant_id: str = "sandbox",
        admin_key: str | None = None,
        esl_port: int = 0,
    ) -> None:
        self.tenant_id = tenant_id
        self.admin_key = admin_key
        self.sim = SwitchSimulator("127.0.0.1", esl_port, password="ClueCon", switchname="sandbox")
        self._settings = settings
        self.runtime: BridgeRuntime | None = None
        self.info: SandboxInfo | None = None

    async def start(self) -> SandboxInfo:
        await self.sim.start()
        settings = self._settings.with_(
            esl_url=f"esl://:ClueCon@127.0.0.1:{self.sim.port}",
            webhook_allow_loopback_http=True,
        )
        self.runtime = BridgeRuntime(settings, sandbox=True)
        svc = await self.runtime.start()
        svc.sim = self.sim
        clear, _ = await svc.tenants.create_key(self.tenant_id, ALL_SCOPES, secret=self.admin_key)
        assert self.runtime.endpoint is not None
        self.info = SandboxInfo(self.runtime.endpoint.base_url, self.tenant_id, clear, self.sim.url)
        return self.info

    async def stop(self) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
        await self.sim.stop()
