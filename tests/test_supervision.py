"""Supervision end to end: request_supervisor through the official SDK on sandbox calls, supervisors
on the real WebSocket, the escalations API, two bridge instances on one Redis.

No sleeps: "nothing was pushed" is shown by a ping whose pong is the next frame on that socket
(frames on one socket are ordered, and the push to every socket of an instance is one step)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yotel.errors import ConflictError

from bridge.runtime import BridgeRuntime
from tests.conftest import AgentServer, fast_settings, in_thread
from tests.helpers import control, end_call, events, http, sdk, start_call, wait_until

ESC_ID = re.compile(r"^esc_[0-9A-HJKMNP-TV-Z]{26}$")
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Console:
    """A supervisor's socket, as a test sees it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession) -> None:
        self.ws = ws
        self.session = session
        self.welcome: dict[str, Any] = {}

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        return msg.json()

    async def next_of(self, kind: str) -> dict[str, Any]:
        while True:
            frame = await self.next()
            if frame["type"] == kind:
                return frame

    async def nothing_pending(self) -> None:
        """Nothing was pushed to this socket before now: the answer to a ping is the next frame."""
        await self.ws.send_json({"type": "ping"})
        assert await self.next() == {"type": "pong"}

    async def duty(self, on: bool) -> dict[str, Any]:
        await self.ws.send_json({"type": "duty", "on_duty": on})
        return await self.next_of("duty")

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


async def raw_socket(base_url: str, **kwargs: Any) -> tuple[aiohttp.ClientSession, Any]:
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(f"{base_url}/api/v1/supervisors/ws", **kwargs)
    return session, ws


@asynccontextmanager
async def console(base_url: str, key: str, supervisor_id: str, **hello: Any) -> AsyncIterator[Console]:
    session, ws = await raw_socket(base_url)
    c = Console(ws, session)
    try:
        await ws.send_json({"type": "hello", "api_key": key, "supervisor_id": supervisor_id, **hello})
        c.welcome = await c.next()
        assert c.welcome["type"] == "welcome", c.welcome
        yield c
    finally:
        await c.close()


async def supervisor_key(
    sandbox: Any, tenant: str = "acme", scopes: tuple[str, ...] = ("supervisors:act",)
) -> str:
    clear, _ = await sandbox.runtime.services.tenants.create_key(tenant, list(scopes))
    return clear


async def escalate(sandbox: Any, call: Any, reason: str = "Caller is angry", urgency: str = "high") -> str:
    reply = await in_thread(
        sdk(sandbox).ai_sessions.request_supervisor,
        call.call_id,
        reason=reason,
        urgency=urgency,
        callback_token=call.token,
    )
    assert reply["ok"] is True
    assert set(reply["result"]) == {"escalation_id"}
    return reply["result"]["escalation_id"]


async def claim(sandbox: Any, key: str, esc_id: str, supervisor_id: str, base_url: str | None = None) -> Any:
    target = sandbox if base_url is None else _At(base_url, key)
    return await http(
        target, "POST", f"/api/v1/escalations/{esc_id}/claim", {"supervisor_id": supervisor_id}, auth=key
    )


class _At:
    """`http()` against another instance."""

    def __init__(self, base_url: str, key: str) -> None:
        self.info = type("Info", (), {"base_url": base_url, "admin_key": key})()


# ---------------------------------------------------------------- the push


async def test_escalation_pushed_to_every_on_duty_supervisor_and_not_to_one_off_duty(
    sandbox, agent_server: AgentServer
):
    key = await supervisor_key(sandbox)
    base = sandbox.info.base_url
    call = await start_call(sandbox, agent_server)
    async with (
        console(base, key, "sup-ann", name="Ann", contact="user/1001@lab") as ann,
        console(base, key, "sup-bob", name="Bob") as bob,
        console(base, key, "sup-cy", name="Cy") as cy,
    ):
        assert ann.welcome["on_duty"] is True and ann.welcome["escalations"] == []
        assert ann.welcome["supervisor"]["name"] == "Ann"
        assert (await cy.duty(False)) == {"type": "duty", "on_duty": False}

        # The conference helper's view: on duty or not, and the contact conference_add dials.
        store = sandbox.runtime.services.supervisors
        sup = await store.get("acme", "sup-ann")
        assert (sup.on_duty, sup.contact, sup.name) == (True, "user/1001@lab", "Ann")
        assert (await store.get("acme", "sup-cy")).on_duty is False
        assert await store.get("acme", "nobody") is None
        assert await store.get("other-tenant", "sup-ann") is None

        esc_id = await escalate(sandbox, call, reason="Caller is angry, needs senior rep")
        assert ESC_ID.match(esc_id)
        for c in (ann, bob):
            frame = await c.next()
            assert frame["type"] == "escalation.created"
            esc = frame["escalation"]
            assert esc["escalation_id"] == esc_id and esc["call_id"] == call.call_id
            assert (esc["reason"], esc["urgency"], esc["status"]) == (
                "Caller is angry, needs senior rep",
                "high",
                "pending",
            )
            assert esc["supervisor_id"] is None and ISO_MS_Z.match(esc["created_at"])
            assert esc["caller"]["from"] == "+14155550100"
        await cy.nothing_pending()

        # The first webhook: supervisor_id null.
        fired = await events(sandbox, call.call_id, "ai_session.escalated")
        assert [e.data for e in fired] == [
            {
                "call_id": call.call_id,
                "escalation_id": esc_id,
                "reason": "Caller is angry, needs senior rep",
                "urgency": "high",
                "supervisor_id": None,
                "claimed_at": None,
            }
        ]

        # Back on duty: the reply carries what is waiting.
        back = await cy.duty(True)
        assert [e["escalation_id"] for e in back["escalations"]] == [esc_id]
        assert (await store.get("acme", "sup-cy")).on_duty is True

    # A late console gets the open escalation in its welcome.
    async with console(base, key, "sup-dee") as dee:
        assert [e["escalation_id"] for e in dee.welcome["escalations"]] == [esc_id]
    # Disconnected: the profile stays, the duty goes.
    sup = await sandbox.runtime.services.supervisors.get("acme", "sup-ann")
    assert sup is not None and sup.on_duty is False and sup.connected is False


async def test_second_request_while_one_is_pending_is_409(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    esc_id = await escalate(sandbox, call)
    with pytest.raises(ConflictError) as err:
        await escalate(sandbox, call, reason="again")
    assert err.value.status_code == 409
    reply = await http(
        sandbox,
        "POST",
        f"/api/v1/ai-sessions/{call.call_id}/control",
        {"event": "request_supervisor", "reason": "again"},
        auth=call.token,
    )
    assert reply.status == 409 and reply.code == "escalation_pending"
    assert reply.body["detail"]["escalation_id"] == esc_id
    assert len(await events(sandbox, call.call_id, "ai_session.escalated")) == 1


# ---------------------------------------------------------------- claims


async def test_first_claim_wins_second_is_409_and_the_webhook_carries_the_supervisor(
    sandbox, agent_server: AgentServer
):
    key = await supervisor_key(sandbox)
    base = sandbox.info.base_url
    call = await start_call(sandbox, agent_server)
    async with console(base, key, "sup-ann") as ann, console(base, key, "sup-bob") as bob:
        esc_id = await escalate(sandbox, call)
        await ann.next_of("escalation.created")
        await bob.next_of("escalation.created")

        first = await claim(sandbox, key, esc_id, "sup-ann")
        assert first.status == 200, first.body
        assert first.body["status"] == "claimed" and first.body["supervisor_id"] == "sup-ann"
        assert ISO_MS_Z.match(first.body["claimed_at"])
        state = first.body["call_state"]
        assert state["call_id"] == call.call_id and state["state"] == "in_progress"
        assert state["answered"] is True and state["current_participants"] == ["caller", "ai_agent"]

        second = await claim(sandbox, key, esc_id, "sup-bob")
        assert second.status == 409 and second.code == "escalation_already_claimed"
        assert second.body["detail"]["supervisor_id"] == "sup-ann"

        for c in (ann, bob):
            told = await c.next_of("escalation.claimed")
            assert told["escalation"]["supervisor_id"] == "sup-ann"

    fired = await events(sandbox, call.call_id, "ai_session.escalated")
    assert [e.data["supervisor_id"] for e in fired] == [None, "sup-ann"]
    assert fired[1].data["claimed_at"] == first.body["claimed_at"]
    # Once claimed, the AI may escalate again (a new escalation).
    assert await escalate(sandbox, call, reason="second issue") != esc_id

    one = await http(sandbox, "GET", f"/api/v1/escalations/{esc_id}", auth=key)
    assert one.status == 200 and one.body["status"] == "claimed"
    assert one.body["call_state"]["state"] == "in_progress"
    listed = await http(sandbox, "GET", "/api/v1/escalations?status=claimed", auth=key)
    assert [e["escalation_id"] for e in listed.body["items"]] == [esc_id]
    # The claim is in the session's audit trail.
    session = await http(sandbox, "GET", f"/api/v1/ai-sessions/{call.call_id}")
    logged = [e for e in session.body["metadata"]["logs"] if e.get("event") == "supervisor_claimed"]
    assert logged and logged[0]["supervisor_id"] == "sup-ann"


async def test_two_concurrent_claims_exactly_one_wins(sandbox, agent_server: AgentServer):
    key = await supervisor_key(sandbox)
    base = sandbox.info.base_url
    call = await start_call(sandbox, agent_server)
    async with console(base, key, "sup-ann"), console(base, key, "sup-bob"):
        esc_id = await escalate(sandbox, call)
        replies = await asyncio.gather(
            claim(sandbox, key, esc_id, "sup-ann"), claim(sandbox, key, esc_id, "sup-bob")
        )
    assert sorted(r.status for r in replies) == [200, 409]
    winner = next(r for r in replies if r.status == 200).body["supervisor_id"]
    loser = next(r for r in replies if r.status == 409)
    assert loser.code == "escalation_already_claimed" and loser.body["detail"]["supervisor_id"] == winner
    fired = await events(sandbox, call.call_id, "ai_session.escalated")
    assert [e.data["supervisor_id"] for e in fired] == [None, winner]


async def test_claim_refusals_and_the_call_ending(sandbox, agent_server: AgentServer):
    key = await supervisor_key(sandbox)
    base = sandbox.info.base_url
    call = await start_call(sandbox, agent_server)
    async with console(base, key, "sup-ann") as ann:
        esc_id = await escalate(sandbox, call)
        await ann.next_of("escalation.created")

        unknown_sup = await claim(sandbox, key, esc_id, "sup-ghost")
        assert unknown_sup.status == 404 and unknown_sup.code == "supervisor_not_found"
        unknown_esc = await claim(sandbox, key, "esc_01JT9Z6Q3C7X0M4S8V2B5N1K7D", "sup-ann")
        assert unknown_esc.status == 404 and unknown_esc.code == "escalation_not_found"
        bad = await http(sandbox, "POST", f"/api/v1/escalations/{esc_id}/claim", {"who": 1}, auth=key)
        assert bad.status == 400 and bad.code == "validation_error"
        bad_id = await claim(sandbox, key, esc_id, "no spaces allowed")
        assert bad_id.status == 400 and bad_id.code == "validation_error"
        no_scope = await supervisor_key(sandbox, scopes=("calls:read",))
        refused = await claim(sandbox, no_scope, esc_id, "sup-ann")
        assert refused.status == 403 and refused.code == "missing_scope"
        token = await claim(sandbox, call.token, esc_id, "sup-ann")
        assert token.status == 403 and token.code == "api_key_required"
        status = await http(sandbox, "GET", "/api/v1/escalations?status=nope", auth=key)
        assert status.status == 400 and status.code == "invalid_status"

        # The caller hangs up: the escalation closes, the consoles are told, a claim is 409.
        await end_call(sandbox, call.call_id)
        closed = await ann.next_of("escalation.closed")
        assert closed["escalation"]["escalation_id"] == esc_id
        assert closed["escalation"]["status"] == "closed"
        assert closed["escalation"]["closed_reason"] == "hangup"
        late = await claim(sandbox, key, esc_id, "sup-ann")
        assert late.status == 409 and late.code == "escalation_closed"
        one = await http(sandbox, "GET", f"/api/v1/escalations/{esc_id}", auth=key)
        assert one.body["call_state"]["state"] == "ended"
        pending = await http(sandbox, "GET", "/api/v1/escalations?status=pending,claimed", auth=key)
        assert pending.body["items"] == []


# ---------------------------------------------------------------- auth on the WebSocket


async def _refusal(base: str, hello: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    session, ws = await raw_socket(base)
    try:
        await ws.send_json(hello)
        first = await ws.receive(timeout=5)
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        return first.json(), ws.close_code
    finally:
        await ws.close()
        await session.close()


async def test_websocket_auth_failures(sandbox):
    base = sandbox.info.base_url
    frame, code = await _refusal(base, {"type": "hello", "supervisor_id": "sup-ann"})
    assert (frame["type"], frame["code"], code) == ("error", "missing_credentials", 4401)

    frame, code = await _refusal(base, {"type": "hello", "supervisor_id": "s", "api_key": "yt_live_nope"})
    assert (frame["code"], code) == ("invalid_api_key", 4401)

    no_scope = await supervisor_key(sandbox, scopes=("calls:read", "webhooks:manage"))
    frame, code = await _refusal(base, {"type": "hello", "supervisor_id": "s", "api_key": no_scope})
    assert (frame["code"], code) == ("missing_scope", 4403)

    frame, code = await _refusal(base, {"type": "duty", "on_duty": True})
    assert (frame["code"], code) == ("invalid_hello", 4400)

    # With an Authorization header the refusal is plain HTTP, before the upgrade.
    async with aiohttp.ClientSession() as session:
        for auth, status, code_ in (
            (f"Bearer {no_scope}", 403, "missing_scope"),
            ("Bearer yt_live_nope", 401, "invalid_api_key"),
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await session.ws_connect(f"{base}/api/v1/supervisors/ws", headers={"Authorization": auth})
            assert err.value.status == status
            async with session.get(f"{base}/api/v1/supervisors/ws", headers={"Authorization": auth}) as resp:
                assert resp.status == status and (await resp.json())["detail"]["code"] == code_

    # Nobody got registered along the way.
    assert await sandbox.runtime.services.supervisors.list("acme") == []
    # A header key that holds the scope: the hello then only names the supervisor.
    key = await supervisor_key(sandbox)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            f"{base}/api/v1/supervisors/ws", headers={"Authorization": f"Bearer {key}"}
        )
        await ws.send_json({"type": "hello", "supervisor_id": "sup-hdr"})
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        await ws.close()


# ---------------------------------------------------------------- tenants


async def test_a_supervisor_of_another_tenant_never_sees_nor_claims_it(sandbox, agent_server: AgentServer):
    base = sandbox.info.base_url
    acme_key = await supervisor_key(sandbox, "acme")
    beta_key = await supervisor_key(sandbox, "beta")
    call = await start_call(sandbox, agent_server)
    async with console(base, acme_key, "sup-ann") as ann, console(base, beta_key, "sup-ann") as beta:
        esc_id = await escalate(sandbox, call)
        assert (await ann.next_of("escalation.created"))["escalation"]["escalation_id"] == esc_id
        await beta.nothing_pending()

        listed = await http(sandbox, "GET", "/api/v1/escalations", auth=beta_key)
        assert listed.status == 200 and listed.body["items"] == []
        one = await http(sandbox, "GET", f"/api/v1/escalations/{esc_id}", auth=beta_key)
        assert one.status == 404 and one.code == "escalation_not_found"
        # The same supervisor id in tenant beta still cannot claim acme's escalation.
        taken = await claim(sandbox, beta_key, esc_id, "sup-ann")
        assert taken.status == 404 and taken.code == "escalation_not_found"
        await beta.nothing_pending()

        mine = await claim(sandbox, acme_key, esc_id, "sup-ann")
        assert mine.status == 200
        await ann.next_of("escalation.claimed")
        await beta.nothing_pending()
    listed = await http(sandbox, "GET", "/api/v1/supervisors", auth=beta_key)
    assert [s["supervisor_id"] for s in listed.body["items"]] == ["sup-ann"]
    assert listed.body["items"][0]["tenant_id"] == "beta"


# ---------------------------------------------------------------- two instances, one Redis


@pytest.fixture
async def second_instance(sandbox, redis_url: str, tmp_path: Path) -> AsyncIterator[BridgeRuntime]:
    settings = fast_settings(redis_url, tmp_path / "i2", instance_id="bridge-2", esl_url=sandbox.info.esl_url)
    runtime = BridgeRuntime(settings, sandbox=False)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def test_a_supervisor_on_instance_2_gets_the_escalation_raised_on_instance_1(
    sandbox, second_instance: BridgeRuntime, agent_server: AgentServer
):
    key = await supervisor_key(sandbox)
    assert second_instance.endpoint is not None
    base2 = second_instance.endpoint.base_url
    call = await start_call(sandbox, agent_server)
    async with console(base2, key, "sup-far") as far, console(sandbox.info.base_url, key, "sup-near") as near:
        # Raised on instance 1 (the SDK talks to the sandbox's base URL).
        esc_id = await escalate(sandbox, call)
        assert (await far.next_of("escalation.created"))["escalation"]["escalation_id"] == esc_id
        await near.next_of("escalation.created")
        # Duty is shared: instance 1 sees the supervisor connected to instance 2 as on duty.
        assert (await sandbox.runtime.services.supervisors.get("acme", "sup-far")).on_duty is True

        # Claimed through instance 2: instance 1's console is told, the webhook names sup-far.
        won = await claim(sandbox, key, esc_id, "sup-far", base_url=base2)
        assert won.status == 200 and won.body["call_state"]["state"] == "in_progress"
        told = await near.next_of("escalation.claimed")
        assert told["escalation"]["supervisor_id"] == "sup-far"
        lost = await claim(sandbox, key, esc_id, "sup-near")
        assert lost.status == 409 and lost.code == "escalation_already_claimed"

    async def both_fired() -> list[Any]:
        fired = await events(sandbox, call.call_id, "ai_session.escalated")
        return fired if len(fired) == 2 else []

    fired = await wait_until(both_fired)
    assert [e.data["supervisor_id"] for e in fired] == [None, "sup-far"]


async def test_a_replay_returns_the_same_escalation_and_a_transfer_closes_it(
    sandbox, agent_server: AgentServer
):
    key = await supervisor_key(sandbox)
    call = await start_call(sandbox, agent_server)
    body = {"event": "request_supervisor", "reason": "Wants a manager", "urgency": "low"}
    async with console(sandbox.info.base_url, key, "sup-ann") as ann:
        first = await control(sandbox, call.call_id, body, auth=call.token, idempotency_key="k-esc-1")
        again = await control(sandbox, call.call_id, body, auth=call.token, idempotency_key="k-esc-1")
        assert first.status == again.status == 200
        assert again.headers.get("Idempotent-Replayed") == "true"
        esc_id = first.body["result"]["escalation_id"]
        assert again.body["result"]["escalation_id"] == esc_id
        assert (await ann.next_of("escalation.created"))["escalation"]["urgency"] == "low"
        await ann.nothing_pending()  # the replay pushed nothing
        assert len(await events(sandbox, call.call_id, "ai_session.escalated")) == 1

        # The AI hands the caller to a queue: the session ends, so does the escalation.
        await in_thread(
            sdk(sandbox).ai_sessions.transfer,
            call.call_id,
            destination_type="agent_queue",
            destination="tier1",
            callback_token=call.token,
        )
        closed = await ann.next_of("escalation.closed")
        assert closed["escalation"]["closed_reason"] == "transferred_agent_queue"
        late = await claim(sandbox, key, esc_id, "sup-ann")
        assert late.status == 409 and late.code == "escalation_closed"


# ---------------------------------------------------------------- the whole flow, with a conference


async def test_claimed_supervisor_is_conferenced_in_and_the_escalation_shows_the_room(
    sandbox, agent_server: AgentServer
):
    key = await supervisor_key(sandbox)
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    async with console(sandbox.info.base_url, key, "sup-ann", contact="user/1002@127.0.0.1") as ann:
        esc_id = await escalate(sandbox, call)
        await ann.next_of("escalation.created")
        assert (await claim(sandbox, key, esc_id, "sup-ann")).status == 200

        # The AI brings the supervisor who claimed it into the call.
        conf_id = (await in_thread(ai.conference_start, call.call_id, callback_token=call.token))["result"][
            "conference_id"
        ]
        added = await in_thread(
            ai.conference_add,
            call.call_id,
            participant_type="supervisor",
            destination="sup-ann",
            callback_token=call.token,
        )
        assert added["result"]["member_id"].startswith("mem-")

        async def room() -> dict[str, Any] | None:
            one = await http(sandbox, "GET", f"/api/v1/escalations/{esc_id}", auth=key)
            state = one.body["call_state"]
            return (
                state
                if sorted(state["current_participants"]) == ["ai_agent", "caller", "supervisor"]
                else None
            )

        state = await wait_until(room)
        assert state["conference_id"] == conf_id and state["state"] == "in_progress"
