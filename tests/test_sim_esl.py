"""The simulator's Event Socket, as a client sees it on the wire."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from bridge.esl.protocol import read_frame
from bridge.sim.server import SwitchSimulator
from tests.sim_helpers import RawEsl, named


@pytest.fixture
async def sim() -> AsyncIterator[SwitchSimulator]:
    switch = SwitchSimulator(answer_delay_s=0.02, playback_duration_s=0.05, password="s3cret")
    await switch.start()
    try:
        yield switch
    finally:
        await switch.stop()


@pytest.fixture
async def esl(sim: SwitchSimulator) -> AsyncIterator[RawEsl]:
    client = await RawEsl.connect(sim.port, "s3cret")
    try:
        yield client
    finally:
        await client.close()


# ---------------------------------------------------------------- connection and auth


async def test_url_names_the_bound_port_and_password(sim):
    assert sim.port > 0
    assert sim.url == f"esl://:s3cret@127.0.0.1:{sim.port}"


async def test_auth_request_then_accepted(sim):
    client = await RawEsl.connect(sim.port, None, subscribe=None)
    assert client.greeting is not None and client.greeting.content_type == "auth/request"
    assert (await client.send("api status")).reply_text == "-ERR command not found"
    assert (await client.send("auth s3cret")).reply_text == "+OK accepted"
    assert (await client.api("uuid_exists nope")) == "false"
    await client.close()


async def test_wrong_password_is_rejected_and_the_socket_closed(sim):
    client = await RawEsl.connect(sim.port, None, subscribe=None)
    reply = await client.send("auth ClueCon")
    assert reply.content_type == "command/reply" and reply.reply_text == "-ERR invalid"
    await asyncio.wait_for(client.closed.wait(), 2)
    await client.close()


async def test_exit_says_bye_sends_a_disconnect_notice_and_closes(sim, esl):
    reply = await esl.send("exit")
    assert reply.reply_text == "+OK bye"
    notice = await asyncio.wait_for(esl.replies.get(), 2)
    assert notice.content_type == "text/disconnect-notice"
    assert notice.body_text().startswith("Disconnected, goodbye.")
    await asyncio.wait_for(esl.closed.wait(), 2)


async def test_unknown_command_and_unknown_api(esl):
    assert (await esl.send("frobnicate now")).reply_text == "-ERR command not found"
    assert await esl.api("frobnicate now") == "-ERR frobnicate Command not found!\n"


async def test_empty_api_output_becomes_no_reply(sim, esl):
    uuid = await sim.place_inbound_call("+15550001", "+15550002")
    # mod_audio_fork writes nothing for a bad mix type
    assert (
        await esl.api(f"uuid_audio_fork {uuid} start ws://127.0.0.1:9/x quadraphonic 16k")
        == "-ERR no reply\n"
    )


# ---------------------------------------------------------------- api / bgapi


async def test_api_holds_back_this_sockets_events_until_the_reply(sim, esl):
    sim.set_originate_outcome("sofia/gateway/pstn/", None, answer_delay_s=0.2)
    other = await RawEsl.connect(sim.port, "s3cret")
    task = asyncio.create_task(esl.api("originate sofia/gateway/pstn/+15551234567 &park()"))
    # the other listener sees the leg being created while this api is still blocked
    created = await other.wait_event(named("CHANNEL_CREATE"))
    assert not task.done()
    reply = await task
    assert reply == f"+OK {created.unique_id}\n"
    await esl.wait_event(named("CHANNEL_PARK"))
    order = [f.content_type for f in esl.frames]
    first_event = order.index("text/event-plain")
    assert order.index("api/response") < first_event
    assert any(e.unique_id == created.unique_id for e in esl.events[:3])
    await other.close()


async def test_bgapi_honours_the_client_job_uuid_and_reports_through_background_job(esl):
    job = "11111111-2222-3333-4444-555555555555"
    reply = await esl.bgapi("uuid_kill 00000000-0000-0000-0000-000000000000", job)
    assert reply.content_type == "command/reply"
    assert reply.reply_text == f"+OK Job-UUID: {job}" and reply.headers["Job-UUID"] == job
    done = await esl.wait_event(named("BACKGROUND_JOB", Job_UUID=job))
    assert done.get("Job-Command") == "uuid_kill"
    assert done.get("Job-Command-Arg") == "00000000-0000-0000-0000-000000000000"
    assert done.body == "-ERR No such channel!\n"


async def test_bgapi_without_a_job_uuid_gets_one_and_status_has_no_command_arg(esl):
    reply = await esl.bgapi("status")
    job = reply.headers["Job-UUID"]
    assert len(job) == 36 and reply.reply_text == f"+OK Job-UUID: {job}"
    done = await esl.wait_event(named("BACKGROUND_JOB", Job_UUID=job))
    assert "Job-Command-Arg" not in done.headers
    assert done.body.startswith("UP 0 years, 0 days")
    assert "FreeSWITCH (Version 1.10.12-release  64bit) is ready" in done.body


async def test_every_api_command_fires_an_api_event_numbered_before_its_own_effects(sim, esl):
    uuid = await sim.place_inbound_call("+15550001", "+15550002")
    await esl.api(f"uuid_answer {uuid}")
    esl.clear()
    await esl.api(f"uuid_hold {uuid}")
    api = await esl.wait_event(named("API"))
    assert api.get("API-Command") == "uuid_hold" and api.get("API-Command-Argument") == uuid
    hold = next(e for e in esl.events if e.name == "CHANNEL_HOLD")
    # delivered after the command's synchronous events, numbered before them
    assert esl.events.index(api) > esl.events.index(hold)
    assert int(api.get("Event-Sequence")) < int(hold.get("Event-Sequence"))
    esl.clear()
    await esl.bgapi("status")
    api = await esl.wait_event(named("API"))
    assert api.get("API-Command") == "status" and "API-Command-Argument" not in api.headers


async def test_event_sequence_is_monotonic_in_creation_order(sim, esl):
    uuid = await sim.place_inbound_call("+15550001", "+15550002")
    await esl.api(f"uuid_kill {uuid}")
    await esl.wait_event(named("CHANNEL_DESTROY"))
    seqs = [int(e.get("Event-Sequence")) for e in esl.of(uuid)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


# ---------------------------------------------------------------- subscriptions


async def test_json_and_plain_listeners_get_the_same_event_in_their_format(sim, esl):
    raw_reader, raw_writer = await asyncio.open_connection("127.0.0.1", sim.port)
    await read_frame(raw_reader)
    raw_writer.write(b"auth s3cret\n\nevent json CUSTOM conference::maintenance\n\n")
    assert (await read_frame(raw_reader)).reply_text == "+OK accepted"
    assert (await read_frame(raw_reader)).reply_text == "+OK event listener enabled json"

    uuid = await sim.place_inbound_call("+15550001", "+15550002", caller_name="Ann Lee")
    await esl.api(f"uuid_transfer {uuid} 'conference:room 1@default' inline")
    frame = await asyncio.wait_for(read_frame(raw_reader), 2)
    assert frame.content_type == "text/event-json"
    obj = json.loads(frame.body)
    assert obj["Event-Subclass"] == "conference::maintenance" and obj["Action"] == "conference-create"
    assert obj["Conference-Name"] == "room 1"

    plain = await esl.wait_event(named("conference::maintenance", Action="add-member"))
    raw = next(f for f in esl.frames if f.content_type == "text/event-plain" and b"add-member" in f.body)
    assert b"Event-Subclass: conference%3A%3Amaintenance\n" in raw.body
    assert b"Conference-Name: room%201\n" in raw.body
    assert b"Caller-Caller-ID-Name: Ann%20Lee\n" in raw.body
    assert plain.get("Caller-Caller-ID-Name") == "Ann Lee"
    raw_writer.close()


async def test_json_event_with_a_body_keeps_it_under_underscore_body(sim):
    client = await RawEsl.connect(sim.port, "s3cret", subscribe="json BACKGROUND_JOB")
    reply = await client.bgapi("uuid_exists nope")
    frame = await client.wait_for(
        lambda: next((f for f in client.frames if f.content_type == "text/event-json"), None)
    )
    obj = json.loads(frame.body)
    assert obj["Job-UUID"] == reply.headers["Job-UUID"]
    assert obj["_body"] == "false" and obj["Content-Length"] == "5"
    await client.close()


async def test_plain_event_body_has_its_own_content_length(sim, esl):
    await esl.bgapi("uuid_exists nope")
    await esl.wait_event(named("BACKGROUND_JOB"))
    frame = next(f for f in esl.frames if b"BACKGROUND_JOB" in f.body)
    head, _, body = frame.body.partition(b"\n\n")
    assert head.endswith(b"Content-Length: 5") and body == b"false"


async def test_only_subscribed_events_and_custom_subclasses_are_delivered(sim):
    client = await RawEsl.connect(
        sim.port, "s3cret", subscribe="plain CHANNEL_PARK CUSTOM mod_audio_fork::connect"
    )
    bare = await RawEsl.connect(sim.port, "s3cret", subscribe="plain CUSTOM")
    uuid = await sim.place_inbound_call("+15550001", "+15550002")
    await client.wait_event(named("CHANNEL_PARK"))
    await client.api(f"uuid_transfer {uuid} conf-x XML lab")
    await client.settle(0.15)
    assert {e.key for e in client.events} == {"CHANNEL_PARK"}
    # "CUSTOM" without subclasses only matches CUSTOM events that have none
    assert bare.events == []
    await client.close()
    await bare.close()


async def test_unknown_event_names_are_no_keywords(esl):
    assert (await esl.send("event plain NOT_AN_EVENT")).reply_text == "-ERR no keywords supplied"


async def test_nixevent_and_noevents(sim, esl):
    assert (await esl.send("nixevent CHANNEL_STATE CHANNEL_CALLSTATE")).reply_text == "+OK events nixed"
    uuid = await sim.place_inbound_call("+15550001", "+15550002")
    await esl.wait_event(named("CHANNEL_PARK"))
    assert not {"CHANNEL_STATE", "CHANNEL_CALLSTATE"} & set(esl.names(uuid))
    assert (await esl.send("noevents")).reply_text == "+OK no longer listening for events"
    assert (await esl.send("noevents")).reply_text == "-ERR not listening for events"
    esl.clear()
    await esl.api(f"uuid_kill {uuid}")
    await esl.settle(0.1)
    assert esl.events == []


async def test_filter_by_unique_id_also_filters_out_background_jobs(sim, esl):
    a = await sim.place_inbound_call("+15550001", "+15550002")
    b = await sim.place_inbound_call("+15550003", "+15550002")
    assert (await esl.send(f"filter Unique-ID {a}")).reply_text == f"+OK filter added. [Unique-ID]=[{a}]"
    esl.clear()
    await esl.api(f"uuid_answer {b}")
    await esl.api(f"uuid_answer {a}")
    await esl.bgapi("status")
    await esl.wait_event(named("CHANNEL_ANSWER"))
    await esl.settle(0.1)
    assert {e.unique_id for e in esl.events} == {a}
    assert (await esl.send("filter Event-Name BACKGROUND_JOB")).reply_text.startswith("+OK filter added.")
    await esl.bgapi("status")
    await esl.wait_event(named("BACKGROUND_JOB"))


async def test_heartbeat_fires_on_its_interval(sim):
    switch = SwitchSimulator(heartbeat_interval_s=0.05, switchname="hb")
    await switch.start()
    client = await RawEsl.connect(switch.port, subscribe="plain HEARTBEAT")
    beat = await client.wait_event(named("HEARTBEAT"), timeout=2)
    assert beat.get("Event-Info") == "System Ready"
    assert beat.get("FreeSWITCH-Switchname") == "hb"
    assert beat.get("FreeSWITCH-Version").startswith("1.10.12")
    await client.close()
    await switch.stop()


# ---------------------------------------------------------------- scenario controls


async def test_fail_next_replies_once_without_effect(sim, esl):
    uuid = await sim.place_inbound_call("+15550001", "+15550002")
    await esl.api(f"uuid_answer {uuid}")
    sim.fail_next("uuid_hold", "-ERR Operation failed")
    esl.clear()
    assert await esl.api(f"uuid_hold {uuid}") == "-ERR Operation failed\n"
    await esl.settle(0.05)
    assert "CHANNEL_HOLD" not in esl.names(uuid) and sim.snapshot(uuid)["held"] is False
    assert await esl.api(f"uuid_hold {uuid}") == "+OK Success\n"
    assert sim.snapshot(uuid)["held"] is True
    assert sim.commands()[-2:] == [f"uuid_hold {uuid}", f"uuid_hold {uuid}"]


async def test_fail_next_applies_to_bgapi_jobs_too(sim, esl):
    sim.fail_next("originate", "-ERR GATEWAY_DOWN")
    await esl.bgapi("originate sofia/gateway/pstn/+15551234567 &park()")
    done = await esl.wait_event(named("BACKGROUND_JOB"))
    assert done.body == "-ERR GATEWAY_DOWN\n"
    assert not [e for e in esl.events if e.name == "CHANNEL_CREATE"]


async def test_drop_connections_closes_every_socket_and_new_ones_work(sim, esl):
    uuid = await sim.place_inbound_call("+15550001", "+15550002")
    await sim.drop_connections()
    await asyncio.wait_for(esl.closed.wait(), 2)
    await sim.hangup(uuid)  # nobody listening: these events are lost
    again = await RawEsl.connect(sim.port, "s3cret")
    assert await again.api(f"uuid_exists {uuid}") == "false"
    await again.close()


async def test_show_channels_as_json(sim, esl):
    assert await esl.api("show channels as json") == '{"row_count": 0}\n'
    uuid = await sim.place_inbound_call("+15550001", "+15550002")
    data = json.loads(await esl.api("show channels as json"))
    assert data["row_count"] == 1
    row = data["rows"][0]
    assert row["uuid"] == uuid and row["direction"] == "inbound" and row["state"] == "CS_EXECUTE"
    assert row["name"] == "sofia/external/+15550001@127.0.0.1"
    assert row["cid_num"] == "+15550001" and row["dest"] == "+15550002"
    assert row["callstate"] == "RINGING" and row["application"] == "park"
    assert row["created"] and row["created_epoch"].isdigit()
    await esl.api(f"uuid_kill {uuid}")
    await esl.wait_event(named("CHANNEL_DESTROY"))
    assert await esl.api("show channels as json") == '{"row_count": 0}\n'
    plain = await esl.api("show channels")
    assert plain.startswith("uuid,direction,created,created_epoch,name,state,") and plain.endswith(
        "\n0 total.\n"
    )


async def test_in_process_api_is_logged_and_fires_the_api_event(sim, esl):
    assert await sim.api("uuid_exists nope") == "false"
    event = await esl.wait_event(named("API"))
    assert event.get("API-Command") == "uuid_exists"
    assert sim.commands() == ["uuid_exists nope"]


async def test_myevents_binds_the_socket_to_one_channel_and_closes_with_it(sim, esl):
    a = await sim.place_inbound_call("+15550001", "+15550002")
    b = await sim.place_inbound_call("+15550003", "+15550002")
    bound = await RawEsl.connect(sim.port, "s3cret", subscribe=None)
    assert (await bound.send(f"myevents {a} json")).reply_text == "+OK Events Enabled"
    assert (await bound.send(f"myevents {a}")).reply_text == "-ERR aready enabled."
    await esl.api(f"uuid_answer {b}")
    await esl.api(f"uuid_answer {a}")
    await bound.wait_event(named("CHANNEL_ANSWER"))
    assert {e.unique_id for e in bound.events} == {a}
    assert all(
        f.content_type == "text/event-json" for f in bound.frames if f.content_type.startswith("text/event")
    )
    await esl.api(f"uuid_kill {a}")
    await asyncio.wait_for(bound.closed.wait(), 2)
    assert bound.frames[-1].content_type == "text/disconnect-notice"
    await bound.close()


async def test_xml_listener_gets_text_event_xml(sim):
    client = await RawEsl.connect(sim.port, "s3cret", subscribe=None)
    assert (await client.send("event xml CHANNEL_CREATE")).reply_text == "+OK event listener enabled xml"
    await sim.place_inbound_call("+15550001", "+15550002")
    frame = await client.wait_for(
        lambda: next((f for f in client.frames if f.content_type == "text/event-xml"), None)
    )
    assert frame.body.startswith(b"<event>") and b"<Event-Name>CHANNEL_CREATE</Event-Name>" in frame.body
    await client.close()


async def test_command_lines_up_to_a_megabyte_are_accepted(sim, esl):
    uuid = await sim.place_inbound_call("+15550001", "+15550002")
    big = "x" * 300_000
    assert await esl.api(f"uuid_setvar {uuid} big {big}") == "+OK\n"
    assert await esl.api(f"uuid_getvar {uuid} big") == big
