"""Issue 3's "Done when", verb by verb: each of the 16 verbs (Group 1 and Group 3) driven through the
official yotel SDK with the callback token from the metadata frame, asserting three things each:

1. the API result (the SDK's return value: envelope and `result`),
2. exactly the commands the simulated switch received for that verb (none, for the verbs that only
   touch the bridge's own state: the switch must not have been bothered),
3. the state the switch is in afterwards (and the session's, where the verb changes it).

One table (CASES) so that no verb goes without such a test; tests/test_control_verbs.py and
tests/test_leads_e2e.py go deeper into each verb's details.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.api.pipeline import load_verbs
from bridge.verbs.base import REGISTRY
from tests.conftest import AgentServer, in_thread
from tests.helpers import LiveCall, commands, sandbox_with, sdk, snapshot, start_call, wait_until

ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LEAD_PHONE = "+442079460958"

# Issue 3: Group 1 (13 call-state verbs) and Group 3 (3 lead verbs).
ISSUE_3_VERBS = {
    "transfer",
    "hangup",
    "log",
    "mute",
    "unmute",
    "hold",
    "unhold",
    "send_dtmf",
    "play_audio",
    "set_disposition",
    "recording_pause",
    "recording_resume",
    "get_call_state",
    "set_lead_field",
    "set_lead_status",
    "schedule_callback",
}


@pytest.fixture
async def sandbox(redis_url: str, redis: Any, tmp_path: Any) -> Any:
    # A preparing verb and the verb under test on one call within a second: the limit has its own tests.
    async with sandbox_with(redis_url, tmp_path, rate_limit_per_s=1000) as box:
        yield box


class Drive:
    """One live call, and the SDK call of one verb on it with the commands it caused."""

    def __init__(self, sandbox: Any, call: LiveCall) -> None:
        self.sandbox = sandbox
        self.call = call
        self.cid = call.call_id
        self.ai = sdk(sandbox).ai_sessions

    async def sdk(self, verb: str, **kwargs: Any) -> dict[str, Any]:
        return await in_thread(getattr(self.ai, verb), self.cid, callback_token=self.call.token, **kwargs)

    async def verb(self, verb: str, **kwargs: Any) -> tuple[dict[str, Any], list[str]]:
        """(the verb's `result`, the commands the switch received for it) after checking the envelope."""
        before = len(commands(self.sandbox, self.cid))
        reply = await self.sdk(verb, **kwargs)
        assert reply["ok"] is True and reply["call_id"] == self.cid, reply
        assert ISO_MS_Z.match(reply["dispatched_at"]), reply
        return reply["result"], commands(self.sandbox, self.cid)[before:]

    def snap(self) -> dict[str, Any]:
        return snapshot(self.sandbox, self.cid)

    async def session(self) -> Any:
        return await self.sandbox.runtime.services.sessions.get(self.cid)

    def assert_call_untouched(self) -> None:
        snap = self.snap()
        assert snap["answered"] is True and snap["hangup_cause"] is None
        assert snap["held"] is False and snap["muted"] == {"read": False, "write": False}
        assert snap["audio_fork"] is not None and snap["audio_fork"]["paused"] is False


# ---------------------------------------------------------------- Group 1


async def case_transfer(d: Drive) -> None:
    result, sent = await d.verb("transfer", destination_type="agent_queue", destination="tier1")
    assert result == {}
    assert sent == [
        f"uuid_audio_fork {d.cid} stop ai_fork",
        f"uuid_transfer {d.cid} 'callcenter:tier1@default' inline",
    ]
    snap = d.snap()
    assert snap["audio_fork"] is None and snap["hangup_cause"] is None
    session = await d.session()
    assert (session.state, session.outcome) == ("ended", "transferred_agent_queue")


async def case_hangup(d: Drive) -> None:
    result, sent = await d.verb("hangup")
    assert result == {}
    assert sent == [f"uuid_kill {d.cid} NORMAL_CLEARING"]

    async def gone() -> bool:
        return d.snap()["hangup_cause"] == "NORMAL_CLEARING"

    await wait_until(gone)
    assert (await d.session()).outcome == "hangup"


async def case_log(d: Drive) -> None:
    result, sent = await d.verb("log", metadata={"step": "greeted"})
    assert result == {} and sent == []
    d.assert_call_untouched()
    [entry] = await d.sandbox.runtime.services.sessions.logs(d.cid)
    assert entry["step"] == "greeted" and ISO_MS_Z.match(entry["ts"])


async def case_mute(d: Drive) -> None:
    result, sent = await d.verb("mute", target="caller")
    assert result == {}
    assert sent == [f"uuid_exists {d.cid}", f"uuid_audio {d.cid} start read mute 1"]
    assert d.snap()["muted"] == {"read": True, "write": False}
    assert (await d.session()).muted_caller is True


async def case_unmute(d: Drive) -> None:
    await d.sdk("mute", target="agent")
    assert d.snap()["muted"] == {"read": False, "write": True}
    result, sent = await d.verb("unmute", target="agent")
    assert result == {}
    assert sent == [f"uuid_exists {d.cid}", f"uuid_audio {d.cid} start write mute 0"]
    assert d.snap()["muted"] == {"read": False, "write": False}
    assert (await d.session()).muted_agent is False


async def case_hold(d: Drive) -> None:
    result, sent = await d.verb("hold")
    assert result == {}
    assert sent == [
        f"uuid_exists {d.cid}",
        f"uuid_hold {d.cid}",
        f"uuid_displace {d.cid} start local_stream://moh 0 lm",
        f"uuid_audio_fork {d.cid} pause ai_fork",
    ]
    snap = d.snap()
    assert snap["held"] is True and snap["audio_fork"]["paused"] is True
    assert "local_stream://moh" in snap["displace"]
    assert (await d.session()).held is True


async def case_unhold(d: Drive) -> None:
    await d.sdk("hold")
    assert d.snap()["held"] is True
    result, sent = await d.verb("unhold")
    assert result == {}
    assert sent == [
        f"uuid_exists {d.cid}",
        f"uuid_hold off {d.cid}",
        f"uuid_displace {d.cid} stop local_stream://moh",
        f"uuid_audio_fork {d.cid} resume ai_fork",
    ]
    d.assert_call_untouched()
    assert d.snap()["displace"] == {}
    assert (await d.session()).held is False


async def case_send_dtmf(d: Drive) -> None:
    result, sent = await d.verb("send_dtmf", digits="12#")
    assert result == {}
    assert sent == [f"uuid_send_dtmf {d.cid} 12#"]
    assert d.snap()["dtmf_sent"] == "12#"


async def case_play_audio(d: Drive) -> None:
    url = "https://cdn.example.com/prompts/one.wav"
    result, sent = await d.verb("play_audio", audio_url=url)
    playback_id = result.pop("playback_id")
    assert result == {} and playback_id.startswith("pb_")
    assert sent == [f"uuid_broadcast {d.cid} playback::{{playback_id={playback_id}}}http_cache://{url} aleg"]

    async def playing() -> bool:
        return d.snap()["playing"] == f"http_cache://{url}"

    await wait_until(playing, interval=0.005)


async def case_set_disposition(d: Drive) -> None:
    result, sent = await d.verb("set_disposition", disposition="interested", notes="call Tuesday")
    assert result == {} and sent == []
    d.assert_call_untouched()
    session = await d.session()
    assert (session.disposition, session.notes) == ("interested", "call Tuesday")
    assert session.extra["disposition_source"] == "ai"


async def case_recording_pause(d: Drive) -> None:
    path = (await d.session()).recording_path
    assert d.snap()["recording"] == {
        "active": True,
        "paused": False,
        "masked": False,
        "path": path,
        "paths": [path],
    }
    result, sent = await d.verb("recording_pause", reason="card number")
    assert result == {}
    assert sent == [f"uuid_record {d.cid} mask {path}"]
    assert d.snap()["recording"]["masked"] is True
    assert (await d.session()).recording_state == "paused"


async def case_recording_resume(d: Drive) -> None:
    path = (await d.session()).recording_path
    await d.sdk("recording_pause")
    assert d.snap()["recording"]["masked"] is True
    result, sent = await d.verb("recording_resume")
    assert result == {}
    assert sent == [f"uuid_record {d.cid} unmask {path}"]
    assert d.snap()["recording"]["active"] is True and d.snap()["recording"]["masked"] is False
    assert (await d.session()).recording_state == "recording"


async def case_get_call_state(d: Drive) -> None:
    await d.sdk("hold")
    result, sent = await d.verb("get_call_state")
    assert sent == []
    snap = d.snap()
    # What the bridge reports is what the switch is in.
    assert result == {
        "state": "in_progress",
        "duration_s": result["duration_s"],
        "answered": snap["answered"],
        "current_participants": ["caller", "ai_agent"],
        "is_recording": snap["recording"]["active"] and not snap["recording"]["paused"],
        "is_muted": {"caller": snap["muted"]["read"], "agent": snap["muted"]["write"]},
        "is_held": snap["held"],
        "conference_id": None,
        "disposition": None,
    }
    assert result["answered"] is True and result["is_held"] is True
    assert isinstance(result["duration_s"], int) and result["duration_s"] >= 0


# ---------------------------------------------------------------- Group 3


async def case_set_lead_field(d: Drive) -> None:
    lead_id = d.call.metadata["lead_id"]
    result, sent = await d.verb("set_lead_field", field="budget", value={"amount": 1200})
    assert result == {"lead_id": lead_id, "field": "budget", "value": {"amount": 1200}}
    assert sent == []
    d.assert_call_untouched()
    lead = await in_thread(sdk(d.sandbox)._request, "GET", f"/api/v1/leads/{lead_id}")
    assert lead["custom_fields"] == {"budget": {"amount": 1200}}


async def case_set_lead_status(d: Drive) -> None:
    lead_id = d.call.metadata["lead_id"]
    result, sent = await d.verb("set_lead_status", status="completed")
    assert result == {"lead_id": lead_id, "status": "completed"}
    assert sent == []
    d.assert_call_untouched()
    lead = await in_thread(sdk(d.sandbox)._request, "GET", f"/api/v1/leads/{lead_id}")
    assert (lead["status"], lead["status_set_by"]) == ("completed", "ai")


async def case_schedule_callback(d: Drive) -> None:
    lead_id = d.call.metadata["lead_id"]
    due = datetime.now(UTC) + timedelta(seconds=1)
    result, sent = await d.verb(
        "schedule_callback", scheduled_at=due.isoformat().replace("+00:00", "Z"), reason="asked"
    )
    callback_id = result["callback_id"]
    assert callback_id.startswith("cb_") and result["scheduled_at"].endswith("Z")
    assert sent == []  # nothing on this call: the callback is dialed at its time
    d.assert_call_untouched()
    assert not [c for c in d.sandbox.sim.commands() if "originate" in c and LEAD_PHONE in c]

    # At its time the scheduler dials it through ESL, and the switch has the new call up.
    def originates() -> list[str]:
        return [c for c in d.sandbox.sim.commands() if "originate" in c and LEAD_PHONE in c]

    async def dialed() -> list[str]:
        return originates()

    [command] = await wait_until(dialed, timeout=8.0)
    assert time.time() >= due.timestamp() - 0.05
    assert f"bridge_lead_id={lead_id}" in command
    callback = await in_thread(sdk(d.sandbox)._request, "GET", f"/api/v1/callbacks/{callback_id}")
    new_call = callback["result_call_id"]
    assert new_call and f"origination_uuid={new_call}" in command

    async def answered() -> bool:
        snap = d.sandbox.sim.snapshot(new_call)
        return bool(snap and snap["answered"])

    await wait_until(answered)
    assert d.sandbox.sim.snapshot(new_call)["direction"] == "outbound"
    lead = await in_thread(sdk(d.sandbox)._request, "GET", f"/api/v1/leads/{lead_id}")
    assert lead["status"] == "callback"


CASES: dict[str, Callable[[Drive], Awaitable[None]]] = {
    "transfer": case_transfer,
    "hangup": case_hangup,
    "log": case_log,
    "mute": case_mute,
    "unmute": case_unmute,
    "hold": case_hold,
    "unhold": case_unhold,
    "send_dtmf": case_send_dtmf,
    "play_audio": case_play_audio,
    "set_disposition": case_set_disposition,
    "recording_pause": case_recording_pause,
    "recording_resume": case_recording_resume,
    "get_call_state": case_get_call_state,
    "set_lead_field": case_set_lead_field,
    "set_lead_status": case_set_lead_status,
    "schedule_callback": case_schedule_callback,
}


def test_every_verb_of_the_issue_has_a_case_and_a_handler():
    load_verbs()
    assert set(CASES) == ISSUE_3_VERBS
    assert ISSUE_3_VERBS <= set(REGISTRY)


async def _call_with_a_lead(sandbox: Any, agent_server: AgentServer) -> LiveCall:
    client = sdk(sandbox)
    campaign = await in_thread(client.campaigns.create, name="Renewals")
    lead = await in_thread(client.leads.create, campaign_id=campaign.id, phone=LEAD_PHONE)
    call = await start_call(sandbox, agent_server, lead_id=lead.id, campaign_id=campaign.id)
    assert call.metadata["lead_id"] == lead.id
    return call


@pytest.mark.parametrize("verb", sorted(CASES))
async def test_the_verb_through_the_sdk(sandbox, agent_server: AgentServer, verb: str):
    call = await _call_with_a_lead(sandbox, agent_server)
    await CASES[verb](Drive(sandbox, call))
