"""A transfer to a number or a SIP URI, followed to its end on the switch.

`uuid_transfer … inline` answers +OK as soon as the dialplan is accepted; whether the far end
answers is only known later. The transfer verb leaves the session's `transfer` field in state
`dialing`, and this module settles it from the caller's own events:

- CHANNEL_BRIDGE: the far end answered. The session ends `transferred_<type>` and
  `ai_session.transferred` fires.
- CHANNEL_PARK: the bridge failed (busy, no answer within the ring timeout, refused) and the
  inline dialplan's last application parked the caller again. The caller goes back to the AI:
  `ai_session.transfer_failed` fires with the hangup cause, the fork reopens with a fresh
  metadata frame (`resumed: true`, `transfer_failed`), and the session stays `in_progress`.

Queue transfers are not followed: mod_callcenter holds the caller itself, so they end the session
when the switch takes them, as before.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import structlog

from bridge.calls.sessions import now_iso
from bridge.errors import SwitchError, SwitchUnavailable
from bridge.esl.protocol import Event
from bridge.store import keys

if TYPE_CHECKING:
    from bridge.calls.manager import CallManager

log = structlog.get_logger(__name__)

DIALING = "dialing"
# What the switch says a failed bridge ended with, most specific first.
_CAUSE_VARS = ("originate_disposition", "last_bridge_hangup_cause", "originate_failed_cause")


class TransferWatch:
    def __init__(self, calls: CallManager) -> None:
        self.calls = calls
        self.svc = calls.svc
        calls.on("CHANNEL_BRIDGE", self._on_bridge)
        calls.on("CHANNEL_PARK", self._on_park)

    async def _dialing(self, call_id: str) -> tuple[str, dict[str, Any]] | None:
        """The raw field and the record of a transfer still ringing, else None."""
        raw = await self.svc.sessions.reads.hget(keys.session(call_id), "transfer")
        if not raw:
            return None
        try:
            record = json.loads(raw)
        except ValueError:
            return None
        # `pending`: the verb has sent uuid_transfer but not yet recorded it; a queue transfer
        # is never followed (it ends the session as soon as the switch takes it).
        if not isinstance(record, dict) or record.get("state") not in (DIALING, "pending"):
            return None
        # A queue transfer is never followed; a record without its destination is not a transfer
        # this bridge wrote, and must not fail the call's event handling.
        kind, where = record.get("destination_type"), record.get("destination")
        if kind == "agent_queue" or not isinstance(kind, str) or not isinstance(where, str):
            return None
        return raw, record

    async def _on_bridge(self, event: Event) -> None:
        call_id = event.unique_id
        found = await self._dialing(call_id)
        if found is None:
            return
        raw, record = found
        connected = {**record, "state": "connected", "connected_at": now_iso()}
        if await self.svc.sessions.compare_and_set(call_id, "transfer", raw, json.dumps(connected)) != 1:
            return
        session = await self.svc.sessions.get(call_id)
        if session is None:
            return
        await self.svc.outbox.emit(
            "ai_session.transferred",
            session.tenant_id,
            {
                "call_id": call_id,
                "destination_type": record["destination_type"],
                "destination": record["destination"],
                "metadata": record.get("metadata") or {},
            },
        )
        await self.calls.finish(call_id, f"transferred_{record['destination_type']}", "ai_transfer")

    async def _on_park(self, event: Event) -> None:
        call_id = event.unique_id
        found = await self._dialing(call_id)
        if found is None:
            return
        raw, record = found
        cause = next((event.var(v) for v in _CAUSE_VARS if event.var(v) not in (None, "", "SUCCESS")), None)
        cause = cause or "NORMAL_TEMPORARY_FAILURE"
        # The field is cleared, not kept as `failed`: the AI may try another transfer at once.
        if await self.svc.sessions.compare_and_set(call_id, "transfer", raw, "") != 1:
            return
        session = await self.svc.sessions.get(call_id)
        if session is None or session.terminal:
            return
        failure = {
            "destination_type": record["destination_type"],
            "destination": record["destination"],
            "hangup_cause": cause,
        }
        log.info("transfer_failed", call_id=call_id, **failure)
        await self.svc.sessions.append_log(call_id, {"ts": now_iso(), "event": "transfer_failed", **failure})
        await self.svc.outbox.emit(
            "ai_session.transfer_failed",
            session.tenant_id,
            {"call_id": call_id, **failure, "metadata": record.get("metadata") or {}},
        )
        try:
            await self.calls.reopen_fork(session, transfer_failed=failure)
        except (SwitchError, SwitchUnavailable) as exc:
            # The caller is parked with no AI: end it rather than leave them in silence.
            log.error("transfer_failed_fork_not_reopened", call_id=call_id, error=str(exc))
            await self.calls.finish(call_id, "error", "transfer_failed_no_ai")
            await self.calls.kill_quietly(session, "NORMAL_TEMPORARY_FAILURE")
