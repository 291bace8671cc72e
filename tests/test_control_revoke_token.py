"""`POST /api/v1/ai-sessions/{call_id}/revoke_token` (yotel-docs §2.2): a tenant key with
`ai_sessions:control_admin` revokes a callback token of its own tenant's call; every other caller is
refused, and a refused revocation leaves the token working."""

from __future__ import annotations

from typing import Any

import pytest
from yotel.errors import AuthenticationError

from tests.conftest import AgentServer, in_thread
from tests.helpers import control, http, sdk, start_call


def revoke_path(call_id: str) -> str:
    return f"/api/v1/ai-sessions/{call_id}/revoke_token"


async def still_works(sandbox: Any, call_id: str, token: str) -> bool:
    return (await control(sandbox, call_id, {"event": "get_call_state"}, auth=token)).status == 200


async def test_only_a_tenant_key_with_the_control_scope_may_revoke(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    tenants = sandbox.runtime.services.tenants
    reader, _ = await tenants.create_key("acme", ["ai_sessions:read"])
    other, _ = await tenants.create_key("globex", ["ai_sessions:control_admin"])
    body = {"token": call.token}

    no_scope = await http(sandbox, "POST", revoke_path(call.call_id), body, auth=reader)
    assert (no_scope.status, no_scope.code) == (403, "missing_scope")
    by_token = await http(sandbox, "POST", revoke_path(call.call_id), body, auth=call.token)
    assert (by_token.status, by_token.code) == (403, "api_key_required")
    cross_tenant = await http(sandbox, "POST", revoke_path(call.call_id), body, auth=other)
    assert (cross_tenant.status, cross_tenant.code) == (404, "ai_session_not_found")
    assert await still_works(sandbox, call.call_id, call.token)

    admin, _ = await tenants.create_key("acme", ["ai_sessions:control_admin"])
    revoked = await http(sandbox, "POST", revoke_path(call.call_id), body, auth=admin)
    assert revoked.status == 200 and revoked.body["ok"] is True
    assert revoked.body["jti"] and revoked.body["revoked_until_ts"] > 0
    with pytest.raises(AuthenticationError) as exc:
        await in_thread(sdk(sandbox).ai_sessions.mute, call.call_id, callback_token=call.token)
    assert exc.value.detail["code"] == "token_revoked"


async def test_a_token_of_another_call_is_not_revoked_through_this_one(sandbox, agent_server: AgentServer):
    first = await start_call(sandbox, agent_server)
    second = await start_call(sandbox, agent_server)
    wrong = await http(sandbox, "POST", revoke_path(first.call_id), {"token": second.token})
    assert (wrong.status, wrong.code) == (404, "token_not_found")
    unknown = await http(sandbox, "POST", revoke_path(first.call_id), {"token": "yt_cb_" + "0" * 26})
    assert (unknown.status, unknown.code) == (404, "token_not_found")
    assert await still_works(sandbox, second.call_id, second.token)
    assert await still_works(sandbox, first.call_id, first.token)
