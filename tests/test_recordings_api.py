"""The recordings API against the sandbox, through the official SDK's `recordings` resource (issue 10):
metadata and a signed, expiring URL (no key in it), the bytes with Range, the tenant fence and the
scopes, and a PCI pause that is silence in the WAV the simulator wrote."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import struct
import time
import wave
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from yotel.errors import ConflictError, NotFoundError, PermissionError

from bridge.media import recordings
from bridge.store.tenants import ALL_SCOPES
from tests.conftest import AgentServer, in_thread
from tests.helpers import end_call, events, sandbox_with, sdk, start_call, wait_until

PUBLIC = "https://bridge.example.com:8443"


@pytest.fixture
async def sandbox(redis_url: str, redis: Any, tmp_path: Any) -> Any:
    async with sandbox_with(redis_url, tmp_path, rate_limit_per_s=1000) as box:
        yield box


async def recorded_call(sandbox: Any, agent_server: AgentServer, *, pause: bool = False) -> str:
    """An AI call that talked for a while (a recording_pause in the middle, if asked), hung up,
    its recording ready."""
    call = await start_call(sandbox, agent_server)
    ai = sdk(sandbox).ai_sessions
    await asyncio.sleep(0.4)
    if pause:
        await in_thread(ai.recording_pause, call.call_id, reason="pci", callback_token=call.token)
        await asyncio.sleep(0.5)
        await in_thread(ai.recording_resume, call.call_id, callback_token=call.token)
        await asyncio.sleep(0.4)
    await end_call(sandbox, call.call_id)
    await wait_until(lambda: events(sandbox, call.call_id, "call.recording_ready"))
    return call.call_id


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers or {}) as resp:
            return resp.status, await resp.read(), resp.headers


def frames_loudness(data: bytes) -> tuple[wave._wave_params, list[bool], list[bool]]:
    """Per 20 ms frame: is the left (caller) / right (AI) channel loud."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        params = wav.getparams()
        raw = wav.readframes(params.nframes)
    samples = struct.unpack(f"<{len(raw) // 2}h", raw)
    step = params.framerate // 50 * params.nchannels
    left, right = [], []
    for at in range(0, len(samples) - step + 1, step):
        frame = samples[at : at + step]
        left.append(max(abs(s) for s in frame[0 :: params.nchannels]) > 1000)
        right.append(max(abs(s) for s in frame[1 :: params.nchannels]) > 1000)
    return params, left, right


async def test_get_signed_url_fetch_bytes_and_download(sandbox, agent_server: AgentServer, tmp_path: Path):
    call_id = await recorded_call(sandbox, agent_server, pause=True)
    client = sdk(sandbox)
    info = await in_thread(client.recordings.get_signed_url, call_id)
    assert info["call_id"] == call_id and info["format"] == "audio/wav" and info["stereo"] is True
    assert info["channels"] == 2 and info["sample_rate_hz"] == 8000
    assert 1.1 <= info["duration_ms"] / 1000 <= 2.5 and info["duration_s"] == round(
        info["duration_ms"] / 1000
    )
    base = sandbox.info.base_url
    assert info["audio_url"] == f"{base}/api/v1/calls/{call_id}/recording/audio"
    url = urlsplit(info["url"])
    assert f"{url.scheme}://{url.netloc}" == base and url.path == f"/recordings/{call_id}.wav"
    query = parse_qs(url.query)
    assert set(query) == {"expires", "signature"}  # no key in the URL, only the signature
    assert sandbox.info.admin_key not in info["url"]
    expires = int(query["expires"][0])
    assert abs(expires - (time.time() + 900)) < 5
    assert info["expires_at"].endswith("Z") and info["expires_in_s"] == 900

    data = await in_thread(client.recordings.fetch_bytes, call_id)
    assert len(data) == info["size_bytes"]
    dest = tmp_path / "copy.wav"
    assert await in_thread(client.recordings.download, call_id, str(dest)) == str(dest)
    assert dest.read_bytes() == data
    status, signed, headers = await get(info["url"])  # no Authorization header at all
    assert status == 200 and signed == data
    assert headers["Content-Type"] == "audio/wav" and headers["X-Request-Id"]

    # The WAV: stereo, 8 kHz, the caller's tone on the left, the AI silent, the PCI pause silent.
    params, left, right = frames_loudness(data)
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, 8000)
    assert not any(right)
    runs = [(loud, len(list(group))) for loud, group in itertools.groupby(left)]
    assert [loud for loud, _ in runs] == [True, False, True], runs
    assert 20 <= runs[1][1] <= 32  # the ~0.5 s pause, 20 ms frames: in the file, as silence


async def test_range_requests_let_a_player_seek(sandbox, agent_server: AgentServer):
    call_id = await recorded_call(sandbox, agent_server)
    client = sdk(sandbox)
    info = await in_thread(client.recordings.get_signed_url, call_id)
    whole = await in_thread(client.recordings.fetch_bytes, call_id)
    size = len(whole)
    for url, headers in (
        (info["url"], {}),
        (info["audio_url"], {"Authorization": f"Bearer {sandbox.info.admin_key}"}),
    ):
        status, part, got = await get(url, {**headers, "Range": "bytes=44-1043"})
        assert status == 206 and part == whole[44:1044]
        assert got["Content-Range"] == f"bytes 44-1043/{size}"
        status, tail, _ = await get(url, {**headers, "Range": "bytes=-100"})
        assert status == 206 and tail == whole[-100:]
        for bad in (f"bytes={size}-", "bytes=9-3", "items=0-1"):
            status, body, got = await get(url, {**headers, "Range": bad})
            assert status == 416 and b"range_not_satisfiable" in body, bad
            assert got["Content-Range"] == f"bytes */{size}"
    _, _, got = await get(info["audio_url"], {"Authorization": f"Bearer {sandbox.info.admin_key}"})
    assert got["Cache-Control"] == "private, max-age=300" and got["Accept-Ranges"] == "bytes"


async def test_call_recording_ready_carries_the_sdk_url(sandbox, agent_server: AgentServer):
    call_id = await recorded_call(sandbox, agent_server)
    ready = (await events(sandbox, call_id, "call.recording_ready"))[0].data
    assert ready["recording_url"] == f"{sandbox.info.base_url}/api/v1/calls/{call_id}/recording/audio"
    assert ready["stereo"] is True and ready["format"] == "audio/wav"
    info = await in_thread(sdk(sandbox).recordings.get_signed_url, call_id)
    assert ready["duration_ms"] == info["duration_ms"]
    # The URL works as is with a key that may download.
    status, body, _ = await get(ready["recording_url"], {"Authorization": f"Bearer {sandbox.info.admin_key}"})
    assert status == 200 and body[:4] == b"RIFF"
    ended = (await events(sandbox, call_id, "call.ended"))[0].data
    assert ended["recording_url"] == ready["recording_url"]


async def test_a_live_call_is_not_ready_and_an_unknown_one_is_404(sandbox, agent_server: AgentServer):
    call = await start_call(sandbox, agent_server)
    client = sdk(sandbox)
    with pytest.raises(ConflictError) as conflict:
        await in_thread(client.recordings.get_signed_url, call.call_id)
    assert conflict.value.detail["code"] == "recording_not_ready"
    assert conflict.value.detail["recording_state"] == "recording"
    with pytest.raises(ConflictError):
        await in_thread(client.recordings.fetch_bytes, call.call_id)
    for method in (client.recordings.get_signed_url, client.recordings.fetch_bytes):
        with pytest.raises(NotFoundError):
            await in_thread(method, "no-such-call")


async def test_the_tenant_fence_and_the_scopes(sandbox, agent_server: AgentServer, tmp_path: Path):
    call_id = await recorded_call(sandbox, agent_server)
    tenants = sandbox.runtime.services.tenants
    theirs, _ = await tenants.create_key("globex", list(ALL_SCOPES))
    other = sdk(sandbox, theirs)
    for method, args in (
        (other.recordings.get_signed_url, ()),
        (other.recordings.fetch_bytes, ()),
        (other.recordings.download, (str(tmp_path / "x.wav"),)),
    ):
        with pytest.raises(NotFoundError) as missing:
            await in_thread(method, call_id, *args)
        assert missing.value.detail["code"] == "call_not_found"

    reader, _ = await tenants.create_key("acme", ["calls:read"])
    limited = sdk(sandbox, reader)
    assert (await in_thread(limited.recordings.get_signed_url, call_id))["call_id"] == call_id
    with pytest.raises(PermissionError):
        await in_thread(limited.recordings.fetch_bytes, call_id)
    downloader, _ = await tenants.create_key("acme", ["recordings:download"])
    with pytest.raises(PermissionError):
        await in_thread(sdk(sandbox, downloader).recordings.get_signed_url, call_id)
    assert (await in_thread(sdk(sandbox, downloader).recordings.fetch_bytes, call_id))[:4] == b"RIFF"


async def test_a_signed_url_is_good_for_its_call_and_until_it_expires(sandbox, agent_server: AgentServer):
    call_id = await recorded_call(sandbox, agent_server)
    other_id = await recorded_call(sandbox, agent_server)
    info = await in_thread(sdk(sandbox).recordings.get_signed_url, call_id)
    query = parse_qs(urlsplit(info["url"]).query)
    expires, signature = query["expires"][0], query["signature"][0]
    base = sandbox.info.base_url

    async def code(path: str) -> tuple[int, str | None]:
        status, body, _ = await get(base + path)
        return status, json.loads(body)["detail"]["code"] if status >= 400 else None

    assert await code(f"/recordings/{call_id}.wav?expires={expires}&signature={signature}") == (200, None)
    # Another call, a later expiry, a changed signature: none is what was signed.
    assert await code(f"/recordings/{other_id}.wav?expires={expires}&signature={signature}") == (
        403,
        "invalid_signature",
    )
    later = int(expires) + 3600
    assert await code(f"/recordings/{call_id}.wav?expires={later}&signature={signature}") == (
        403,
        "invalid_signature",
    )
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    assert await code(f"/recordings/{call_id}.wav?expires={expires}&signature={flipped}") == (
        403,
        "invalid_signature",
    )
    assert (await code(f"/recordings/{call_id}.wav?expires={expires}"))[0] == 400
    assert (await code(f"/recordings/{call_id}.wav?expires=soon&signature={signature}"))[0] == 400
    # A URL signed with the server's secret but already expired.
    secret = await recordings.url_secret(sandbox.runtime.services.redis, "")
    url, _ = recordings.sign(secret, base, call_id, -5)
    assert await code(url.removeprefix(base)) == (403, "url_expired")


async def test_a_file_the_bridge_cannot_read_is_404_with_the_reason(sandbox, agent_server: AgentServer):
    call_id = await recorded_call(sandbox, agent_server)
    session = await sandbox.runtime.services.sessions.get(call_id)
    await asyncio.to_thread(Path(session.recording_path).unlink)
    with pytest.raises(NotFoundError) as missing:
        await in_thread(sdk(sandbox).recordings.get_signed_url, call_id)
    assert missing.value.detail["code"] == "recording_file_missing"
    assert "BRIDGE_RECORDINGS_DIR" in missing.value.detail["message"]


async def test_public_base_url_and_a_configured_secret(redis_url: str, redis: Any, tmp_path: Path):
    agent_server = AgentServer()
    await agent_server.start()
    try:
        async with sandbox_with(
            redis_url, tmp_path, public_base_url=PUBLIC + "/", recording_url_secret="s3cret"
        ) as box:
            call_id = await recorded_call(box, agent_server)
            info = await in_thread(sdk(box).recordings.get_signed_url, call_id)
            assert info["url"].startswith(f"{PUBLIC}/recordings/{call_id}.wav?")
            assert info["audio_url"] == f"{PUBLIC}/api/v1/calls/{call_id}/recording/audio"
            ready = (await events(box, call_id, "call.recording_ready"))[0].data
            assert ready["recording_url"] == info["audio_url"]
            query = parse_qs(urlsplit(info["url"]).query)
            expected = recordings.signature(b"s3cret", call_id, int(query["expires"][0]))
            assert query["signature"] == [expected]
            # The bridge is reached on its bound address; the path and query are what count.
            status, body, _ = await get(box.info.base_url + info["url"].removeprefix(PUBLIC))
            assert status == 200 and body[:4] == b"RIFF"
    finally:
        await agent_server.stop()


def test_signing_is_over_call_id_and_expiry_only():
    secret = b"k"
    sig = recordings.signature(secret, "c1", 100)
    assert recordings.verify(secret, "c1", 100, sig, now=50) is None
    assert recordings.verify(secret, "c1", 100, sig.upper(), now=50) is None
    assert recordings.verify(secret, "c1", 100, sig, now=101) == "url_expired"
    assert recordings.verify(secret, "c2", 100, sig, now=50) == "invalid_signature"
    assert recordings.verify(b"other", "c1", 100, sig, now=50) == "invalid_signature"
