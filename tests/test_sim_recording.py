"""The simulator's uuid_record leaves a real WAV file, as FreeSWITCH 1.10.12 writes it: stereo on
RECORD_STEREO (the caller's tone left, silence right), masked stretches silent, paused stretches
left out, a read-muted caller silent, the file complete before RECORD_STOP, and record_ms true."""

from __future__ import annotations

import asyncio
import struct
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.sim.recording import FRAME_MS, Recording
from bridge.sim.server import SwitchSimulator
from tests.sim_helpers import RawEsl, running_sim


@pytest.fixture
async def sim() -> AsyncIterator[SwitchSimulator]:
    async with running_sim(answer_delay_s=0.02) as switch:
        yield switch


def read_wav(path: Path) -> tuple[wave._wave_params, list[int], list[int]]:
    with wave.open(str(path), "rb") as wav:
        params = wav.getparams()
        raw = wav.readframes(params.nframes)
    samples = struct.unpack(f"<{len(raw) // 2}h", raw)
    if params.nchannels == 2:
        return params, list(samples[0::2]), list(samples[1::2])
    return params, list(samples), []


def loud(samples: list[int]) -> bool:
    return max((abs(s) for s in samples), default=0) > 1000


async def test_a_stereo_recording_with_a_masked_and_a_paused_stretch(sim, esl: RawEsl, tmp_path: Path):
    uuid = await sim.place_inbound_call("+15550001", "+15559999")
    await esl.api(f"uuid_answer {uuid}")
    await esl.api(f"uuid_setvar {uuid} RECORD_STEREO true")
    await esl.api(f"uuid_setvar {uuid} RECORD_PRE_BUFFER_FRAMES 0")  # as the bridge does: no lag
    path = tmp_path / "deep" / "call.wav"  # the directory is made, as FreeSWITCH does
    assert await esl.api(f"uuid_record {uuid} start {path}") == "+OK Success\n"
    await asyncio.sleep(0.4)
    assert await esl.api(f"uuid_record {uuid} mask {path}") == "+OK Success\n"
    await asyncio.sleep(0.4)
    assert await esl.api(f"uuid_record {uuid} unmask {path}") == "+OK Success\n"
    await asyncio.sleep(0.4)
    assert await esl.api(f"uuid_record {uuid} pause {path}") == "+OK Success\n"
    await asyncio.sleep(0.5)
    assert await esl.api(f"uuid_record {uuid} resume {path}") == "+OK Success\n"
    await asyncio.sleep(0.3)
    assert await esl.api(f"uuid_record {uuid} stop {path}") == "+OK Success\n"
    stop = await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "RECORD_STOP")
    assert stop.get("Record-File-Path") == str(path)

    params, left, right = read_wav(path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, 8000)
    seconds = params.nframes / params.framerate
    # 0.4 + 0.4 (masked: silent, still there) + 0.4 + 0.3; the 0.5 s paused is not in the file.
    assert 1.45 <= seconds <= 1.75, seconds
    ms = int(sim.channel(uuid).variables["record_ms"])
    assert ms == params.nframes * 1000 // 8000
    assert not loud(right)  # the AI said nothing
    rate = params.framerate

    def window(start_s: float, end_s: float) -> list[int]:
        return left[int(start_s * rate) : int(end_s * rate)]

    assert loud(window(0.05, 0.3))  # the caller's tone
    assert not loud(window(0.5, 0.75))  # masked: silence
    assert loud(window(0.9, 1.15))  # unmasked
    assert loud(window(1.3, seconds - 0.05))  # after the resume: the paused stretch is not there


async def test_mono_at_record_sample_rate_and_a_read_muted_caller_is_silent(sim, esl: RawEsl, tmp_path: Path):
    uuid = await sim.place_inbound_call("+15550001", "+15559999")
    await esl.api(f"uuid_answer {uuid}")
    await esl.api(f"uuid_setvar {uuid} record_sample_rate 16000")
    await esl.api(f"uuid_setvar {uuid} RECORD_PRE_BUFFER_FRAMES 0")
    path = tmp_path / "mono.wav"
    await esl.api(f"uuid_record {uuid} start {path}")
    await asyncio.sleep(0.3)
    assert await esl.api(f"uuid_audio {uuid} start read mute -1") == "+OK\n"
    await asyncio.sleep(0.3)
    await esl.api(f"uuid_audio {uuid} stop")
    await asyncio.sleep(0.3)
    await esl.api(f"uuid_kill {uuid}")  # the hangup stops and writes it
    await esl.wait_event(lambda e: e.unique_id == uuid and e.name == "RECORD_STOP")
    params, left, _ = read_wav(path)
    assert (params.nchannels, params.framerate) == (1, 16000)
    assert loud(left[: int(0.25 * 16000)])
    assert not loud(left[int(0.35 * 16000) : int(0.55 * 16000)])
    assert loud(left[int(0.65 * 16000) :])


def test_segments_whole_frames_and_no_frame_lost_to_rounding():
    rec = Recording("/dev/null", 0.0, rate=8000)
    # 100 stretches of 25 ms alternately masked: 2.5 s in all, i.e. 125 frames of 20 ms.
    rec.changes = [(i * 0.025, False, i % 2 == 1, False) for i in range(100)]
    segments = rec.segments(2.5)
    assert sum(frames for frames, _ in segments) == 125 * 8000 * FRAME_MS // 1000
    assert all(frames % (8000 * FRAME_MS // 1000) == 0 for frames, _ in segments)


async def test_the_default_pre_buffer_lags_the_file_half_a_second(sim, esl: RawEsl, tmp_path: Path):
    """Seen on the real 1.10.12 (tests/freeswitch/test_captures.py, 05_uuid_record): without
    RECORD_PRE_BUFFER_FRAMES the recording bug holds back 25 frames, so the file is 0.5 s shorter
    than the recording ran (start 0.8 s, pause 1.0 s, resume 0.8 s, stop: 1.1 s of file, not 1.6 s)
    and a mask acts on what was said 0.5 s earlier: mask 0.8 s, unmask 0.8 s later, 0.8 s more,
    stop: 1.92 s of file, 0.3 s heard, 0.8 s silent, 0.8 s heard (the masked stretch starts
    0.5 s early in the caller's words and its last 0.5 s is in clear)."""
    uuid = await sim.place_inbound_call("+15550001", "+15559999")
    await esl.api(f"uuid_answer {uuid}")
    path = tmp_path / "lag.wav"
    await esl.api(f"uuid_record {uuid} start {path}")
    await asyncio.sleep(0.8)
    await esl.api(f"uuid_record {uuid} mask {path}")
    await asyncio.sleep(0.8)
    await esl.api(f"uuid_record {uuid} unmask {path}")
    await asyncio.sleep(0.8)
    await esl.api(f"uuid_record {uuid} stop {path}")
    params, left, _ = read_wav(path)
    rate = params.framerate
    assert 1.85 <= params.nframes / rate <= 2.0, params.nframes / rate

    def window(start_s: float, end_s: float) -> list[int]:
        return left[int(start_s * rate) : int(end_s * rate)]

    assert loud(window(0.0, 0.25)) and not loud(window(0.35, 1.05)) and loud(window(1.15, 1.85))

    rec = Recording("/dev/null", 0.0, rate=8000, pre_buffer_frames=25)
    rec.changes += [(0.8, True, False, False), (1.8, False, False, False)]  # paused 0.8 -> 1.8
    assert sum(frames for frames, _ in rec.segments(2.6)) == int(1.1 * 8000)


def test_record_pre_buffer_frames_is_read_like_freeswitch():
    from bridge.sim.recording import pre_buffer_frames

    assert (pre_buffer_frames(None), pre_buffer_frames("0"), pre_buffer_frames("10")) == (25, 0, 10)
    assert (pre_buffer_frames("x"), pre_buffer_frames("-3"), pre_buffer_frames("7ms")) == (0, 0, 7)
