"""Issue 10, "a failed transfer returns the caller to the AI on both switches": a transfer to an
E.164 number through the `pstn` gateway whose far end is busy, or rings past the ring timeout
(BRIDGE_TRANSFER_RING_TIMEOUT_S, 2 s here), gives the caller back to the AI; one that answers
ends the session `transferred_e164`, and only once the far end answered.

On the real switch the far end is the lab's SIPp UAS (486 Busy Here, or 180 Ringing until the
switch CANCELs, or 200 OK); on the simulator SwitchSimulator.set_originate_outcome makes the
number busy, unanswered or answered. Same test code, ids "sim" and "freeswitch".

    .venv/bin/pytest -m freeswitch tests/freeswitch/test_transfer_failed.py   # the real switch only
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import fast_settings
from tests.freeswitch.lab import Fork, FreeSwitchLab, Lab, LabCall, SimLab, l16_tone, rms
from tests.freeswitch.test_calls import mostly_loud, wait_for

NUMBER = "+15557654321"
RING_TIMEOUT_S = 2


@pytest.fixture
async def lab(lab_switch: Any, redis_url: str, redis: Any, tmp_path: Any) -> AsyncIterator[Lab]:
    """tests/freeswitch/conftest.py's `lab`, with a short ring timeout (the Settings field
    transfer_ring_timeout_s, BRIDGE_TRANSFER_RING_TIMEOUT_S)."""
    overrides = {"transfer_ring_timeout_s": RING_TIMEOUT_S}
    if lab_switch is None:
        made: Lab = SimLab(fast_settings(redis_url, tmp_path, rate_limit_per_s=1000, **overrides))
    else:
        settings = FreeSwitchLab.settings_for(lab_switch, redis_url, tmp_path, **overrides)
        made = FreeSwitchLab(settings, lab_switch, tmp_path / "sipp")
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


async def far_end(lab: Lab, mode: str) -> Any:
    """The number's far end: the SIPp UAS on the gateway's port, or the simulator's outcome."""
    if isinstance(lab, FreeSwitchLab):
        pstn = lab.gateway(mode)
        await pstn.start()
        return pstn
    assert isinstance(lab, SimLab)
    endpoint = f"sofia/gateway/pstn/{NUMBER}"
    if mode == "busy":
        lab.sim.set_originate_outcome(endpoint, "USER_BUSY")
    elif mode == "noanswer":
        lab.sim.set_originate_outcome(endpoint, None, answer_delay_s=RING_TIMEOUT_S + 3.0)
    else:
        lab.sim.set_originate_outcome(endpoint, None, answer_delay_s=0.3)
    return None


async def transfer(lab: Lab, call: LabCall) -> dict[str, Any]:
    return await lab.ai(
        call, "transfer", destination_type="e164", destination=NUMBER, metadata={"intent": "sales"}
    )


@pytest.mark.parametrize(
    ("mode", "cause"), [("busy", "USER_BUSY"), ("noanswer", "NO_ANSWER")], ids=["busy", "no_answer"]
)
async def test_a_failed_transfer_gives_the_caller_back_to_the_ai(lab: Lab, mode: str, cause: str):
    pstn = await far_end(lab, mode)
    call = await lab.call()
    started = time.monotonic()
    reply = await transfer(lab, call)
    assert reply["ok"] is True, reply  # the verb answers 200 at once: the bridge is dialling
    ringing = await lab.session(call)
    assert ringing.state == "in_progress" and ringing.outcome is None
    if pstn is not None:
        invite = await pstn.invite()
        assert invite.request_user == NUMBER

    # The AI's fork reopens: a second connection for the call, a fresh metadata frame that says why.
    forks = await lab.agent.wait_for(
        lambda: (f := lab.agent.forks_of(call.call_id)) and len(f) > 1 and f[1].texts and f, timeout=15
    )
    elapsed = time.monotonic() - started
    meta = forks[1].texts[0]
    assert meta["resumed"] is True
    failure = {"destination_type": "e164", "destination": NUMBER, "hangup_cause": cause}
    assert meta["transfer_failed"] == failure
    assert meta["callback_token"] != call.token and meta["call_id"] == call.call_id
    await lab.agent.wait_for(lambda: forks[0].closed)  # stopped before the caller left the AI
    if mode == "noanswer":
        # It rang for the ring timeout, no more (the switch CANCELled it). FreeSWITCH counts
        # originate_timeout in whole seconds of its clock: the CANCEL came 1.7 to 2.0 s after the
        # INVITE with 2 s (seen in SIPp's trace), so up to a second early.
        assert RING_TIMEOUT_S - 1 <= elapsed <= RING_TIMEOUT_S + 2, elapsed

    [failed] = await wait_for(
        lambda: lab.outbox(call.call_id, "ai_session.transfer_failed"), lambda found: found, timeout=5
    )
    assert failed.data["hangup_cause"] == cause and failed.data["destination"] == NUMBER
    assert failed.data["metadata"] == {"intent": "sales"}
    assert await lab.outbox(call.call_id, "ai_session.transferred") == []
    assert await lab.outbox(call.call_id, "ai_session.ended") == []
    session = await lab.session(call)
    assert (session.state, session.outcome, session.transfer) == ("in_progress", None, None)

    # the caller's voice reaches the AI again, and the new token drives the call
    if isinstance(lab, SimLab):
        # the simulator's caller speaks into the forks open when it speaks; the SIPp caller never stops
        lab.sim.speak(call.call_id, l16_tone(5.0))
    await lab.agent.wait_for(lambda: len(forks[1].frames) > 10, timeout=5)
    levels = await fork_levels(forks[1], 1.0)
    assert mostly_loud(levels), levels
    call.token = meta["callback_token"]
    state = await lab.ai(call, "get_call_state")
    assert state["result"]["state"] == "in_progress"
    if pstn is not None:
        assert await pstn.wait(10) == 0  # the UAS saw its scenario through (486 / CANCEL, 487)
        if mode == "noanswer":
            assert pstn.received("CANCEL")


async def fork_levels(fork: Fork, seconds: float) -> list[float]:
    """The RMS of each frame `fork` delivers during the next `seconds`."""
    start = time.monotonic()
    await asyncio.sleep(seconds)
    return [rms(f) for f in fork.between(start, time.monotonic())]


async def test_a_transfer_ends_the_session_only_once_the_far_end_answered(lab: Lab):
    pstn = await far_end(lab, "answer")
    call = await lab.call()
    await transfer(lab, call)
    bridged = await lab.wait_event(lambda e: e.name == "CHANNEL_BRIDGE" and e.unique_id == call.call_id)
    assert bridged.get("Other-Leg-Destination-Number") == NUMBER
    session = await wait_for(lambda: lab.session(call), lambda s: s.outcome is not None)
    assert (session.state, session.outcome) == ("ended", "transferred_e164"), session
    assert session.transfer["state"] == "connected"
    # the far end's answer came first: the B leg's CHANNEL_ANSWER, before the session's end
    other = bridged.get("Other-Leg-Unique-ID")
    [answer] = lab.events_of(other, "CHANNEL_ANSWER")
    answered_at = int(answer.get("Event-Date-Timestamp")) / 1e6
    assert session.ended_at >= answered_at, (session.ended_at, answered_at)
    [transferred] = await lab.outbox(call.call_id, "ai_session.transferred")
    assert transferred.data["destination"] == NUMBER
    assert await lab.outbox(call.call_id, "ai_session.transfer_failed") == []
    await lab.agent.wait_for(lambda: lab.agent.connection(call.call_id).closed)  # the AI is off the call
    assert len(lab.agent.forks_of(call.call_id)) == 1
    if pstn is not None:
        ok = await pstn.wait_for_message(lambda m: m.direction == "sent" and m.status == 200)
        assert session.ended_at >= ok.at - 0.01, (session.ended_at, ok.at)
        await lab.hang_up(call)
        assert await pstn.wait(10) == 0  # the switch hung the far end up after the caller's BYE
