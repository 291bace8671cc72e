"""Call recordings: where a call's file is, what it holds, and the signed URLs that fetch it.

Every AI call is recorded in stereo from the answer on (`uuid_record … start
<BRIDGE_RECORDINGS_DIR>/<call_id>.wav`, bridge.calls.manager) and the file is complete once
FreeSWITCH fires RECORD_STOP (the session's `recording_ready`). The bridge reads the file from the
same path, so it must share that directory with FreeSWITCH (docs/recordings.md says why, and what
the alternative would be).

A signed URL is `<public base>/recordings/<call_id>.wav?expires=<unix s>&signature=<hex>`: HMAC-SHA256
over a versioned string holding the call id and the expiry, with the server's secret. Nothing else
is in the URL: no key, no tenant. The secret is BRIDGE_RECORDING_URL_SECRET, else one random secret
kept in Redis (SET NX), so every bridge on that Redis signs and verifies alike and a restart does
not void the URLs handed out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from bridge.store import keys
from bridge.store.redis import RedisClient

FORMAT = "audio/wav"
_SIGNED = "bridge-recording-v1\n{call_id}\n{expires}"


def signed_path(call_id: str) -> str:
    return f"/recordings/{quote(call_id, safe='')}.wav"


def api_audio_path(call_id: str) -> str:
    """What the SDK's fetch_bytes / download GET (with an API key holding recordings:download)."""
    return f"/api/v1/calls/{quote(call_id, safe='')}/recording/audio"


async def url_secret(redis: RedisClient, configured: str) -> bytes:
    """The signing secret: the configured one, else the one in Redis (made by the first bridge)."""
    if configured:
        return configured.encode()
    await redis.set(keys.recording_url_secret(), secrets.token_hex(32), nx=True)
    stored = await redis.get(keys.recording_url_secret())
    return str(stored).encode()


def signature(secret: bytes, call_id: str, expires: int) -> str:
    message = _SIGNED.format(call_id=call_id, expires=expires).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(secret: bytes, base_url: str, call_id: str, ttl_s: int, now: float | None = None) -> tuple[str, int]:
    """(the signed URL, its expiry in unix seconds)."""
    expires = int(now if now is not None else time.time()) + ttl_s
    sig = signature(secret, call_id, expires)
    return f"{base_url}{signed_path(call_id)}?expires={expires}&signature={sig}", expires


def verify(secret: bytes, call_id: str, expires: int, given: str, now: float | None = None) -> str | None:
    """None when the signature is good and not expired, else why not (`invalid_signature`,
    `url_expired`). The signature is compared first, in constant time, so an expired URL says
    so only to whoever holds a real one."""
    if not hmac.compare_digest(signature(secret, call_id, expires), given.lower()):
        return "invalid_signature"
    if expires < (now if now is not None else time.time()):
        return "url_expired"
    return None


@dataclass(frozen=True, slots=True)
class RecordingFile:
    path: Path
    size_bytes: int
    channels: int | None
    sample_rate_hz: int | None
    duration_ms: int | None

    @property
    def stereo(self) -> bool:
        return self.channels == 2

    def describe(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "stereo": self.stereo,
            "channels": self.channels,
            "sample_rate_hz": self.sample_rate_hz,
            "duration_s": None if self.duration_ms is None else round(self.duration_ms / 1000),
            "duration_ms": self.duration_ms,
            "size_bytes": self.size_bytes,
        }


def within(path: str, recordings_dir: str) -> Path | None:
    """`path` if it lies inside the recordings directory (the only place the bridge reads)."""
    candidate = Path(path).resolve()
    return candidate if candidate.is_relative_to(Path(recordings_dir).resolve()) else None


def inspect(path: Path) -> RecordingFile | None:
    """What the file holds, from its WAV header; None when there is no such file. A file whose
    header Python's wave module cannot read (not PCM) is still served, without the audio facts."""
    try:
        size = path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not path.is_file():
        return None
    try:
        with wave.open(str(path), "rb") as wav:
            channels, rate, frames = wav.getnchannels(), wav.getframerate(), wav.getnframes()
    except (wave.Error, EOFError, OSError):
        return RecordingFile(path, size, None, None, None)
    return RecordingFile(path, size, channels, rate, frames * 1000 // rate if rate else None)
