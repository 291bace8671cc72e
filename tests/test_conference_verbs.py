"""The conference verbs end to end: the official SDK with the call's callback token drives a sandbox
call; each test checks the API answer, the commands the simulated FreeSWITCH received, the members
its conference holds, the participants the bridge tracks and the webhooks a real receiver got."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from yotel import errors

from tests.conftest import AgentServer, in_thread
from tests.helpers import (
    CALLER,
    LiveCall,
    control,
    end_call,
    sandbox_with,
    sdk,
    snapshot,
    start_call,
    wait_until,
)
from tests.webhook_receiver import Receiver, subscribed

PSTN_PERSON = "+15557654321"


@pytest.fixture
async def sandbox(redis_url: str, redis: Any, tmp_path: Any) -> Any:
    # Several verbs on one call within a second: the rate limit has its own tests.
    async with sandbox_with(redis_url, tmp_path, rate_limit_per_s=1000) as box:
        yield box


@pytest.fixture
async def receiver(sandbox: Any) -> AsyncIterator[Receiver]:
    """A customer endpoint subscribed to ai_session.*; every request is checked with the SDK."""
    async with subscribed(sandbox, ["ai_session.*"]) as rec:
        yield rec


# ---------------------------------------------------------------- helpers


@dataclass
class InConference:
    call: LiveCall
    conference_id: str
    ai_leg: str
    token: str  # the callback token of the AI leg's metadata frame


def ai(sandbox: Any) -> Any:
    return sdk(sandbox).ai_sessions


def room(sandbox: Any, conference_id: str) -> dict[str, int]:
    """The members FreeSWITCH (the simulator) holds: channel uuid -> member id."""
    conf = sandbox.sim.core.conferences.rooms.get(conference_id)
    return {m.channel.uuid: m.id for m in conf.members} if conf else {}


async def tracked(sandbox: Any, conference_id: str) -> list[dict[str, Any]]:
    store = sandbox.runtime.services.conferences
    return [p.public() for p in await store.participants(conference_id)]


def conference_frame(agent_server: AgentServer, call_id: str) -> dict[str, Any] | None:
    for conn in agent_server.connections:
        first = conn["texts"][0] if conn["texts"] else {}
        if first.get("call_id") == call_id and first.get("conference_id"):
            return first
    return None


async def start_conference(sandbox: Any, agent_server: AgentServer) -> InConference:
    call = await start_call(sandbox, agent_server)
    reply = await in_thread(ai(sandbox).conference_start, call.call_id, callback_token=call.token)
    conf_id = reply["result"]["conference_id"]
    frame = await agent_server.wait_for(lambda: conference_frame(agent_server, call.call_id))
    conf = await sandbox.runtime.services.conferences.get(conf_id)
    assert conf is not None and conf.ai_leg_uuid
    await wait_until(lambda: _count(sandbox, conf_id, 2))
    return InConference(call, conf_id, conf.ai_leg_uuid, frame["callback_token"])


async def _count(sandbox: Any, conference_id: str, n: int) -> bool:
    return len(await tracked(sandbox, conference_id)) == n and len(room(sandbox, conference_id)) == n


async def add_e164(sandbox: Any, c: InConference, number: str = PSTN_PERSON) -> dict[str, Any]:
    reply = await in_thread(
        ai(sandbox).conference_add,
        c.call.call_id,
        participant_type="e164",
        destination=number,
        callback_token=c.token,
    )
    return reply["result"]


# ---------------------------------------------------------------- conference_start


async def test_conference_start_moves_the_caller_and_the_ai_leg_into_a_conference(
    sandbox, agent_server: AgentServer, receiver: Receiver
):
    call = await start_call(sandbox, agent_server)
    cid = call.call_id
    key = str(uuid.uuid4())
    reply = await in_thread(ai(sandbox).conference_start, cid, callback_token=call.token, idempotency_key=key)
    assert reply["ok"] is True
    conf_id = reply["result"]["conference_id"]
    assert re.fullmatch(r"conf_[0-9A-HJKMNP-TV-Z]{26}", conf_id)
    conf = await sandbox.runtime.services.conferences.get(conf_id)
    assert conf is not None and conf.call_id == cid and conf.profile == "default"
    leg = conf.ai_leg_uuid
    assert leg

    # What the switch was told, in order: the AI leg (loopback-a joins, loopback-b parks), the
    # caller moved in, the caller's fork closed; then the AI's fork on its own leg, mix `mixed`.
    sent = sandbox.sim.commands()
    originate = (
        f"originate {{origination_uuid={leg},origination_caller_id_name=ai_agent,bridge_ai_call_id={cid},"
        f"bridge_conference_id={conf_id},bridge_member_type=ai_agent,"
        f"mod_audio_fork_subprotocol=audio.drachtio.org}}loopback/bridge_ai_leg/lab "
        f"&conference({conf_id}@default)"
    )
    transfer = f"uuid_transfer {cid} 'conference:{conf_id}@default' inline"
    stop = f"uuid_audio_fork {cid} stop ai_fork"
    fork = next(c for c in sent if c.startswith(f"uuid_audio_fork ^^|{leg}|start|"))
    order = [sent.index(c) for c in (originate, transfer, stop, fork)]
    assert order == sorted(order), sent
    assert f"|{agent_server.url}|mixed|16k|ai_fork|" in fork

    # The simulated switch: both in the room, the fork moved from the caller to the AI leg.
    await wait_until(lambda: _count(sandbox, conf_id, 2))
    assert set(room(sandbox, conf_id)) == {cid, leg}
    assert snapshot(sandbox, cid)["conference"] == conf_id
    assert snapshot(sandbox, cid)["audio_forks"] == []
    ai_fork = snapshot(sandbox, leg)["audio_fork"]
    assert ai_fork["mix"] == "mixed" and ai_fork["bugname"] == "ai_fork"
    b_leg = snapshot(sandbox, leg)["variables"]["other_loopback_leg_uuid"]
    assert (
        snapshot(sandbox, b_leg)["state"] == "CS_EXECUTE" and snapshot(sandbox, b_leg)["conference"] is None
    )

    # The AI's agent server: a second connection whose metadata frame names the conference.
    frame = await agent_server.wait_for(lambda: conference_frame(agent_server, cid))
    assert frame["conference_id"] == conf_id and frame["resumed"] is True and frame["type"] == "metadata"
    assert frame["callback_token"].startswith("yt_cb_") and frame["callback_token"] != call.token

    # The members the bridge tracks, from the conference::maintenance events.
    members = await tracked(sandbox, conf_id)
    by_type = {m["type"]: m for m in members}
    assert set(by_type) == {"caller", "ai_agent"}
    assert by_type["caller"]["call_id"] == cid and by_type["caller"]["destination"] == CALLER
    assert by_type["ai_agent"]["call_id"] == leg and by_type["ai_agent"]["destination"] is None
    for m in members:
        assert m["member_id"] == f"mem-{room(sandbox, conf_id)[m['call_id']]}" and m["muted"] is False
    assert conf.ai_member_id in (None, by_type["ai_agent"]["member_id"])

    # get_call_state with the new token.
    state = (await in_thread(ai(sandbox).get_call_state, cid, callback_token=frame["callback_token"]))[
        "result"
    ]
    assert state["conference_id"] == conf_id
    assert sorted(state["current_participants"]) == ["ai_agent", "caller"]

    # Webhooks: one conference_changed per member that joined, signed (the receiver verified it).
    changes = await wait_until(
        lambda: _ready(receiver.of("ai_session.conference_changed", cid), 2), timeout=10
    )
    assert [c["action"] for c in changes] == ["member_joined", "member_joined"]
    assert {c["member_id"] for c in changes} == {m["member_id"] for m in members}
    assert all(c["conference_id"] == conf_id for c in changes)
    # Deliveries may arrive in any order (docs/webhooks.md): the later change holds both members.
    both = next(c for c in changes if len(c["participants"]) == 2)
    assert both["participants"] == members
    assert set(both["participants"][0]) == {
        "member_id",
        "type",
        "destination",
        "call_id",
        "joined_at",
        "muted",
    }

    # A replay with the same key is the cached 200; a new key is a state-machine 409.
    replay = await control(sandbox, cid, {"event": "conference_start"}, auth=call.token, idempotency_key=key)
    assert replay.status == 200 and replay.body["result"] == {"conference_id": conf_id}
    assert replay.headers.get("Idempotent-Replayed") == "true"
    with pytest.raises(errors.ConflictError) as exc:
        await in_thread(ai(sandbox).conference_start, cid, callback_token=call.token)
    assert exc.value.status_code == 409 and exc.value.detail["code"] == "conference_already_started"
    assert len([c for c in sandbox.sim.commands() if c.startswith("originate ")]) == 1


async def _ready(items: list[Any], n: int) -> list[Any] | None:
    return items if len(items) >= n else None


def _change(changes: list[dict[str, Any]], action: str, member_id: str) -> dict[str, Any]:
    """The conference_changed for one member's change (deliveries are not ordered)."""
    found = [c for c in changes if c["action"] == action and c["member_id"] == member_id]
    assert len(found) == 1, changes
    return found[0]


# ---------------------------------------------------------------- conference_add


async def test_conference_add_dials_an_e164_number_and_returns_its_member(
    sandbox, agent_server: AgentServer, receiver: Receiver
):
    c = await start_conference(sandbox, agent_server)
    cid = c.call.call_id
    result = await add_e164(sandbox, c)
    leg = result["call_id"]
    assert re.fullmatch(r"mem-\d+", result["member_id"])

    expected = (
        f"originate {{origination_uuid={leg},bridge_ai_call_id={cid},bridge_conference_id={c.conference_id},"
        f"bridge_member_type=e164,bridge_member_destination={PSTN_PERSON},originate_timeout=30,"
        f"ignore_early_media=true,origination_caller_id_number={CALLER}}}"
        f"sofia/gateway/pstn/{PSTN_PERSON} &conference({c.conference_id}@default)"
    )
    assert expected in sandbox.sim.commands()
    # FreeSWITCH already holds the member the verb returned.
    assert room(sandbox, c.conference_id)[leg] == int(result["member_id"].removeprefix("mem-"))
    assert snapshot(sandbox, leg)["answered"] is True

    members = await tracked(sandbox, c.conference_id)
    added = next(m for m in members if m["member_id"] == result["member_id"])
    assert added["type"] == "e164" and added["destination"] == PSTN_PERSON and added["call_id"] == leg
    assert [m["type"] for m in members] == ["ai_agent", "caller", "e164"]

    changes = await wait_until(
        lambda: _ready(receiver.of("ai_session.conference_changed", cid), 3), timeout=10
    )
    joined = _change(changes, "member_joined", result["member_id"])
    assert joined["participants"] == members
    state = (await in_thread(ai(sandbox).get_call_state, cid, callback_token=c.token))["result"]
    assert state["current_participants"] == ["ai_agent", "caller", "e164"]


async def test_conference_add_agent_and_sip_uri_dial_strings(sandbox, agent_server: AgentServer):
    c = await start_conference(sandbox, agent_server)
    cid = c.call.call_id
    agent = await in_thread(
        ai(sandbox).conference_add, cid, participant_type="agent", destination="1001", callback_token=c.token
    )
    sip = await in_thread(
        ai(sandbox).conference_add,
        cid,
        participant_type="sip_uri",
        destination="sip:alice@example.com",
        callback_token=c.token,
    )
    sent = sandbox.sim.commands()
    agent_leg, sip_leg = agent["result"]["call_id"], sip["result"]["call_id"]
    assert any(
        s.startswith(f"originate {{origination_uuid={agent_leg},")
        and s.endswith(f"}}user/1001@127.0.0.1 &conference({c.conference_id}@default)")
        for s in sent
    ), sent
    assert any(
        s.startswith(f"originate {{origination_uuid={sip_leg},")
        and s.endswith(f"}}sofia/lab/sip:alice@example.com &conference({c.conference_id}@default)")
        for s in sent
    ), sent
    members = {m["call_id"]: m for m in await tracked(sandbox, c.conference_id)}
    assert (members[agent_leg]["type"], members[agent_leg]["destination"]) == ("agent", "1001")
    assert (members[sip_leg]["type"], members[sip_leg]["destination"]) == ("sip_uri", "sip:alice@example.com")
    assert {agent_leg, sip_leg} <= set(room(sandbox, c.conference_id))


async def test_conference_add_refused_by_the_far_end_is_502_with_the_cause(
    sandbox, agent_server: AgentServer
):
    c = await start_conference(sandbox, agent_server)
    sandbox.sim.set_originate_outcome(f"sofia/gateway/pstn/{PSTN_PERSON}", "USER_BUSY", answer_delay_s=0.01)
    with pytest.raises(errors.APIError) as exc:
        await add_e164(sandbox, c)
    assert exc.value.status_code == 502
    assert exc.value.detail["code"] == "conference_add_failed"
    assert exc.value.detail["cause"] == "USER_BUSY" and "USER_BUSY" in exc.value.detail["message"]
    assert len(room(sandbox, c.conference_id)) == 2
    assert [m["type"] for m in await tracked(sandbox, c.conference_id)] == ["ai_agent", "caller"]


async def test_a_member_hanging_up_leaves_the_participants(
    sandbox, agent_server: AgentServer, receiver: Receiver
):
    c = await start_conference(sandbox, agent_server)
    result = await add_e164(sandbox, c)
    await end_call(sandbox, result["call_id"])
    await wait_until(lambda: _count(sandbox, c.conference_id, 2))
    assert result["call_id"] not in room(sandbox, c.conference_id)
    assert [m["type"] for m in await tracked(sandbox, c.conference_id)] == ["ai_agent", "caller"]
    changes = await wait_until(
        lambda: _ready(receiver.of("ai_session.conference_changed", c.call.call_id), 4), timeout=10
    )
    left = _change(changes, "member_left", result["member_id"])
    assert [p["type"] for p in left["participants"]] == ["ai_agent", "caller"]


# ---------------------------------------------------------------- conference_remove


async def test_conference_remove_kicks_the_member(sandbox, agent_server: AgentServer, receiver: Receiver):
    c = await start_conference(sandbox, agent_server)
    cid = c.call.call_id
    result = await add_e164(sandbox, c)
    fs_id = result["member_id"].removeprefix("mem-")
    reply = await in_thread(
        ai(sandbox).conference_remove, cid, member_id=result["member_id"], callback_token=c.token
    )
    assert reply["ok"] is True and reply["result"] == {}
    assert f"conference {c.conference_id} kick {fs_id}" in sandbox.sim.commands()
    await wait_until(lambda: _count(sandbox, c.conference_id, 2))
    assert result["call_id"] not in room(sandbox, c.conference_id)
    changes = await wait_until(
        lambda: _ready(receiver.of("ai_session.conference_changed", cid), 4), timeout=10
    )
    left = _change(changes, "member_left", result["member_id"])
    assert result["call_id"] not in [p["call_id"] for p in left["participants"]]

    # The member is gone now: 404.
    with pytest.raises(errors.NotFoundError) as exc:
        await in_thread(
            ai(sandbox).conference_remove, cid, member_id=result["member_id"], callback_token=c.token
        )
    assert exc.value.detail["code"] == "member_not_found"


async def test_conference_remove_unknown_member_is_404_and_caller_or_ai_is_409(
    sandbox, agent_server: AgentServer
):
    c = await start_conference(sandbox, agent_server)
    cid = c.call.call_id
    with pytest.raises(errors.NotFoundError) as exc:
        await in_thread(ai(sandbox).conference_remove, cid, member_id="mem-99999", callback_token=c.token)
    assert exc.value.status_code == 404 and exc.value.detail["code"] == "member_not_found"
    for member in await tracked(sandbox, c.conference_id):
        with pytest.raises(errors.ConflictError) as conflict:
            await in_thread(
                ai(sandbox).conference_remove, cid, member_id=member["member_id"], callback_token=c.token
            )
        assert conflict.value.detail["code"] == "member_not_removable"
        assert ("hangup" if member["type"] == "caller" else "conference_leave") in conflict.value.detail[
            "message"
        ]
    assert not [s for s in sandbox.sim.commands() if " kick " in s]
    assert len(room(sandbox, c.conference_id)) == 2


# ---------------------------------------------------------------- no conference


@pytest.mark.parametrize(
    "verb, fields",
    [
        ("conference_add", {"participant_type": "e164", "destination": PSTN_PERSON}),
        ("conference_remove", {"member_id": "mem-1"}),
        ("conference_leave", {}),
    ],
)
async def test_verbs_that_need_a_conference_are_409_without_one(
    sandbox, agent_server: AgentServer, verb, fields
):
    call = await start_call(sandbox, agent_server)
    before = len(sandbox.sim.commands())
    with pytest.raises(errors.ConflictError) as exc:
        await in_thread(getattr(ai(sandbox), verb), call.call_id, callback_token=call.token, **fields)
    assert exc.value.status_code == 409 and exc.value.detail["code"] == "no_conference"
    assert not [s for s in sandbox.sim.commands()[before:] if s.startswith(("originate", "conference"))]


# ---------------------------------------------------------------- conference_leave


async def test_conference_leave_drops_the_ai_leg_and_the_conference_goes_on(
    sandbox, agent_server: AgentServer, receiver: Receiver
):
    c = await start_conference(sandbox, agent_server)
    cid = c.call.call_id
    added = await add_e164(sandbox, c)
    ai_member = next(m for m in await tracked(sandbox, c.conference_id) if m["type"] == "ai_agent")

    reply = await in_thread(ai(sandbox).conference_leave, cid, callback_token=c.token)
    assert reply["ok"] is True and reply["result"] == {}
    sent = sandbox.sim.commands()
    assert sent.index(f"uuid_audio_fork {c.ai_leg} stop ai_fork") < sent.index(
        f"uuid_kill {c.ai_leg} NORMAL_CLEARING"
    )

    # The AI leg (both loopback halves) is gone; the caller and the dialled member stay.
    await wait_until(lambda: _count(sandbox, c.conference_id, 2))
    assert set(room(sandbox, c.conference_id)) == {cid, added["call_id"]}
    b_leg = snapshot(sandbox, c.ai_leg)["variables"]["other_loopback_leg_uuid"]
    await wait_until(lambda: _gone(sandbox, b_leg))
    assert snapshot(sandbox, c.ai_leg)["hangup_cause"] == "NORMAL_CLEARING"
    assert (
        snapshot(sandbox, cid)["hangup_cause"] is None
        and snapshot(sandbox, cid)["conference"] == c.conference_id
    )
    assert [m["type"] for m in await tracked(sandbox, c.conference_id)] == ["caller", "e164"]

    session = await sandbox.runtime.services.sessions.get(cid)
    assert session.outcome == "conference_left" and session.state == "ended"
    ended = await wait_until(lambda: _ready(receiver.of("ai_session.ended", cid), 1), timeout=10)
    assert ended[0]["outcome"] == "conference_left"
    assert any(e.get("event") == "conference_leave" for e in ended[0]["metadata"]["logs"])
    changes = await wait_until(
        lambda: _ready(receiver.of("ai_session.conference_changed", cid), 4), timeout=10
    )
    left = _change(changes, "member_left", ai_member["member_id"])
    assert [p["type"] for p in left["participants"]] == ["caller", "e164"]

    # The session is over for the AI.
    with pytest.raises(errors.AISessionTerminated):
        await in_thread(ai(sandbox).get_call_state, cid, callback_token=c.token)


async def test_caller_hanging_up_in_a_conference_ends_the_session_and_drops_the_ai_leg(
    sandbox, agent_server: AgentServer
):
    c = await start_conference(sandbox, agent_server)
    await end_call(sandbox, c.call.call_id)
    await wait_until(lambda: _gone(sandbox, c.ai_leg))
    session = await sandbox.runtime.services.sessions.get(c.call.call_id)
    assert (session.outcome, session.reason) == ("hangup", "caller_hangup")
    assert f"uuid_kill {c.ai_leg} NORMAL_CLEARING" in sandbox.sim.commands()


async def _gone(sandbox: Any, uuid: str) -> bool:
    snap = sandbox.sim.snapshot(uuid)
    return bool(snap and snap["ended_at"])


async def test_play_audio_in_a_conference_plays_to_the_ai_legs_far_side(sandbox, agent_server: AgentServer):
    c = await start_conference(sandbox, agent_server)
    b_leg = snapshot(sandbox, c.ai_leg)["variables"]["other_loopback_leg_uuid"]
    reply = await in_thread(
        ai(sandbox).play_audio,
        c.call.call_id,
        audio_url="https://cdn.example.com/hi.wav",
        callback_token=c.token,
    )
    pb = reply["result"]["playback_id"]
    url = "http_cache://https://cdn.example.com/hi.wav"
    assert f"uuid_broadcast {b_leg} playback::{{playback_id={pb}}}{url} aleg" in sandbox.sim.commands()


# ---------------------------------------------------------------- supervisors


async def test_conference_add_supervisor_dials_the_on_duty_supervisors_contact(
    sandbox, agent_server: AgentServer
):
    import aiohttp

    c = await start_conference(sandbox, agent_server)
    cid = c.call.call_id
    url = sandbox.info.base_url.replace("http://", "ws://") + "/api/v1/supervisors/ws"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        hello = {
            "type": "hello",
            "api_key": sandbox.info.admin_key,
            "supervisor_id": "sup-ann",
            "name": "Ann",
            "contact": "user/1002@127.0.0.1",
        }
        await ws.send_json(hello)
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"

        result = (
            await in_thread(
                ai(sandbox).conference_add,
                cid,
                participant_type="supervisor",
                destination="sup-ann",
                callback_token=c.token,
            )
        )["result"]
        leg = result["call_id"]
        assert any(
            s.startswith(f"originate {{origination_uuid={leg},")
            and "bridge_member_type=supervisor,bridge_member_destination=sup-ann," in s
            and s.endswith(f"}}user/1002@127.0.0.1 &conference({c.conference_id}@default)")
            for s in sandbox.sim.commands()
        )
        assert leg in room(sandbox, c.conference_id)
        member = next(m for m in await tracked(sandbox, c.conference_id) if m["call_id"] == leg)
        assert (member["type"], member["destination"], member["member_id"]) == (
            "supervisor",
            "sup-ann",
            result["member_id"],
        )

        # Off duty: 409; nobody is dialled.
        await ws.send_json({"type": "duty", "on_duty": False})
        assert (await ws.receive_json(timeout=5))["on_duty"] is False
        before = len(sandbox.sim.commands())
        with pytest.raises(errors.ConflictError) as exc:
            await in_thread(
                ai(sandbox).conference_add,
                cid,
                participant_type="supervisor",
                destination="sup-ann",
                callback_token=c.token,
            )
        assert exc.value.detail["code"] == "supervisor_unavailable"
        assert not [s for s in sandbox.sim.commands()[before:] if s.startswith("originate")]

    with pytest.raises(errors.NotFoundError) as missing:
        await in_thread(
            ai(sandbox).conference_add,
            cid,
            participant_type="supervisor",
            destination="sup-nobody",
            callback_token=c.token,
        )
    assert missing.value.detail["code"] == "supervisor_not_found"


# ---------------------------------------------------------------- the AI's WebSocket in a conference


async def test_the_callers_old_fork_ending_is_not_taken_for_a_websocket_drop(
    sandbox, agent_server: AgentServer
):
    c = await start_conference(sandbox, agent_server)
    cid = c.call.call_id
    # Should FreeSWITCH report the caller's fork closing (the bridge stopped it), nothing happens.
    sandbox.sim.core.live(cid).custom("mod_audio_fork::disconnect")
    await sandbox.runtime.services.calls.idle()
    session = await sandbox.runtime.services.sessions.get(cid)
    assert session.outcome is None and session.state == "in_progress"
    assert snapshot(sandbox, cid)["hangup_cause"] is None
    assert len(room(sandbox, c.conference_id)) == 2


async def test_the_ai_websocket_dropping_in_a_conference_follows_ws_disconnect_action(
    sandbox, agent_server: AgentServer
):
    c = await start_conference(sandbox, agent_server)
    cid = c.call.call_id
    conn = next(x for x in agent_server.connections if x["texts"] and x["texts"][0].get("conference_id"))
    await conn["ws"].close()  # the AI's server goes away: the fork on the AI leg reports it
    await wait_until(lambda: _gone(sandbox, cid))
    session = await sandbox.runtime.services.sessions.get(cid)
    assert (session.outcome, session.reason) == ("error", "ws_disconnected")  # the agent's default: hangup
    await wait_until(lambda: _gone(sandbox, c.ai_leg))


async def test_mute_and_unmute_member_events_update_the_participant(
    sandbox, agent_server: AgentServer, receiver: Receiver
):
    c = await start_conference(sandbox, agent_server)
    cid = c.call.call_id
    added = await add_e164(sandbox, c)
    fs_id = added["member_id"].removeprefix("mem-")
    # A moderator (or the switch's own console) mutes the member: FreeSWITCH reports mute-member.
    assert (await sandbox.sim.api(f"conference {c.conference_id} mute {fs_id}")).startswith("+OK")

    async def muted() -> bool:
        members = await tracked(sandbox, c.conference_id)
        return next(m for m in members if m["member_id"] == added["member_id"])["muted"]

    await wait_until(muted)
    assert (await sandbox.sim.api(f"conference {c.conference_id} unmute {fs_id}")).startswith("+OK")
    await wait_until(lambda: _not(muted))
    changes = await wait_until(
        lambda: _ready(receiver.of("ai_session.conference_changed", cid), 5), timeout=10
    )
    assert [(x["action"], x["member_id"]) for x in changes[-2:]] == [
        ("member_muted", added["member_id"]),
        ("member_unmuted", added["member_id"]),
    ]
    muted_view = next(p for p in changes[-2]["participants"] if p["member_id"] == added["member_id"])
    assert muted_view["muted"] is True


async def _not(probe: Any) -> bool:
    return not await probe()


async def test_a_refused_move_puts_the_call_back_and_the_start_can_be_retried(
    sandbox, agent_server: AgentServer
):
    call = await start_call(sandbox, agent_server)
    cid = call.call_id
    sandbox.sim.fail_next(f"uuid_transfer {cid} 'conference:", "-ERR No such channel!")
    key = str(uuid.uuid4())
    refused = await control(sandbox, cid, {"event": "conference_start"}, auth=call.token, idempotency_key=key)
    assert refused.status == 502 and refused.code == "switch_command_failed"
    # The AI leg that was already up is killed; the caller never left its park, fork untouched.
    leg = next(c for c in sandbox.sim.commands() if c.startswith("originate ")).split("origination_uuid=")[1][
        :36
    ]
    await wait_until(lambda: _gone(sandbox, leg))
    assert snapshot(sandbox, cid)["conference"] is None and snapshot(sandbox, cid)["audio_fork"]["connected"]
    session = await sandbox.runtime.services.sessions.get(cid)
    assert session.conference_id is None and session.outcome is None
    # A 502 is not cached: the same key runs the verb again, and this time it works.
    again = await control(sandbox, cid, {"event": "conference_start"}, auth=call.token, idempotency_key=key)
    assert again.status == 200, again.body
    conf_id = again.body["result"]["conference_id"]
    await wait_until(lambda: _count(sandbox, conf_id, 2))
    assert snapshot(sandbox, cid)["conference"] == conf_id


async def test_token_refresh_goes_to_the_ai_legs_websocket(
    redis_url, redis, tmp_path, agent_server: AgentServer
):
    # Compressed token life: refresh at 1 s, expiry at 2 s (minute 25 and 30).
    async with sandbox_with(redis_url, tmp_path, token_ttl_s=2, token_refresh_at_s=1) as box:
        c = await start_conference(box, agent_server)
        conn = next(x for x in agent_server.connections if x["texts"] and x["texts"][0].get("conference_id"))

        def refreshed() -> list[dict[str, Any]]:
            return [t for t in conn["texts"] if t.get("type") == "token_refresh"]

        frames = await agent_server.wait_for(refreshed, timeout=5)
        fresh = frames[-1]["callback_token"]
        assert fresh.startswith("yt_cb_") and fresh != c.token
        assert any(
            s.startswith(f"uuid_audio_fork ^^|{c.ai_leg}|send_text|ai_fork|") for s in box.sim.commands()
        )
        state = await in_thread(ai(box).get_call_state, c.call.call_id, callback_token=fresh)
        assert state["result"]["conference_id"] == c.conference_id


async def test_audio_the_ai_streams_is_played_into_the_conference_and_kill_audio_stops_it(
    sandbox, agent_server: AgentServer
):
    import base64

    c = await start_conference(sandbox, agent_server)
    b_leg = snapshot(sandbox, c.ai_leg)["variables"]["other_loopback_leg_uuid"]
    conn = next(x for x in agent_server.connections if x["texts"] and x["texts"][0].get("conference_id"))
    audio = base64.b64encode(bytes(3200)).decode()
    play = {
        "type": "playAudio",
        "data": {"audioContentType": "raw", "sampleRate": 16000, "audioContent": audio},
    }
    await conn["ws"].send_str(json.dumps(play))

    async def broadcast() -> str | None:
        return next(
            (s for s in sandbox.sim.commands() if s.startswith(f"uuid_broadcast {b_leg} playback::")), None
        )

    sent = await wait_until(broadcast)
    assert sent.endswith(".tmp.r16 aleg")  # the temp file mod_audio_fork wrote on the AI leg
    await conn["ws"].send_str(json.dumps({"type": "killAudio"}))
    await wait_until(lambda: _sent(sandbox, f"uuid_break {b_leg} all"))


async def test_audio_the_ai_streams_on_a_two_party_call_is_played_to_the_caller(
    sandbox, agent_server: AgentServer
):
    import base64

    call = await start_call(sandbox, agent_server)
    conn = agent_server.connection(call.call_id)
    audio = base64.b64encode(bytes(1600)).decode()
    play = {
        "type": "playAudio",
        "data": {"audioContentType": "raw", "sampleRate": 8000, "audioContent": audio},
    }
    await conn["ws"].send_str(json.dumps(play))

    async def broadcast() -> str | None:
        prefix = f"uuid_broadcast {call.call_id} playback::"
        return next((s for s in sandbox.sim.commands() if s.startswith(prefix)), None)

    assert (await wait_until(broadcast)).endswith(".tmp.r8 aleg")


async def _sent(sandbox: Any, command: str) -> bool:
    return command in sandbox.sim.commands()


@pytest.mark.parametrize("verb", ["hangup", "transfer"])
async def test_ending_the_session_from_a_conference_drops_the_ai_leg(
    sandbox, agent_server: AgentServer, verb
):
    c = await start_conference(sandbox, agent_server)
    cid = c.call.call_id
    if verb == "hangup":
        await in_thread(ai(sandbox).hangup, cid, callback_token=c.token)
    else:
        await in_thread(
            ai(sandbox).transfer,
            cid,
            destination_type="agent_queue",
            destination="support",
            callback_token=c.token,
        )
    await wait_until(lambda: _gone(sandbox, c.ai_leg))
    assert f"uuid_kill {c.ai_leg} NORMAL_CLEARING" in sandbox.sim.commands()
    session = await sandbox.runtime.services.sessions.get(cid)
    assert session.outcome == ("hangup" if verb == "hangup" else "transferred_agent_queue")
    if verb == "transfer":
        # The caller left the room for the queue; nobody is left in the conference.
        await wait_until(lambda: _count(sandbox, c.conference_id, 0))
        assert snapshot(sandbox, cid)["callcenter"] is not None


async def test_hangup_in_a_conference_ends_the_members_the_ai_added(sandbox, agent_server: AgentServer):
    """Issue 10: the AI's hangup lets go of everyone it brought in; conference_leave (above) does not."""
    c = await start_conference(sandbox, agent_server)
    first = await add_e164(sandbox, c)
    second = await add_e164(sandbox, c, "+442079460959")
    await wait_until(lambda: _count(sandbox, c.conference_id, 4))
    await in_thread(ai(sandbox).hangup, c.call.call_id, callback_token=c.token)
    for leg in (first["call_id"], second["call_id"], c.ai_leg, c.call.call_id):
        await wait_until(lambda leg=leg: _gone(sandbox, leg))
    assert f"uuid_kill {first['call_id']} NORMAL_CLEARING" in sandbox.sim.commands()
    await wait_until(lambda: _count(sandbox, c.conference_id, 0))
