"""request_supervisor: queue an escalation, push it to every on-duty supervisor, fire
ai_session.escalated (supervisor_id null). The claim side is bridge.api.routes.supervisors.
"""

from __future__ import annotations

from typing import Any

from bridge.errors import ApiError
from bridge.verbs.base import VerbContext, verb
from bridge.verbs.common import audit, terminated
from bridge.verbs.models import RequestSupervisor


@verb("request_supervisor", idempotency="strong")
async def request_supervisor(ctx: VerbContext, cmd: RequestSupervisor) -> dict[str, Any]:
    hub = ctx.svc.supervision
    if hub is None:
        raise ApiError(501, "verb_not_implemented", "supervision is not running on this bridge")
    created = await hub.escalations.create(ctx.session, cmd.reason, cmd.urgency)
    if created.ended:
        raise terminated(ctx)
    if not created.created:
        raise ApiError(
            409,
            "escalation_pending",
            "this call already has an escalation waiting for a supervisor",
            extra={"escalation_id": created.escalation_id},
        )
    esc = await hub.escalations.get(created.escalation_id)
    assert esc is not None
    # The push first: a supervisor should see it before anything else happens.
    await hub.publish("escalation.created", esc)
    await ctx.svc.outbox.emit("ai_session.escalated", ctx.session.tenant_id, esc.webhook())
    await audit(
        ctx, "request_supervisor", escalation_id=esc.escalation_id, reason=cmd.reason, urgency=cmd.urgency
    )
    return {"escalation_id": esc.escalation_id}
