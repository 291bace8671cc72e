"""monitor_start, monitor_stop, whisper and barge end to end: the official SDK with the call's
callback token on sandbox calls. Each test sets a conference up (conference_start, then
conference_add of an agent leg, whose call_id is the target), drives the verb, and checks the
answer, the commands the simulated FreeSWITCH received, the state it holds (forks, displace,
members, relations) and what follows (the monitor fork's metadata frame, conference_changed)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from yotel.errors import APIError, ConferenceMembershipRequired, ConflictError

from bridge.calls.monitors import new_monitor
from bridge.store.tenants import ALL_SCOPES
from tests.conftest import AgentServer, in_thread
from tests.helpers import (
    CALLER,
    DIALED,
    LiveCall,
    commands,
    end_call,
    events,
    http,
    sandbox_with,
    sdk,
    snapshot,
    start_call,
    wait_until,
)
from tests.webhook_receiver import Receiver, subscribed

TIP = "https://cdn.example.com/coach/upsell-tip.wav"
PSTN = "sofia/gateway/pstn/"


@pytest.fixture
async def sandbox(redis_url: str, redis: Any, tmp_path: Any) -> Any:
    # Many verbs on one call within a second: the rate limit has its own tests.
    async with sandbox_with(redis_url, tmp_path, rate_limit_per_s=1000) as box:
        yield box


@pytest.fixture
async def webhooks(sandbox: Any) -> AsyncIterator[Receiver]:
    """A customer endpoint subscribed to ai_session.* through the webhooks API."""
    async with subscribed(sandbox, ["ai_session.*"]) as rec:
        yield rec


@dataclass
class Room:
    call: LiveCall
    ai: Any  # client.ai_sessions
    conference_id: str
    target: str  # the agent leg's call_id
    member_id: str  # its member id, mem-<n>

    @property
    def cid(self) -> str:
        return self.call.call_id

    @property
    def bug(self) -> str:
        return f"monitor_{self.call.call_id}"

    async def verb(self, name: str, **kwargs: Any) -> dict[str, Any]:
        reply = await in_thread(getattr(self.ai, name), self.cid, callback_token=self.call.token, **kwargs)
        assert reply["ok"] is True and reply["call_id"] == self.cid
        return reply["result"]


async def room(sandbox: Any, agent_server: AgentServer) -> Room:
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    started = await in_thread(ai.conference_start, call.call_id, callback_token=call.token)
    added = await in_thread(
        ai.conference_add,
        call.call_id,
        participant_type="agent",
        destination="1001",
        callback_token=call.token,
    )
    result = added["result"]
    return Room(call, ai, started["result"]["conference_id"], result["call_id"], result["member_id"])


def switch_commands(sandbox: Any, prefix: str) -> list[str]:
    """Every API command the simulated switch received, whatever channel it names."""
    return [c for c in sandbox.sim.commands() if c.startswith(prefix)]


def fs_id(member_id: str) -> str:
    return member_id.removeprefix("mem-")


def forks(sandbox: Any, uuid_: str) -> dict[str, dict[str, Any]]:
    return {f["bugname"]: f for f in snapshot(sandbox, uuid_)["audio_forks"]}


def monitor_connection(agent_server: AgentServer, target: str) -> dict[str, Any] | None:
    for conn in agent_server.connections:
        if conn["texts"] and conn["texts"][0].get("type") == "monitor":
            if conn["texts"][0].get("target_call_id") == target:
                return conn
    return None


async def monitors(sandbox: Any, call_id: str) -> dict[str, Any]:
    store = sandbox.runtime.services.monitors.store
    return {m.target_call_id: m for m in await store.of_call(call_id)}


async def logs(sandbox: Any, call_id: str) -> list[dict[str, Any]]:
    return await sandbox.runtime.services.sessions.logs(call_id)


async def bridged_out(sandbox: Any, r: Room) -> str:
    """The agent leaves the conference for a direct call (bridged to another leg); the monitor
    relationship is all that is left between the AI and it. Returns the other leg."""
    other = str(uuid.uuid4())
    reply = await sandbox.sim.api(f"originate {{origination_uuid={other}}}{PSTN}+15557654321 &park()")
    assert reply == f"+OK {other}\n"
    assert await sandbox.sim.api(f"uuid_bridge {r.target} {other}") == f"+OK {other}\n"
    confs = sandbox.runtime.services.conferences

    async def gone() -> bool:
        return await confs.participant_by_call(r.conference_id, r.target) is None

    await wait_until(gone)
    assert snapshot(sandbox, r.target)["bridged_to"] == other
    return other


# ---------------------------------------------------------------- monitor_start / monitor_stop


async def test_monitor_start_opens_a_stereo_fork_of_the_target_into_the_ai_websocket(
    sandbox, agent_server: AgentServer
):
    r = await room(sandbox, agent_server)
    assert await r.verb("monitor_start", target_call_id=r.target, mode="listen") == {}

    started = commands(sandbox, r.target, "uuid_audio_fork")
    assert len(started) == 1
    assert started[0].startswith(
        f"uuid_audio_fork ^^|{r.target}|start|{agent_server.url}|stereo|16k|{r.bug}|"
    )
    sent = json.loads(started[0].split("|", 7)[7])
    assert sent["type"] == "monitor" and sent["mode"] == "listen"
    fork = forks(sandbox, r.target)[r.bug]
    assert fork["mix"] == "stereo" and fork["url"] == agent_server.url

    conn = await agent_server.wait_for(lambda: monitor_connection(agent_server, r.target))
    frame = conn["texts"][0]
    assert frame["call_id"] == r.cid and frame["target_call_id"] == r.target
    assert frame["conference_id"] == r.conference_id and frame["member_id"] == r.member_id
    assert frame["participant_type"] == "agent" and frame["channels"] == ["target", "heard_by_target"]
    assert frame["audio_format"]["channels"] == 2 and frame["audio_format"]["sample_rate_hz"] == 16000
    assert "callback_token" not in frame  # the AI already holds the call's token
    await agent_server.wait_for(lambda: conn["binary_frames"] >= 2)

    monitor = (await monitors(sandbox, r.cid))[r.target]
    assert monitor.state == "active" and monitor.mode == "listen" and monitor.bugname == r.bug
    entry = next(e for e in await logs(sandbox, r.cid) if e.get("event") == "monitor_start")
    assert entry["target_call_id"] == r.target and entry["mode"] == "listen"


async def test_a_second_monitor_start_is_409_already_monitoring(sandbox, agent_server: AgentServer):
    r = await room(sandbox, agent_server)
    await r.verb("monitor_start", target_call_id=r.target)
    with pytest.raises(ConflictError) as exc:
        await r.verb("monitor_start", target_call_id=r.target, mode="listen_and_whisper")
    assert exc.value.detail["code"] == "already_monitoring"
    assert len(commands(sandbox, r.target, "uuid_audio_fork")) == 1
    assert (await monitors(sandbox, r.cid))[r.target].mode == "listen"


async def test_monitor_stop_closes_the_fork_and_a_second_stop_is_409_not_monitoring(
    sandbox, agent_server: AgentServer
):
    r = await room(sandbox, agent_server)
    await r.verb("monitor_start", target_call_id=r.target)
    conn = await agent_server.wait_for(lambda: monitor_connection(agent_server, r.target))

    assert await r.verb("monitor_stop", target_call_id=r.target) == {}
    assert commands(sandbox, r.target, "uuid_audio_fork")[1:] == [f"uuid_audio_fork {r.target} stop {r.bug}"]
    assert r.bug not in forks(sandbox, r.target)
    await agent_server.wait_for(lambda: conn["closed"])
    assert await monitors(sandbox, r.cid) == {}
    assert snapshot(sandbox, r.target)["conference"] == r.conference_id  # the agent stays in

    with pytest.raises(ConflictError) as exc:
        await r.verb("monitor_stop", target_call_id=r.target)
    assert exc.value.detail["code"] == "not_monitoring"
    # Monitoring can start again.
    await r.verb("monitor_start", target_call_id=r.target)
    assert r.bug in forks(sandbox, r.target)


async def test_a_refused_monitor_fork_is_502_and_leaves_no_monitor(sandbox, agent_server: AgentServer):
    r = await room(sandbox, agent_server)
    sandbox.sim.fail_next(f"uuid_audio_fork ^^|{r.target}|start", "-ERR Operation Failed")
    with pytest.raises(APIError) as exc:
        await r.verb("monitor_start", target_call_id=r.target)
    assert exc.value.status_code == 502 and exc.value.detail["code"] == "switch_command_failed"
    assert await monitors(sandbox, r.cid) == {}
    assert await sandbox.runtime.services.monitors.store.watchers(r.target) == set()
    assert r.bug not in forks(sandbox, r.target)
    # Nothing is left claimed: a new request (a new key) starts it.
    await r.verb("monitor_start", target_call_id=r.target)
    assert r.bug in forks(sandbox, r.target)


# ---------------------------------------------------------------- whisper


async def test_whisper_to_a_conference_member_plays_to_that_member_only(sandbox, agent_server: AgentServer):
    r = await room(sandbox, agent_server)
    # A listen-only monitor does not matter here: the conference relationship is enough.
    await r.verb("monitor_start", target_call_id=r.target, mode="listen")
    assert await r.verb("whisper", target_call_id=r.target, audio_url=TIP) == {}

    audio = f"http_cache://{TIP}"
    # A member is addressed by its member id, so the command names the conference, not the channel.
    assert switch_commands(sandbox, f"conference {r.conference_id} play") == [
        f"conference {r.conference_id} play {audio} {fs_id(r.member_id)}"
    ]
    assert snapshot(sandbox, r.target)["conference_member"]["playing"] == audio
    assert snapshot(sandbox, r.cid)["conference_member"]["playing"] is None  # the caller hears nothing
    await wait_until(lambda: _async(snapshot(sandbox, r.target)["conference_member"]["playing"] is None))
    entry = next(e for e in await logs(sandbox, r.cid) if e.get("event") == "whisper")
    assert entry["via"] == "conference_play" and entry["audio_url"] == TIP


async def test_whisper_through_a_listen_and_whisper_monitor_displaces_into_the_target(
    sandbox, agent_server: AgentServer
):
    r = await room(sandbox, agent_server)
    await r.verb("monitor_start", target_call_id=r.target, mode="listen_and_whisper")
    await bridged_out(sandbox, r)

    assert await r.verb("whisper", target_call_id=r.target, audio_url=TIP) == {}
    audio = f"http_cache://{TIP}"
    assert commands(sandbox, r.target, "uuid_displace") == [f"uuid_displace {r.target} start {audio} 0 m"]
    assert snapshot(sandbox, r.target)["displace"] == {audio: "m"}  # mixed into what the agent hears
    assert switch_commands(sandbox, f"conference {r.conference_id} play") == []
    # No loop: the whisper ends with its file.
    await wait_until(lambda: _async(snapshot(sandbox, r.target)["displace"] == {}))


async def test_whisper_on_a_listen_only_monitor_outside_the_conference_is_403(
    sandbox, agent_server: AgentServer
):
    r = await room(sandbox, agent_server)
    await r.verb("monitor_start", target_call_id=r.target, mode="listen")
    await bridged_out(sandbox, r)

    with pytest.raises(ConferenceMembershipRequired) as exc:
        await r.verb("whisper", target_call_id=r.target, audio_url=TIP)
    assert exc.value.status_code == 403
    assert exc.value.detail["code"] == "conference_membership_required"
    assert "listen-only" in exc.value.detail["message"]
    assert commands(sandbox, r.target, "uuid_displace") == []
    assert r.bug in forks(sandbox, r.target)  # the monitor itself goes on


@pytest.fixture
async def tts_sandbox(redis_url: str, redis: Any, tmp_path: Any) -> Any:
    async with sandbox_with(redis_url, tmp_path, rate_limit_per_s=1000, tts="espeak") as box:
        yield box


async def test_whisper_tts_to_a_conference_member_plays_the_speech_to_that_member(
    tts_sandbox, agent_server: AgentServer
):
    """v1.1 TTS: conference play of mod_ssml's tts:// file, in the conference API's delimited form."""
    sandbox = tts_sandbox
    r = await room(sandbox, agent_server)
    tip = "Offer the upgrade."
    assert await r.verb("whisper", target_call_id=r.target, tts_text=tip, voice="en-gb") == {}
    speech = f"tts://tts_commandline|en-gb|{tip}"
    assert switch_commands(sandbox, "conference ")[-1] == (
        f"conference ^^`{r.conference_id}`play`{speech}`{fs_id(r.member_id)}"
    )
    assert snapshot(sandbox, r.target)["conference_member"]["playing"] == speech
    assert snapshot(sandbox, r.cid)["conference_member"]["playing"] is None
    entry = next(e for e in await logs(sandbox, r.cid) if e.get("event") == "whisper")
    assert entry["via"] == "conference_play" and entry["tts_chars"] == len("Offer the upgrade.")
    assert "audio_url" not in entry


async def test_whisper_tts_through_a_monitor_displaces_the_speech_into_the_target(
    tts_sandbox, agent_server: AgentServer
):
    sandbox = tts_sandbox
    r = await room(sandbox, agent_server)
    await r.verb("monitor_start", target_call_id=r.target, mode="listen_and_whisper")
    await bridged_out(sandbox, r)
    assert await r.verb("whisper", target_call_id=r.target, tts_text="Ask for the email.") == {}
    speech = "tts://tts_commandline|en-us|Ask for the email."
    assert commands(sandbox, r.target, "uuid_displace") == [f"uuid_displace ^^`{r.target}`start`{speech}`0`m"]
    assert snapshot(sandbox, r.target)["displace"] == {speech: "m"}
    await wait_until(lambda: _async(snapshot(sandbox, r.target)["displace"] == {}))


async def test_whisper_tts_is_422_when_tts_is_off_and_400_for_a_voice_of_another_engine(
    sandbox, tts_sandbox, agent_server: AgentServer
):
    r = await room(sandbox, agent_server)
    with pytest.raises(APIError) as exc:
        await r.verb("whisper", target_call_id=r.target, tts_text="hi")
    assert exc.value.status_code == 422 and exc.value.detail["code"] == "tts_not_supported"
    r2 = await room(tts_sandbox, agent_server)
    with pytest.raises(APIError) as exc:
        await r2.verb("whisper", target_call_id=r2.target, tts_text="hi", voice="kal")
    assert exc.value.status_code == 400 and exc.value.detail["errors"][0]["loc"] == ["voice"]
    assert switch_commands(tts_sandbox, "conference ^^") == []


# ---------------------------------------------------------------- barge


async def test_barge_pulls_a_monitored_call_into_the_conference_with_both_legs(
    sandbox, agent_server: AgentServer, webhooks: Receiver
):
    r = await room(sandbox, agent_server)
    await r.verb("monitor_start", target_call_id=r.target)
    conn = await agent_server.wait_for(lambda: monitor_connection(agent_server, r.target))
    other = await bridged_out(sandbox, r)

    result = await r.verb("barge", target_call_id=r.target)
    assert result["conference_id"] == r.conference_id and result["member_id"].startswith("mem-")
    assert result["member_id"] != r.member_id  # a new member: it joined again

    target_cmds = commands(sandbox, r.target)
    transfer = f"uuid_transfer {r.target} -both 'conference:{r.conference_id}@default' inline"
    stop = f"uuid_audio_fork {r.target} stop {r.bug}"
    assert target_cmds.index(transfer) < target_cmds.index(stop)
    await wait_until(lambda: _async(snapshot(sandbox, other)["conference"] == r.conference_id))
    assert snapshot(sandbox, r.target)["conference"] == r.conference_id
    assert r.bug not in forks(sandbox, r.target)
    await agent_server.wait_for(lambda: conn["closed"])
    assert await monitors(sandbox, r.cid) == {}

    async def joined_after_barge() -> dict[str, str]:
        """call_id -> member_id of every member_joined webhook event after the agent's first join."""
        found = await events(sandbox, r.cid, "ai_session.conference_changed")
        out = {}
        for e in found:
            if e.data["action"] != "member_joined" or e.data["member_id"] == r.member_id:
                continue
            who = next(p for p in e.data["participants"] if p["member_id"] == e.data["member_id"])
            out[who["call_id"]] = e.data["member_id"]
        return out if {r.target, other} <= set(out) else {}

    rejoined = await wait_until(joined_after_barge)
    assert rejoined[r.target] == result["member_id"]
    assert rejoined[other] not in (r.member_id, result["member_id"])
    members = {m.call_id: m for m in await sandbox.runtime.services.conferences.participants(r.conference_id)}
    assert {r.cid, r.target, other} <= set(members)
    assert members[r.target].type == "agent"  # the leg the bridge dialled keeps its type

    # The customer's webhook endpoint got the joins, signed (the receiver verifies with the SDK).
    async def delivered() -> list[dict[str, Any]]:
        got = webhooks.of("ai_session.conference_changed", r.cid)
        joins = {d["member_id"] for d in got if d["action"] == "member_joined"}
        both = [d for d in got if {r.target, other} <= {p["call_id"] for p in d["participants"]}]
        return both if result["member_id"] in joins else []

    hook = (await wait_until(delivered))[0]
    assert hook["conference_id"] == r.conference_id and hook["action"] == "member_joined"


async def test_barge_on_a_conference_member_clears_the_ai_relation_and_closes_the_monitor(
    sandbox, agent_server: AgentServer
):
    r = await room(sandbox, agent_server)
    conf = await sandbox.runtime.services.conferences.get(r.conference_id)
    ai_id = fs_id(conf.ai_member_id)
    # A nospeak from the AI toward the agent (a coach who only listens), set on the switch.
    await sandbox.sim.api(f"conference {r.conference_id} relate {ai_id} {fs_id(r.member_id)} nospeak")
    await r.verb("monitor_start", target_call_id=r.target)

    result = await r.verb("barge", target_call_id=r.target)
    assert result == {"conference_id": r.conference_id, "member_id": r.member_id}
    assert switch_commands(sandbox, f"conference {r.conference_id} relate") == [
        f"conference {r.conference_id} relate {ai_id} {fs_id(r.member_id)} nospeak",
        f"conference {r.conference_id} relate {ai_id} {fs_id(r.member_id)} clear",
    ]
    assert snapshot(sandbox, conf.ai_leg_uuid)["conference_member"]["relations"] == {}
    assert f"uuid_audio_fork {r.target} stop {r.bug}" in commands(sandbox, r.target)
    assert await monitors(sandbox, r.cid) == {}
    assert not [c for c in commands(sandbox, r.target) if c.startswith(f"uuid_transfer {r.target}")]


async def test_barge_without_a_conference_starts_one_first(sandbox, agent_server: AgentServer):
    """The API cannot produce this state today (monitor_start needs a conference); the monitor is
    written through the real store so barge's first step, conference_start's code, is exercised."""
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    await sandbox.sim.api(f"originate {{origination_uuid={a}}}{PSTN}+15550001111 &park()")
    await sandbox.sim.api(f"originate {{origination_uuid={b}}}{PSTN}+15550002222 &park()")
    assert await sandbox.sim.api(f"uuid_bridge {a} {b}") == f"+OK {b}\n"
    store = sandbox.runtime.services.monitors.store
    assert await store.claim(new_monitor(call.call_id, a, "listen", None))

    reply = await in_thread(ai.barge, call.call_id, target_call_id=a, callback_token=call.token)
    conf_id = reply["result"]["conference_id"]
    assert conf_id.startswith("conf_") and reply["result"]["member_id"].startswith("mem-")
    session = await sandbox.runtime.services.sessions.get(call.call_id)
    assert session.conference_id == conf_id
    assert f"uuid_transfer {a} -both 'conference:{conf_id}@default' inline" in commands(sandbox, a)
    await wait_until(lambda: _async(snapshot(sandbox, b)["conference"] == conf_id))
    assert snapshot(sandbox, a)["conference"] == snapshot(sandbox, call.call_id)["conference"] == conf_id
    assert await store.of_call(call.call_id) == []


# ---------------------------------------------------------------- 403: no relationship


VERBS = [
    ("monitor_start", {"mode": "listen"}),
    ("monitor_stop", {}),
    ("whisper", {"audio_url": TIP}),
    ("barge", {}),
]


async def _all_forbidden(r: Room, target: str) -> None:
    for name, kwargs in VERBS:
        with pytest.raises(ConferenceMembershipRequired) as exc:
            await r.verb(name, target_call_id=target, **kwargs)
        assert exc.value.status_code == 403, name
        assert exc.value.detail["code"] == "conference_membership_required", name


async def test_an_unrelated_call_of_the_same_tenant_is_403_for_every_verb(sandbox, agent_server: AgentServer):
    r = await room(sandbox, agent_server)
    stranger = await start_call(sandbox, agent_server)  # another AI call, not in the conference
    before = commands(sandbox, stranger.call_id)
    await _all_forbidden(r, stranger.call_id)
    assert commands(sandbox, stranger.call_id) == before  # nothing was sent to it
    await _all_forbidden(r, str(uuid.uuid4()))  # a channel that does not exist: the same answer


async def test_a_call_of_another_tenant_is_403_for_every_verb(sandbox, agent_server: AgentServer):
    r = await room(sandbox, agent_server)
    services = sandbox.runtime.services
    await services.tenants.ensure_tenant("globex")
    key, _ = await services.tenants.create_key("globex", ALL_SCOPES)
    theirs = sdk(sandbox, key)
    agent = await in_thread(theirs.voice_agents.create, name="globex bot", ws_url=agent_server.url)
    await in_thread(theirs.voice_agents.set_as_default, agent.id)
    other = await _place(sandbox, key)
    await agent_server.metadata(other)
    assert (await services.sessions.get(other)).tenant_id == "globex"
    before = commands(sandbox, other)
    await _all_forbidden(r, other)
    assert commands(sandbox, other) == before


# ---------------------------------------------------------------- monitors end with either call


async def test_the_monitor_ends_when_the_target_hangs_up(sandbox, agent_server: AgentServer):
    r = await room(sandbox, agent_server)
    await r.verb("monitor_start", target_call_id=r.target)
    conn = await agent_server.wait_for(lambda: monitor_connection(agent_server, r.target))

    await sandbox.sim.hangup(r.target)
    await agent_server.wait_for(lambda: conn["closed"])
    await wait_until(lambda: _empty(monitors(sandbox, r.cid)))
    # Nothing relates the AI to the gone channel any more.
    with pytest.raises(ConferenceMembershipRequired):
        await r.verb("monitor_stop", target_call_id=r.target)
    assert (await sandbox.runtime.services.sessions.get(r.cid)).terminal is False


async def test_the_monitor_fork_is_closed_when_the_ai_call_ends(
    sandbox, agent_server: AgentServer, webhooks: Receiver
):
    r = await room(sandbox, agent_server)
    await r.verb("monitor_start", target_call_id=r.target)
    conn = await agent_server.wait_for(lambda: monitor_connection(agent_server, r.target))

    await end_call(sandbox, r.cid)  # the caller hangs up: the AI session ends
    await agent_server.wait_for(lambda: conn["closed"])
    assert f"uuid_audio_fork {r.target} stop {r.bug}" in commands(sandbox, r.target)
    await wait_until(lambda: _empty(monitors(sandbox, r.cid)))
    assert await sandbox.runtime.services.monitors.store.watchers(r.target) == set()
    assert snapshot(sandbox, r.target)["hangup_cause"] is None  # the agent's leg itself goes on

    async def ended() -> list[dict[str, Any]]:
        return webhooks.of("ai_session.ended", r.cid)

    logged = (await wait_until(ended))[0]["metadata"]["logs"]
    assert [e["target_call_id"] for e in logged if e.get("event") == "monitor_start"] == [r.target]


# ---------------------------------------------------------------- helpers


async def _async(value: Any) -> Any:
    return value


async def _empty(coro: Any) -> bool:
    return not await coro


async def _place(sandbox: Any, key: str) -> str:
    reply = await http(sandbox, "POST", "/sandbox/calls", {"from": CALLER, "to": DIALED}, auth=key)
    assert reply.status == 201, reply.body
    return reply.body["call_id"]


async def test_the_ai_closing_the_monitor_websocket_ends_the_monitor(sandbox, agent_server: AgentServer):
    """Issue 10: mod_audio_fork's disconnect names no bug; the bridge matches it by channel."""
    r = await room(sandbox, agent_server)
    await r.verb("monitor_start", target_call_id=r.target)
    conn = await agent_server.wait_for(lambda: monitor_connection(agent_server, r.target))
    await conn["ws"].close()
    await wait_until(lambda: _empty(monitors(sandbox, r.cid)))
    assert commands(sandbox, r.target, "uuid_audio_fork")[-1] == f"uuid_audio_fork {r.target} stop {r.bug}"
    entry = next(e for e in await logs(sandbox, r.cid) if e.get("event") == "monitor_ended")
    assert (entry["target_call_id"], entry["reason"]) == (r.target, "ws_closed")
    session = await sandbox.runtime.services.sessions.get(r.cid)
    assert session.terminal is False  # the AI's own call goes on
    # And monitoring can start again.
    assert await r.verb("monitor_start", target_call_id=r.target) == {}
