"""The recordings API the SDK's `recordings` resource calls (docs/recordings.md):

- `GET /api/v1/calls/{call_id}/recording` (`calls:read`): the recording's metadata and a signed,
  expiring URL (`client.recordings.get_signed_url`);
- `GET /api/v1/calls/{call_id}/recording/audio` (`recordings:download`): the bytes
  (`client.recordings.fetch_bytes`, `client.recordings.download`);
- `GET /recordings/{call_id}.wav?expires=&signature=`: the bytes for whoever holds a signed URL, no key.

Both byte routes answer Range requests (206), so a player can seek. A call of another tenant is
404, as everywhere; so is a call with no recording. A recording still being made is 409.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp import web

from bridge.api.auth import require_key
from bridge.api.errors import ApiError
from bridge.calls.sessions import Session, iso
from bridge.media import recordings
from bridge.services import Services, services_of

# The signing secret, read once per app (it never changes while the bridge runs).
SECRET_KEY: web.AppKey[dict[str, bytes]] = web.AppKey("recording_url_secret", dict)
CACHE_CONTROL = "private, max-age=300"


async def _secret(request: web.Request) -> bytes:
    cache = request.app[SECRET_KEY]
    if "secret" not in cache:
        svc = services_of(request)
        cache["secret"] = await recordings.url_secret(svc.redis, svc.settings.recording_url_secret)
    return cache["secret"]


def _not_found() -> ApiError:
    return ApiError(404, "call_not_found", "no such call in this tenant")


async def _ready_file(svc: Services, session: Session) -> recordings.RecordingFile:
    """The finished recording of the call, or the error that says why there is none."""
    if not session.recording_path:
        raise ApiError(404, "recording_not_found", "this call has no recording (the AI never took it)")
    if session.extra.get("recording_ready") != "1":
        raise ApiError(
            409,
            "recording_not_ready",
            "the recording is still being made; it is ready after the call ends (call.recording_ready)",
            extra={"recording_state": session.recording_state},
        )
    path = recordings.within(session.recording_path, svc.settings.recordings_dir)
    found = await asyncio.to_thread(recordings.inspect, path) if path is not None else None
    if found is None:
        raise ApiError(
            404,
            "recording_file_missing",
            "the recording is not in BRIDGE_RECORDINGS_DIR: the bridge must share FreeSWITCH's recordings "
            "directory (docs/recordings.md)",
        )
    return found


async def _session_of(request: web.Request, scope: str) -> tuple[Services, Session]:
    principal = await require_key(request, scope)
    svc = services_of(request)
    session = await svc.sessions.get(request.match_info["call_id"])
    if session is None or session.tenant_id != principal.tenant_id:
        raise _not_found()
    return svc, session


async def get_recording(request: web.Request) -> web.Response:
    svc, session = await _session_of(request, "calls:read")
    found = await _ready_file(svc, session)
    ttl = svc.settings.recording_url_ttl_s
    url, expires = recordings.sign(await _secret(request), svc.public_base_url, session.call_id, ttl)
    return web.json_response(
        {
            "call_id": session.call_id,
            "url": url,
            "expires_at": iso(expires),
            "expires_in_s": ttl,
            **found.describe(),
            "audio_url": f"{svc.public_base_url}{recordings.api_audio_path(session.call_id)}",
        }
    )


def _serve(request: web.Request, found: recordings.RecordingFile, cache_control: str) -> web.FileResponse:
    """The file, with Range (206) so a player can seek; an unreadable or unsatisfiable Range is
    a 416 in the error envelope (aiohttp's own 416 has no body)."""
    if "Range" in request.headers:
        try:
            wanted = request.http_range
        except ValueError:
            wanted = None
        start = wanted.start if wanted is not None else None
        if wanted is None or (start is not None and start >= found.size_bytes) or found.size_bytes == 0:
            raise ApiError(
                416,
                "range_not_satisfiable",
                f"Range must be bytes=<first>-<last> within the file's {found.size_bytes} bytes",
                headers={"Content-Range": f"bytes */{found.size_bytes}"},
            )
    return web.FileResponse(
        Path(found.path),
        headers={
            "Content-Type": recordings.FORMAT,
            "Cache-Control": cache_control,
            "Content-Disposition": f'inline; filename="{found.path.name}"',
        },
    )


async def get_recording_audio(request: web.Request) -> web.StreamResponse:
    svc, session = await _session_of(request, "recordings:download")
    return _serve(request, await _ready_file(svc, session), CACHE_CONTROL)


async def get_signed_audio(request: web.Request) -> web.StreamResponse:
    """No credential but the URL's own signature; expiry and call id are what was signed."""
    call_id = request.match_info["call_id"]
    raw_expires = request.query.get("expires", "")
    given = request.query.get("signature", "")
    if not raw_expires.isdigit() or len(raw_expires) > 12 or not given:
        raise ApiError(400, "invalid_signed_url", "expires (unix seconds) and signature are required")
    expires = int(raw_expires)
    why = recordings.verify(await _secret(request), call_id, expires, given)
    if why == "url_expired":
        raise ApiError(403, why, "this recording URL has expired: ask for a new one (GET …/recording)")
    if why is not None:
        raise ApiError(403, why, "the signature does not match this URL")
    svc = services_of(request)
    session = await svc.sessions.get(call_id)
    if session is None:
        raise ApiError(404, "recording_not_found", "the call's recording is no longer kept")
    found = await _ready_file(svc, session)
    left = max(0, min(300, expires - int(time.time())))
    return _serve(request, found, f"private, max-age={left}")


def setup(app: web.Application) -> None:
    app[SECRET_KEY] = {}
    r = app.router
    r.add_get("/api/v1/calls/{call_id}/recording", get_recording)
    r.add_get("/api/v1/calls/{call_id}/recording/audio", get_recording_audio)
    r.add_get("/recordings/{call_id}.wav", get_signed_audio)
