"""Issue 10's "Done when": every public resource method of the official yotel SDK 0.2.1, driven against
the sandbox, succeeds.

The methods are found by introspection of a `yotel.Client`'s resources (campaigns, leads,
voice_agents, ai_sessions, recordings), so a method a new SDK adds fails this test until it has a
driver here. Each driver makes what its method needs (a voice agent, a campaign and lead, a live
call with its callback token, a conference with an agent leg, a finished recording) and calls the
method the way an SDK user would. Every raw answer is then checked: where the SDK returns one of
its models, `Model.model_validate` on the JSON body and every field of the model present in it (a
field the bridge left out would pass silently on its default); where it returns a dict, the keys its
docstring or the contract names.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yotel
from pydantic import BaseModel
from yotel.models import BulkLeadsResponse, Campaign, Lead
from yotel.voice_agents import VoiceAgent

from tests.conftest import AgentServer, in_thread
from tests.helpers import LiveCall, end_call, events, sandbox_with, sdk, start_call, wait_until

SDK_METHOD_COUNT = 46
TIP = "https://cdn.example.com/prompts/hello.wav"
ENVELOPE = {"ok", "call_id", "dispatched_at", "result"}


def sdk_methods() -> list[str]:
    """`resource.method` for every public method of every resource a Client has."""
    client = yotel.Client(api_key="yt_test_introspection", base_url="http://127.0.0.1:9")
    try:
        found = []
        for name, resource in sorted(vars(client).items()):
            if name.startswith("_") or not hasattr(resource, "_c"):
                continue
            for method, _member in inspect.getmembers(resource, inspect.ismethod):
                if not method.startswith("_"):
                    found.append(f"{name}.{method}")
        return sorted(found)
    finally:
        client.close()


@pytest.fixture
async def sandbox(redis_url: str, redis: Any, tmp_path: Any) -> Any:
    # Some 40 verbs on a few calls within seconds: the rate limit has its own tests.
    async with sandbox_with(redis_url, tmp_path, rate_limit_per_s=1000) as box:
        yield box


class Run:
    """The SDK client, the last raw JSON answer it got, and what the drivers made."""

    def __init__(self, sandbox: Any, agent_server: AgentServer, tmp_path: Path) -> None:
        self.sandbox = sandbox
        self.agent_server = agent_server
        self.tmp_path = tmp_path
        self.client = sdk(sandbox)
        self.raw: list[Any] = []
        self.client._http.event_hooks["response"].append(self._keep)
        self.made: dict[str, Any] = {}

    def _keep(self, response: httpx.Response) -> None:
        if response.headers.get("content-type", "").startswith("application/json"):
            response.read()
            self.raw.append(response.json())

    async def call(self, dotted: str, *args: Any, **kwargs: Any) -> Any:
        resource, method = dotted.split(".")
        self.raw.clear()
        return await in_thread(getattr(getattr(self.client, resource), method), *args, **kwargs)

    @property
    def last(self) -> Any:
        assert self.raw, "no JSON answer"
        return self.raw[-1]

    async def live_call(self, name: str, **body: Any) -> LiveCall:
        call = await start_call(self.sandbox, self.agent_server, **body)
        self.made[name] = call
        return call

    async def verb(self, dotted: str, call: LiveCall, **kwargs: Any) -> dict[str, Any]:
        reply = await self.call(dotted, call.call_id, callback_token=call.token, **kwargs)
        assert ENVELOPE <= set(reply) and reply["ok"] is True and reply["call_id"] == call.call_id, reply
        return reply


def validates(model: type[BaseModel], raw: Any) -> None:
    """The SDK's model parses the raw answer, and the answer has every field the model declares."""
    model.model_validate(raw)
    missing = set(model.model_fields) - set(raw)
    assert not missing, f"{model.__name__}: the bridge does not send {sorted(missing)}"


# ---------------------------------------------------------------- voice agents


async def va_create(r: Run) -> None:
    agent = await r.call("voice_agents.create", name="bot", ws_url=r.agent_server.url, max_concurrent=100)
    assert isinstance(agent, VoiceAgent)
    validates(VoiceAgent, r.last)
    r.made["agent"] = agent


async def va_list(r: Run) -> None:
    agents = await r.call("voice_agents.list")
    assert r.made["agent"].id in [a.id for a in agents]
    for raw in r.last["items"] if isinstance(r.last, dict) else r.last:
        validates(VoiceAgent, raw)


async def va_get(r: Run) -> None:
    assert (await r.call("voice_agents.get", r.made["agent"].id)).id == r.made["agent"].id
    validates(VoiceAgent, r.last)


async def va_update(r: Run) -> None:
    agent = await r.call("voice_agents.update", r.made["agent"].id, max_concurrent=50)
    assert agent.max_concurrent == 50
    validates(VoiceAgent, r.last)


async def va_set_as_default(r: Run) -> None:
    assert await r.call("voice_agents.set_as_default", r.made["agent"].id) is None


async def va_get_default(r: Run) -> None:
    assert await r.call("voice_agents.get_default") == r.made["agent"].id


async def va_archive(r: Run) -> None:
    spare = await r.call("voice_agents.create", name="old", ws_url=r.agent_server.url)
    archived = await r.call("voice_agents.archive", spare.id)
    assert archived.status == "archived"
    validates(VoiceAgent, r.last)


async def va_delete(r: Run) -> None:
    spare = await r.call("voice_agents.create", name="gone", ws_url=r.agent_server.url)
    assert await r.call("voice_agents.delete", spare.id) is None


# ---------------------------------------------------------------- campaigns and leads


async def campaigns_create(r: Run) -> None:
    campaign = await r.call("campaigns.create", name="Renewals", voice_agent_id=r.made["agent"].id)
    assert isinstance(campaign, Campaign)
    validates(Campaign, r.last)
    r.made["campaign"] = campaign


async def campaigns_list(r: Run) -> None:
    assert r.made["campaign"].id in [c.id for c in await r.call("campaigns.list")]
    for raw in r.last:
        validates(Campaign, raw)


async def campaigns_get(r: Run) -> None:
    assert await r.call("campaigns.get", r.made["campaign"].id) == r.made["campaign"]
    validates(Campaign, r.last)


async def campaigns_update(r: Run) -> None:
    campaign = await r.call("campaigns.update", r.made["campaign"].id, description="spring", max_attempts=4)
    assert (campaign.description, campaign.max_attempts) == ("spring", 4)
    validates(Campaign, r.last)


async def campaigns_delete(r: Run) -> None:
    spare = await r.call("campaigns.create", name="spare")
    assert await r.call("campaigns.delete", spare.id) is None


async def leads_create(r: Run) -> None:
    lead = await r.call(
        "leads.create", campaign_id=r.made["campaign"].id, phone="+442079460958", metadata={"plan": "gold"}
    )
    assert isinstance(lead, Lead)
    validates(Lead, r.last)
    r.made["lead"] = lead


async def leads_bulk(r: Run) -> None:
    answer = await r.call(
        "leads.bulk",
        campaign_id=r.made["campaign"].id,
        leads=[{"phone": "+14155550101", "name": "Ada"}, {"phone": "12345"}, {"phone": "+442079460958"}],
    )
    assert isinstance(answer, BulkLeadsResponse)
    validates(BulkLeadsResponse, r.last)
    assert (answer.total, answer.valid, answer.invalid, answer.duplicates) == (3, 1, 1, 1)


# ---------------------------------------------------------------- AI sessions: reading


async def ai_list(r: Run) -> None:
    sessions = await r.call("ai_sessions.list", voice_agent_id=r.made["agent"].id)
    assert r.made["main"].call_id in [s["call_id"] for s in sessions]


async def ai_get(r: Run) -> None:
    session = await r.call("ai_sessions.get", r.made["main"].call_id)
    assert session["call_id"] == r.made["main"].call_id
    assert session["metadata"]["logs"]  # the audit log of what the verbs did


async def ai_control(r: Run) -> None:
    # The raw escape hatch: any verb's body as is.
    reply = await r.verb(
        "ai_sessions.control", r.made["main"], event={"event": "log", "metadata": {"raw": 1}}
    )
    assert reply["result"] == {}


# ---------------------------------------------------------------- AI sessions: Group 1 on the main call


def main_verb(dotted: str, check: Callable[[dict[str, Any]], None] | None = None, **kwargs: Any) -> Any:
    async def drive(r: Run) -> None:
        reply = await r.verb(dotted, r.made["main"], **kwargs)
        if check is not None:
            check(reply["result"])

    return drive


async def ai_hold(r: Run) -> None:
    await r.verb("ai_sessions.hold", r.made["main"])


async def ai_recording_pause(r: Run) -> None:
    await r.verb("ai_sessions.recording_pause", r.made["main"], reason="pci")


async def ai_get_call_state(r: Run) -> None:
    state = (await r.verb("ai_sessions.get_call_state", r.made["main"]))["result"]
    expected = {"state", "duration_s", "answered", "current_participants", "is_recording", "is_muted"}
    assert expected | {"is_held", "conference_id", "disposition"} <= set(state)
    assert state["state"] == "in_progress"


async def ai_schedule_callback(r: Run) -> None:
    when = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    reply = await r.verb("ai_sessions.schedule_callback", r.made["main"], scheduled_at=when, reason="Tuesday")
    assert reply["result"]["callback_id"].startswith("cb_")


async def ai_set_lead_field(r: Run) -> None:
    reply = await r.verb("ai_sessions.set_lead_field", r.made["main"], field="budget", value=1200)
    assert reply["result"]["lead_id"] == r.made["lead"].id


async def ai_set_lead_status(r: Run) -> None:
    reply = await r.verb("ai_sessions.set_lead_status", r.made["main"], status="connected")
    assert reply["result"] == {"lead_id": r.made["lead"].id, "status": "connected"}


async def ai_request_supervisor(r: Run) -> None:
    reply = await r.verb("ai_sessions.request_supervisor", r.made["main"], reason="angry", urgency="high")
    assert reply["result"]["escalation_id"]


# ---------------------------------------------------------------- Group 2: a conference with an agent leg


async def ai_conference_start(r: Run) -> None:
    reply = await r.verb("ai_sessions.conference_start", r.made["main"])
    r.made["conference_id"] = reply["result"]["conference_id"]


async def ai_conference_add(r: Run) -> None:
    reply = await r.verb(
        "ai_sessions.conference_add", r.made["main"], participant_type="agent", destination="1001"
    )
    r.made["agent_leg"] = reply["result"]["call_id"]
    assert reply["result"]["member_id"].startswith("mem-")


async def ai_conference_remove(r: Run) -> None:
    added = await r.verb(
        "ai_sessions.conference_add", r.made["main"], participant_type="e164", destination="+15557654321"
    )
    await r.verb("ai_sessions.conference_remove", r.made["main"], member_id=added["result"]["member_id"])


async def ai_monitor_start(r: Run) -> None:
    await r.verb(
        "ai_sessions.monitor_start", r.made["main"], target_call_id=r.made["agent_leg"], mode="listen"
    )


async def ai_whisper(r: Run) -> None:
    await r.verb("ai_sessions.whisper", r.made["main"], target_call_id=r.made["agent_leg"], audio_url=TIP)


async def ai_monitor_stop(r: Run) -> None:
    await r.verb("ai_sessions.monitor_stop", r.made["main"], target_call_id=r.made["agent_leg"])


async def ai_barge(r: Run) -> None:
    await r.verb("ai_sessions.monitor_start", r.made["main"], target_call_id=r.made["agent_leg"])
    reply = await r.verb("ai_sessions.barge", r.made["main"], target_call_id=r.made["agent_leg"])
    assert reply["result"]["conference_id"] == r.made["conference_id"]


async def ai_conference_leave(r: Run) -> None:
    await r.verb("ai_sessions.conference_leave", r.made["main"])
    session = await r.call("ai_sessions.get", r.made["main"].call_id)
    assert session["outcome"] == "conference_left"


# ---------------------------------------------------------------- verbs that end a session, each its own call


async def ai_transfer(r: Run) -> None:
    call = await r.live_call("transferred")
    await r.verb("ai_sessions.transfer", call, destination_type="agent_queue", destination="tier1")


async def ai_hangup(r: Run) -> None:
    call = await r.live_call("hung_up")
    await r.verb("ai_sessions.hangup", call)


# ---------------------------------------------------------------- recordings, of a call that has ended


async def _recorded(r: Run) -> str:
    if "recorded" not in r.made:
        call = await r.live_call("recorded_call")
        await asyncio.sleep(0.3)
        await end_call(r.sandbox, call.call_id)
        await wait_until(lambda: events(r.sandbox, call.call_id, "call.recording_ready"))
        r.made["recorded"] = call.call_id
    return r.made["recorded"]


async def recordings_get_signed_url(r: Run) -> None:
    call_id = await _recorded(r)
    info = await r.call("recordings.get_signed_url", call_id)
    # The SDK's docstring: {url, expires_at, duration_s, stereo, format}.
    assert {"url", "expires_at", "duration_s", "stereo", "format"} <= set(info)
    assert info["stereo"] is True and info["format"] == "audio/wav" and "signature=" in info["url"]


async def recordings_fetch_bytes(r: Run) -> None:
    data = await r.call("recordings.fetch_bytes", await _recorded(r))
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    r.made["wav"] = data


async def recordings_download(r: Run) -> None:
    dest = r.tmp_path / "recording.wav"
    assert await r.call("recordings.download", await _recorded(r), str(dest)) == str(dest)
    assert await asyncio.to_thread(dest.read_bytes) == r.made["wav"]


# In the order they run: what a driver needs is made by one before it.
DRIVERS: dict[str, Callable[[Run], Awaitable[None]]] = {
    "voice_agents.create": va_create,
    "voice_agents.list": va_list,
    "voice_agents.get": va_get,
    "voice_agents.update": va_update,
    "voice_agents.set_as_default": va_set_as_default,
    "voice_agents.get_default": va_get_default,
    "campaigns.create": campaigns_create,
    "campaigns.list": campaigns_list,
    "campaigns.get": campaigns_get,
    "campaigns.update": campaigns_update,
    "leads.create": leads_create,
    "leads.bulk": leads_bulk,
    # the main call (on the lead) starts before these; see test below
    "ai_sessions.log": main_verb("ai_sessions.log", metadata={"step": "greeting"}),
    "ai_sessions.mute": main_verb("ai_sessions.mute", target="caller"),
    "ai_sessions.unmute": main_verb("ai_sessions.unmute", target="caller"),
    "ai_sessions.hold": ai_hold,
    "ai_sessions.unhold": main_verb("ai_sessions.unhold"),
    "ai_sessions.send_dtmf": main_verb("ai_sessions.send_dtmf", digits="12#"),
    "ai_sessions.play_audio": main_verb(
        "ai_sessions.play_audio", lambda res: res["playback_id"].startswith("pb_"), audio_url=TIP
    ),
    "ai_sessions.set_disposition": main_verb(
        "ai_sessions.set_disposition", disposition="interested", notes="n"
    ),
    "ai_sessions.recording_pause": ai_recording_pause,
    "ai_sessions.recording_resume": main_verb("ai_sessions.recording_resume"),
    "ai_sessions.get_call_state": ai_get_call_state,
    "ai_sessions.set_lead_field": ai_set_lead_field,
    "ai_sessions.set_lead_status": ai_set_lead_status,
    "ai_sessions.schedule_callback": ai_schedule_callback,
    "ai_sessions.request_supervisor": ai_request_supervisor,
    "ai_sessions.control": ai_control,
    "ai_sessions.conference_start": ai_conference_start,
    "ai_sessions.conference_add": ai_conference_add,
    "ai_sessions.conference_remove": ai_conference_remove,
    "ai_sessions.monitor_start": ai_monitor_start,
    "ai_sessions.whisper": ai_whisper,
    "ai_sessions.monitor_stop": ai_monitor_stop,
    "ai_sessions.barge": ai_barge,
    "ai_sessions.list": ai_list,
    "ai_sessions.get": ai_get,
    "ai_sessions.conference_leave": ai_conference_leave,
    "ai_sessions.transfer": ai_transfer,
    "ai_sessions.hangup": ai_hangup,
    "recordings.get_signed_url": recordings_get_signed_url,
    "recordings.fetch_bytes": recordings_fetch_bytes,
    "recordings.download": recordings_download,
    "voice_agents.archive": va_archive,
    "voice_agents.delete": va_delete,
    "campaigns.delete": campaigns_delete,
}


def test_every_sdk_method_has_a_driver():
    methods = sdk_methods()
    missing = sorted(set(methods) - set(DRIVERS))
    unknown = sorted(set(DRIVERS) - set(methods))
    assert not missing, f"SDK methods with no driver here: {missing}"
    assert not unknown, f"drivers for methods the SDK does not have: {unknown}"
    assert len(methods) == SDK_METHOD_COUNT, f"the SDK has {len(methods)} resource methods: {methods}"


async def test_every_sdk_method_succeeds_against_the_sandbox(
    sandbox, agent_server: AgentServer, tmp_path: Path
):
    run = Run(sandbox, agent_server, tmp_path)
    outcomes: dict[str, str] = {}
    try:
        for dotted, drive in DRIVERS.items():
            if dotted == "ai_sessions.log":
                # The call every Group 1-3 verb acts on: on the lead, so the lead verbs have one.
                await run.live_call("main", lead_id=run.made["lead"].id, campaign_id=run.made["campaign"].id)
            try:
                await drive(run)
            except Exception as exc:  # every method is tried; the table says which failed
                outcomes[dotted] = f"FAILED: {type(exc).__name__}: {exc}"
            else:
                outcomes[dotted] = "ok"
    finally:
        run.client.close()
    table = "\n".join(f"{name:36} {outcome}" for name, outcome in outcomes.items())
    print(f"\n{table}")
    failed = {name: outcome for name, outcome in outcomes.items() if outcome != "ok"}
    assert not failed, f"{len(failed)} of {len(outcomes)} SDK methods failed:\n{table}"
    assert sorted(outcomes) == sdk_methods() and len(outcomes) == SDK_METHOD_COUNT
