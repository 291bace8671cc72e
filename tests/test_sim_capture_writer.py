"""The capture writer (bridge.sim.captures): it writes the shared fs-lab captures' format byte for
byte, and a session it records against the simulator reads back as it happened."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.esl.protocol import Event
from bridge.sim.captures import CaptureRecorder, check, kind_of, load, parse, render, split
from bridge.sim.server import SwitchSimulator
from tests.sim_helpers import running_sim

CAPTURES = Path(os.environ.get("ESL_CAPTURES_DIR", "/work/shared/esl-captures"))
SHARED = sorted(CAPTURES.glob("[0-9]*.txt")) if CAPTURES.is_dir() else []
NOWHERE = "00000000-0000-0000-0000-000000000000"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def sim() -> AsyncIterator[SwitchSimulator]:
    async with running_sim(answer_delay_s=0.01, playback_duration_s=0.1, switchname="fs-sim") as switch:
        yield switch


@pytest.mark.skipif(not SHARED, reason=f"no ESL captures at {CAPTURES}")
@pytest.mark.parametrize("path", SHARED, ids=[p.name for p in SHARED])
def test_the_shared_captures_split_and_render_back_byte_for_byte(path):
    data = path.read_bytes()
    header, entries = split(data)
    assert render(header, entries) == data
    assert check(data) == []
    for entry in entries:
        if entry.direction == "RECV":
            assert kind_of(entry.frame()) == entry.kind  # the writer labels frames as the lab did


def same(a: Event, b: Event) -> bool:
    return (a.headers, a.body, a.extra_blocks) == (b.headers, b.body, b.extra_blocks)


async def test_a_session_recorded_against_the_simulator_reads_back_as_it_happened(sim, esl, tmp_path):
    b_leg = await sim.place_inbound_call("1001", "5000")
    async with CaptureRecorder("127.0.0.1", sim.port, sim.password) as rec:
        assert (rec.version, rec.switchname) == ("1.10.12-release", "fs-sim")
        # setup is not captured
        assert (await rec.unrecorded(f"api uuid_exists {b_leg}")).body == b"true"
        commands = [f"api uuid_answer {b_leg}", f"bgapi uuid_kill {NOWHERE}", f"api uuid_hold {b_leg}"]
        replies = []
        for command in commands:
            replies.append(await rec.send(command))
            await rec.window(0.3)
        with pytest.raises(RuntimeError):
            await rec.unrecorded("api status")
        out = rec.write(tmp_path / "12_sim.txt", title="answer, bgapi, hold", setup=f"B-leg uuid={b_leg}")

    data = out.read_bytes()
    assert check(data) == []
    lines = data.decode().splitlines()
    assert lines[:3] == [
        "# fs-sim ESL capture: answer, bgapi, hold",
        f"# FreeSWITCH 1.10.12-release, switchname fs-sim, ESL 127.0.0.1:{sim.port}, "
        "subscription: event plain ALL",
        f"# Setup (not captured): B-leg uuid={b_leg}",
    ]
    assert lines[7] == ">>>>> SENT  t=+0.000s"
    assert f"api uuid_exists {b_leg}" not in data.decode()
    _, entries = split(data)
    assert [e.t for e in entries] == sorted(e.t for e in entries)

    capture = load(out)
    assert capture.uuid("B-leg") == b_leg
    assert [s.sent for s in capture.steps] == commands
    for step, reply in zip(capture.steps, replies, strict=True):
        assert step.reply is not None and reply is not None
        assert (step.reply.headers, step.reply.body) == (reply.headers, reply.body)
    assert replies[0].body == b"+OK\n" and replies[1].reply_text.startswith("+OK Job-UUID: ")
    job = next(e for e in capture.steps[1].events if e.name == "BACKGROUND_JOB")
    assert job.body == "-ERR No such channel!\n" and job.get("Job-UUID") == replies[1].headers["Job-UUID"]
    assert "CHANNEL_ANSWER" in [e.name for e in capture.steps[0].events]
    assert "CHANNEL_HOLD" in [e.name for e in capture.steps[2].events]

    # An independent subscriber saw the very same events, none left out in between.
    captured = [e for s in capture.steps for e in s.events]
    seqs = [int(e.get("Event-Sequence")) for e in captured]
    observed = {int(e.get("Event-Sequence")): e for e in esl.events}
    between = [n for n in observed if min(seqs) <= n <= max(seqs)]
    assert sorted(between) == sorted(seqs)
    for event in captured:
        assert same(event, observed[int(event.get("Event-Sequence"))]), event.name


async def test_sanitizing_recomputes_the_outer_and_the_inner_content_length(sim, tmp_path):
    subs = [("No such channel", "Gone"), ("fs-sim", "fs-lab")]
    async with CaptureRecorder("127.0.0.1", sim.port, sim.password, substitutions=subs) as rec:
        await rec.send(f"api uuid_kill {NOWHERE}")
        await rec.send(f"bgapi uuid_kill {NOWHERE}")
        await rec.window(0.3)
        out = rec.write(tmp_path / "s.txt", title="sanitized", setup="none")
    data = out.read_bytes()
    assert check(data) == []
    header, _, frames = data.partition(b"\n>>>>> SENT")
    assert b"No such channel" not in frames and b"fs-sim" not in frames
    lines = header.decode().splitlines()
    assert lines[0] == "# fs-lab ESL capture: sanitized"
    assert lines[5] == "# Sanitized: No such channel -> Gone, fs-sim -> fs-lab; Content-Length recomputed."
    capture = parse(data)
    assert capture.steps[0].reply.body == b"-ERR Gone!\n"
    assert capture.steps[0].reply.headers["Content-Length"] == "11"
    job = next(e for s in capture.steps for e in s.events if e.name == "BACKGROUND_JOB")
    assert job.body == "-ERR Gone!\n" and job.get("FreeSWITCH-Switchname") == "fs-lab"


async def test_the_command_line_pipelines_capture_11s_commands_and_checks_the_file(sim, tmp_path):
    commands = (
        [s.sent for s in load(CAPTURES / "11_nonexistent_uuid.txt").steps]
        if SHARED
        else [
            f"api uuid_kill {NOWHERE}",
            f"api uuid_getvar {NOWHERE} x",
        ]
    )
    out = tmp_path / "11_sim.txt"
    cli = [sys.executable, "-m", "bridge.sim.captures"]
    record = await asyncio.create_subprocess_exec(
        *cli, "record", "--port", str(sim.port), "--out", str(out), "--title", "nonexistent uuid",
        "--pipeline", "--window", "0.3", *commands,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(record.communicate(), 30)
    assert record.returncode == 0, stderr.decode()
    assert stdout.decode().startswith(f"{out}: {len(commands)} commands")
    checked = await asyncio.create_subprocess_exec(*cli, "check", str(out), cwd=REPO)
    assert await asyncio.wait_for(checked.wait(), 30) == 0

    capture = load(out)
    assert [s.sent for s in capture.steps] == commands
    if SHARED:  # the simulator answers what the real switch answered
        real = load(CAPTURES / "11_nonexistent_uuid.txt")
        assert [s.reply.body for s in capture.steps] == [s.reply.body for s in real.steps]


def test_check_names_a_wrong_content_length():
    good = (
        b"# x\n>>>>> SENT  t=+0.000s\napi status\n\n\n"
        b"<<<<< RECV REPLY  t=+0.001s\nContent-Type: api/response\nContent-Length: 3\n\nok\n\n"
    )
    assert check(good) == []
    assert check(good.replace(b"Content-Length: 3", b"Content-Length: 4"))
    assert check(good.replace(b"RECV REPLY", b"RECV EVENT API"))
    inner = b"Event-Name: BACKGROUND_JOB\nContent-Length: 9\n\n+OK\n"  # the inner body has 4 bytes
    event = b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(inner), inner)
    bad = good + b"<<<<< RECV EVENT BACKGROUND_JOB  t=+0.002s\n" + event + b"\n"
    assert any("inner Content-Length" in p for p in check(bad))
