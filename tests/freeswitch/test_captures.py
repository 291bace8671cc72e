"""Fresh ESL captures from the real switch, compared with what the simulator answers.

A SIPp caller (a PCMU tone) dials the `lab` profile and is answered by hand (no bridge: nothing
but the recorded commands touches the channel). For each command family a CaptureRecorder
(bridge/sim/captures.py) records the commands, their replies and every event of the window, in
the format of ../shared/esl-captures/; then the same commands go to a SwitchSimulator holding an
answered inbound call, and the simulator must answer the same reply texts and fire, on that
channel, the same events in the same order with the same key headers (tests/test_sim_captures.py's
comparison, the one that pins the simulator to the shared captures). So the next difference
between the simulator and FreeSWITCH is found here, by a test.

`make captures` runs this file with CAPTURES_OUT=var/captures (or CAPTURES_DIR=...): the fresh
files are written there too, sanitized like the shared ones, for a person to diff against
../shared/esl-captures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from bridge.sim.captures import Capture, CaptureRecorder, Entry, check, load, render, sanitize, split
from bridge.sim.server import SwitchSimulator
from tests.freeswitch.conftest import FreeSwitch
from tests.freeswitch.lab import CALLER, DIALED, SippCaller, l16_tone, rms, wav_file
from tests.sim_helpers import RawEsl
from tests.test_sim_captures import Mapping, expect, reply_text, send

pytestmark = pytest.mark.freeswitch

NOWHERE = "00000000-0000-0000-0000-000000000000"
PROMPT = "prompt.wav"
SPEECH = "tts://flite|kal|Hello, this is the bridge."  # ~1.9 s of speech (75 ms a character)


@dataclass
class Family:
    file: str  # the name in var/captures (the shared capture's number where it is the same family)
    title: str
    commands: list[tuple[str, float]]  # ESL command with {b}, {rec}, {url}; capture window after it
    timed: bool = False  # replayed on the simulator with the real windows (what is recorded depends on it)


FAMILIES = [
    Family("01_uuid_hold.txt", "uuid_hold <B> ; ~2 s ; uuid_hold off <B>",
           [("api uuid_hold {b}", 1.5), ("api uuid_hold off {b}", 1.5)]),
    Family("02_uuid_audio_mute.txt", "uuid_audio <B> start read mute 1 ; uuid_audio <B> stop",
           [("api uuid_audio {b} start read mute 1", 1.0), ("api uuid_audio {b} stop", 1.0)]),
    Family("03_uuid_send_dtmf.txt", "uuid_send_dtmf <B> 1234#", [("api uuid_send_dtmf {b} 1234#", 1.5)]),
    Family("04_uuid_broadcast.txt", "uuid_broadcast <B> playback::{playback_id=...}http_cache://<url> aleg",
           [("api uuid_broadcast {b} playback::{{playback_id=pb_capture}}http_cache://{url} aleg", 2.0)]),
    Family("05_uuid_record.txt", "uuid_record <B> start|pause|resume|mask|unmask|stop <file>",
           [("api uuid_record {b} start {rec}", 0.8), ("api uuid_record {b} pause {rec}", 1.0),
            ("api uuid_record {b} resume {rec}", 0.8), ("api uuid_record {b} mask {rec}", 0.8),
            ("api uuid_record {b} unmask {rec}", 0.8), ("api uuid_record {b} stop {rec}", 1.0)], timed=True),
    # v1.1 TTS: mod_ssml's tts:// (mod_flite's kal) in uuid_broadcast's ^^` form, as the bridge sends it
    Family("12_uuid_broadcast_tts.txt", "uuid_broadcast ^^`<B>`playback::{playback_id=...}tts://flite|kal|<text>`aleg",
           [(f"api uuid_broadcast ^^`{{b}}`playback::{{{{playback_id=pb_capture}}}}{SPEECH}`aleg", 3.5)]),
    Family("11_nonexistent_uuid.txt", "uuid_* on 00000000-0000-0000-0000-000000000000",
           [(f"api {c} {NOWHERE}{rest}", 0.2) for c, rest in (
               ("uuid_kill", ""), ("uuid_hold", ""), ("uuid_transfer", " 9196 XML lab"),
               ("uuid_broadcast", " tone_stream://%(100,0,440) aleg"), ("uuid_record", " start /tmp/x.wav"),
               ("uuid_send_dtmf", " 1"), ("uuid_audio", " start read mute 1"), ("uuid_getvar", " uuid"),
               ("uuid_exists", ""), ("uuid_answer", ""), ("uuid_audio_fork", " stop"))]),
]  # fmt: skip


@pytest.fixture
async def prompt_url(tmp_path: Path) -> AsyncIterator[str]:
    """A 0.5 s WAV on 127.0.0.1 for uuid_broadcast's http_cache://."""
    data = wav_file(tmp_path / PROMPT, l16_tone(0.5, rate=8000, hz=880.0)).read_bytes()
    app = web.Application()

    async def serve(_request: web.Request) -> web.Response:
        return web.Response(body=data, content_type="audio/wav")

    app.router.add_get(f"/{PROMPT}", serve)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/{PROMPT}"
    finally:
        await runner.cleanup()


@dataclass
class RealCall:
    uuid: str
    channel_name: str
    sipp: SippCaller


@contextlib.asynccontextmanager
async def answered_sipp_call(freeswitch: FreeSwitch, workdir: Path) -> AsyncIterator[RealCall]:
    watch = await RawEsl.connect(freeswitch.esl_port, freeswitch.esl_password, subscribe="plain CHANNEL_PARK")
    sipp = SippCaller(workdir, switch_sip_port=freeswitch.sip_port, max_idle_s=60)
    try:
        await watch.api("hupall NORMAL_CLEARING")
        await sipp.start()
        park = await watch.wait_event(lambda e: e.var("sip_call_id") == sipp.sip_call_id, timeout=10)
        assert await watch.api(f"uuid_answer {park.unique_id}") == "+OK\n"
        await asyncio.sleep(0.5)  # media flowing, the answer's events gone by
        yield RealCall(park.unique_id, park.get("Channel-Name"), sipp)
    finally:
        await watch.api("hupall NORMAL_CLEARING")
        await watch.close()
        if sipp.running:
            with contextlib.suppress(AssertionError):
                await sipp.wait(5)
        await sipp.stop()


@pytest.fixture
async def real_call(freeswitch: FreeSwitch, tmp_path: Path) -> AsyncIterator[RealCall]:
    async with answered_sipp_call(freeswitch, tmp_path / "sipp") as call:
        yield call


async def sanitizing(freeswitch: FreeSwitch) -> tuple[str, list[tuple[str, str]]]:
    """The switch's name and (header-exact) substitutions for its host name and non-loopback
    addresses, as the shared captures spell them (their README): fs-lab-host, switchname fs-lab,
    198.51.100.10, 2001:db8::10."""
    esl = await freeswitch.esl()
    try:
        host = (await esl.api("hostname")).strip()
        name = (await esl.api("switchname")).strip()
        v4 = (await esl.api("global_getvar local_ip_v4")).strip()
        v6 = (await esl.api("global_getvar local_ip_v6")).strip()
    finally:
        await esl.close()
    subs = [
        (f"FreeSWITCH-Hostname: {host}\n", "FreeSWITCH-Hostname: fs-lab-host\n"),
        (f"FreeSWITCH-Switchname: {name}\n", "FreeSWITCH-Switchname: fs-lab\n"),
    ]
    for address, doc in ((v4, "198.51.100.10"), (v6, "2001:db8::10")):
        if address and not address.startswith("-") and address not in ("127.0.0.1", "::1"):
            subs.append((address, doc))
    return name, subs


async def record(
    freeswitch: FreeSwitch, family: Family, values: dict[str, str], path: Path, setup: str
) -> Capture:
    async with CaptureRecorder("127.0.0.1", freeswitch.esl_port, freeswitch.esl_password) as rec:
        for command, window in family.commands:
            await rec.send(command.format(**values))
            await rec.window(window)
        rec.write(path, family.title, setup)
    return load(path)


def rewrite_sanitized(src: Path, dest: Path, switchname: str, subs: list[tuple[str, str]]) -> None:
    """A copy of the capture with the host's name and addresses replaced (Content-Length redone)."""
    header, entries = split(src.read_bytes())
    header = header.replace(f"# {switchname} ESL capture", "# fs-lab ESL capture")
    header = header.replace(f"switchname {switchname},", "switchname fs-lab,")
    shown = ", ".join(f"{old.strip()} -> {new.strip()}" for old, new in subs)
    header = re.sub(
        r"^# Sanitized: .*$", f"# Sanitized: {shown}; Content-Length recomputed.", header, flags=re.M
    )
    clean = [Entry(e.direction, e.t, sanitize(e.raw, subs), e.kind) for e in entries]
    data = render(header, clean)
    assert check(data) == [], check(data)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)


@pytest.fixture
async def sim() -> AsyncIterator[SwitchSimulator]:
    switch = SwitchSimulator(answer_delay_s=0.02, playback_duration_s=0.5, switchname="vm")
    await switch.start()
    try:
        yield switch
    finally:
        await switch.stop()


def wav_shape(path: str) -> tuple[float, float]:
    """(seconds, the longest silent stretch of the left channel in seconds) of a WAV."""
    import array

    with wave.open(path, "rb") as f:
        channels, rate = f.getnchannels(), f.getframerate()
        samples = array.array("h")
        samples.frombytes(f.readframes(f.getnframes()))
        seconds = f.getnframes() / rate
    left = samples[0::channels]
    step = rate // 50
    best = run = 0
    for i in range(0, len(left) - step + 1, step):
        run = run + 1 if rms(left[i : i + step].tobytes()) < 50 else 0
        best = max(best, run)
    return seconds, best * 0.02


@pytest.mark.parametrize("family", FAMILIES, ids=[f.file.removesuffix(".txt") for f in FAMILIES])
async def test_the_simulator_answers_what_the_real_switch_answers(
    freeswitch: FreeSwitch, real_call: RealCall, sim: SwitchSimulator, family: Family,
    prompt_url: str, tmp_path: Path,
):  # fmt: skip
    real_rec = str(freeswitch.recordings_dir / f"capture-{real_call.uuid}.wav")
    path = tmp_path / family.file
    setup = (
        f"SIPp caller (PCMU tone) -> sofia/lab {DIALED}, parked by the lab dialplan, uuid_answer ; "
        f"B-leg (inbound on the lab profile, answered+parked) uuid={real_call.uuid}"
    )
    values = {"b": real_call.uuid, "rec": real_rec, "url": prompt_url}
    capture = await record(freeswitch, family, values, path, setup)
    out = os.environ.get("CAPTURES_OUT")
    if out:
        switchname, subs = await sanitizing(freeswitch)
        rewrite_sanitized(path, Path(out) / family.file, switchname, subs)

    # the same commands on the simulator, on an answered inbound call of the same numbers
    esl = await RawEsl.connect(sim.port)
    try:
        b = await sim.place_inbound_call(CALLER, DIALED, caller_name="Lab caller")
        assert await esl.api(f"uuid_answer {b}") == "+OK\n"
        await esl.wait_for(lambda: any(e.name == "CHANNEL_ANSWER" for e in esl.of(b)))
        await asyncio.sleep(0.2)
        sim_rec = str(tmp_path / f"sim-{b}.wav")
        mapping = Mapping()  # replaced in this order: the paths hold the uuid
        mapping.uuids[real_rec] = sim_rec
        mapping.uuids[real_call.channel_name] = sim.snapshot(b)["name"]
        mapping.uuids[real_call.uuid] = b
        for step, (_, window) in zip(capture.steps, family.commands, strict=True):
            assert step.reply is not None
            sent_at = asyncio.get_running_loop().time()
            reply = await send(esl, step, mapping)
            assert reply_text(reply) == mapping.text(reply_text(step.reply)), step.sent
            # A fresh capture's CHANNEL_CALLSTATE may come before or after its neighbour: on
            # `uuid_hold off` the switch's ACTIVE callstate and CHANNEL_UNHOLD race with the far
            # end's answer to the re-INVITE (seen both ways in two runs on the same build).
            await expect(esl, step, mapping, settle=min(window, 0.5), racing=("CHANNEL_CALLSTATE",))
            if family.timed:  # the real switch's timing, so the two recordings are comparable
                await asyncio.sleep(max(0.0, sent_at + window - asyncio.get_running_loop().time()))
    finally:
        await esl.close()

    if family.file.startswith("05_"):
        # what the two recordings hold: a paused stretch, a masked one
        real_seconds, real_quiet = wav_shape(real_rec)
        sim_seconds, sim_quiet = wav_shape(sim_rec)
        assert abs(real_seconds - sim_seconds) < 0.4, (real_seconds, sim_seconds)
        assert abs(real_quiet - sim_quiet) < 0.3, (real_quiet, sim_quiet)
