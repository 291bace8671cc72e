"""mod_callcenter, enough of it for "transfer to a queue": members wait with music on hold and
callcenter::info events tell the story; agents the scenario adds get offered the call.

The real module is commented out in vanilla FreeSWITCH and not built into the drachtio image
(freeswitch.md §2.1); the sandbox still offers it so the transfer verb can be exercised.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from bridge.sim.arguments import parse_var_block
from bridge.sim.channels import Channel, new_uuid
from bridge.sim.events import Headers, playback_file_type

if TYPE_CHECKING:
    from bridge.sim.core import SwitchCore

log = structlog.get_logger(__name__)
SUBCLASS = "callcenter::info"
MOH = "local_stream://moh"


@dataclass(slots=True)
class Agent:
    name: str
    queue: str
    contact: str
    busy: bool = False


class CallCenter:
    def __init__(self, core: SwitchCore) -> None:
        self.core = core
        # None: every queue name exists (the sandbox's default); a set restricts them, and a
        # transfer to any other queue fails the way mod_callcenter does ("Queue ... not found").
        self.queues: set[str] | None = None
        self.agents: list[Agent] = []
        self._changed = asyncio.Event()

    def add_agent(self, queue: str, contact: str, name: str | None = None) -> Agent:
        agent = Agent(name or f"agent{len(self.agents) + 1}", queue, contact)
        self.agents.append(agent)
        self._changed.set()
        return agent

    def _fire(self, ch: Channel, queue: str, action: str, post: Headers) -> None:
        ch.custom(SUBCLASS, post=[("CC-Queue", queue), ("CC-Action", action), *post])

    def _member_headers(self, ch: Channel) -> Headers:
        info = ch.callcenter or {}
        p = ch.profile
        return [
            ("CC-Member-UUID", info.get("member_uuid", "")),
            ("CC-Member-Session-UUID", ch.uuid),
            ("CC-Member-CID-Name", (p.caller_id_name or "") if p else ""),
            ("CC-Member-CID-Number", (p.caller_id_number or "") if p else ""),
        ]

    async def run_member(self, ch: Channel, data: str) -> None:
        queue = data.strip()
        if self.queues is not None and queue not in self.queues:
            log.info("sim_callcenter_queue_not_found", queue=queue, uuid=ch.uuid)
            return
        ch.answer()
        joined = int(time.time())
        ch.callcenter = {"queue": queue, "member_uuid": new_uuid(), "state": "waiting", "agent": None}
        ch.variables.update(
            {
                "cc_queue": queue,
                "cc_member_uuid": ch.callcenter["member_uuid"],
                "cc_member_session_uuid": ch.uuid,
                "cc_queue_joined_epoch": str(joined),
            }
        )
        self._fire(ch, queue, "member-queue-start", [("CC-Count", "1"), *self._member_headers(ch)])
        ch.emit("PLAYBACK_START", post=[*playback_file_type(MOH), ("Playback-File-Path", MOH)])
        cause, reason = "Cancel", "NONE"
        try:
            while not (not ch.alive or ch.pending_transfer is not None):
                agent = next((a for a in self.agents if a.queue == queue and not a.busy), None)
                if agent is None:
                    self._changed.clear()
                    waiter = asyncio.ensure_future(self._changed.wait())
                    ch.wakeup.clear()
                    mine = asyncio.ensure_future(ch.wakeup.wait())
                    try:
                        await asyncio.wait([waiter, mine], return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waiter.cancel()
                        mine.cancel()
                    continue
                if await self._offer(ch, queue, agent, joined):
                    cause = "Terminated"
                    break
            if ch.pending_transfer is not None and cause == "Cancel":
                reason = "BREAK_OUT"
        finally:
            ch.emit(
                "PLAYBACK_STOP",
                post=[*playback_file_type(MOH), ("Playback-File-Path", MOH), ("Playback-Status", "break")],
            )
            self._fire(
                ch,
                queue,
                "member-queue-end",
                [
                    ("CC-Member-Joined-Time", str(joined)),
                    ("CC-Member-Leaving-Time", str(int(time.time()))),
                    ("CC-Cause", cause),
                    *([("CC-Cancel-Reason", reason)] if cause == "Cancel" else []),
                    *self._member_headers(ch),
                ],
            )
            ch.callcenter = None

    async def _offer(self, ch: Channel, queue: str, agent: Agent, joined: int) -> bool:
        """Ring one agent; True when the member was bridged to it (and that bridge is over)."""
        from bridge.sim.apps import _bridge, _unbridge, start_flow, stay_bridged
        from bridge.sim.originate import dial

        agent.busy = True
        assert ch.callcenter is not None
        ch.callcenter.update(state="offering", agent=agent.name)
        base = [("CC-Agent", agent.name), ("CC-Agent-System", "single_box")]
        self._fire(ch, queue, "agent-offering", [*base, *self._member_headers(ch)])
        called = int(time.time())
        variables, endpoint = parse_var_block(agent.contact)
        try:
            result = await dial(self.core, endpoint, variables, originator=ch)
            if not result.ok or result.channel is None or not ch.alive or ch.pending_transfer is not None:
                if result.channel is not None and result.channel.alive:
                    result.channel.hangup("ORIGINATOR_CANCEL")
                failed = [*base, ("CC-Hangup-Cause", result.cause or "ORIGINATOR_CANCEL")]
                self._fire(ch, queue, "bridge-agent-fail", [*failed, *self._member_headers(ch)])
                ch.callcenter.update(state="waiting", agent=None)
                await asyncio.sleep(0.01)
                return False
            leg = result.channel
            timing = [
                ("CC-Agent-Called-Time", str(called)),
                ("CC-Agent-Answered-Time", str(int(time.time()))),
            ]
            ch.callcenter.update(state="bridged", agent_uuid=leg.uuid)
            ch.emit(
                "PLAYBACK_STOP",
                post=[*playback_file_type(MOH), ("Playback-File-Path", MOH), ("Playback-Status", "break")],
            )
            agent_leg = [*base, ("CC-Agent-UUID", leg.uuid), *timing]
            joined_at = [("CC-Member-Joined-Time", str(joined))]
            self._fire(ch, queue, "bridge-agent-start", [*agent_leg, *joined_at, *self._member_headers(ch)])
            _bridge(ch, leg)
            start_flow(leg, [("__bridged", ch.uuid)], routing=False)
            await stay_bridged(ch, leg)
            _unbridge(ch, leg)
            ended = [
                ("CC-Bridge-Terminated-Time", str(int(time.time()))),
                ("CC-Hangup-Cause", leg.hangup_cause or "NORMAL_CLEARING"),
            ]
            self._fire(ch, queue, "bridge-agent-end", [*agent_leg, *ended, *self._member_headers(ch)])
            ch.emit("PLAYBACK_START", post=[*playback_file_type(MOH), ("Playback-File-Path", MOH)])
            return True
        finally:
            agent.busy = False
            self._changed.set()
