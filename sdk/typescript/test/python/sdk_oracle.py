"""What the official Python SDK (yotel 0.2.1) does, for the TypeScript tests to compare against.

Reads one JSON request on stdin and answers JSON on stdout:

- {"requests": [[resource, method, args, kwargs], ...]}: the HTTP request each SDK call sends,
  captured with an httpx.MockTransport that answers 200 {} (or what the method needs to parse).
- {"classify": [[status, code_or_null], ...]}: the exception class `yotel.errors._classify` picks,
  and its retry_after for a 429 without Retry-After.
- {"verify": [{"body_b64", "headers", "secret", "now"}, ...]}: `yotel.webhook.verify`'s verdict:
  "ok", the InvalidSignature reason, or "error:<ExceptionType>".
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import httpx
import yotel
from yotel import errors
from yotel.webhook import InvalidSignature, verify

VOICE_AGENT = {
    "id": "va_1",
    "tenant_id": "t",
    "name": "n",
    "ws_url": "ws://x",
    "audio_format": {},
    "created_at": "2026-01-01T00:00:00.000Z",
    "updated_at": "2026-01-01T00:00:00.000Z",
}
CAMPAIGN = {"id": "cmp_1", "tenant_id": "t", "name": "n", "dial_mode": "progressive", "status": "draft"}
LEAD = {"id": "lead_1", "campaign_id": "cmp_1", "phone": "+919800000000", "status": "pending"}
BULK = {"total": 0, "valid": 0, "invalid": 0, "duplicates": 0, "results": []}


def _answer(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path.startswith("/api/v1/voice-agents") and path != "/api/v1/voice-agents/default":
        if request.method == "DELETE":
            return httpx.Response(204)
        body: Any = (
            [VOICE_AGENT] if request.method == "GET" and path == "/api/v1/voice-agents" else VOICE_AGENT
        )
        return httpx.Response(200, json=body)
    if path.endswith("leads:bulk"):
        return httpx.Response(200, json=BULK)
    if path.endswith("/leads"):
        return httpx.Response(201, json=LEAD)
    if path.startswith("/api/v1/campaigns"):
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(
            200, json=[CAMPAIGN] if path == "/api/v1/campaigns" and request.method == "GET" else CAMPAIGN
        )
    if path.endswith("/recording/audio"):
        return httpx.Response(200, content=b"RIFF")
    if path == "/api/v1/voice-agents/default":
        return httpx.Response(200, json={"voice_agent_id": None})
    return httpx.Response(200, json={})


def requests(specs: list[list[Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for resource, method, args, kwargs in specs:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request, seen: list[httpx.Request] = seen) -> httpx.Response:
            seen.append(request)
            return _answer(request)

        client = yotel.Client(api_key="yt_live_oracle", base_url="http://bridge.test")
        client._http = httpx.Client(transport=httpx.MockTransport(handler))
        getattr(getattr(client, resource), method)(*args, **kwargs)
        [req] = seen
        content = req.content
        out.append(
            {
                "method": req.method,
                "path": req.url.path,
                "query": dict(req.url.params),
                "authorization": req.headers.get("authorization"),
                "idempotency_key": req.headers.get("idempotency-key"),
                "body": json.loads(content) if content else None,
            }
        )
    return out


def classify(cases: list[list[Any]]) -> list[dict[str, Any]]:
    out = []
    for status, code in cases:
        detail = {"code": code, "message": "m"} if code else {"message": "m"}
        exc = errors._classify(status_code=status, detail=detail, response_text="{}", retry_after=None)
        out.append({"class": type(exc).__name__, "retry_after": getattr(exc, "retry_after", None)})
    return out


def verdicts(cases: list[dict[str, Any]]) -> list[str]:
    out = []
    for case in cases:
        try:
            verify(
                raw_body=base64.b64decode(case["body_b64"]),
                headers=case["headers"],
                signing_secret=case["secret"],
                now=case["now"],
            )
            out.append("ok")
        except InvalidSignature as exc:
            out.append(exc.reason)
        except Exception as exc:
            out.append(f"error:{type(exc).__name__}")
    return out


def main() -> None:
    job = json.load(sys.stdin)
    answer: dict[str, Any] = {}
    if "requests" in job:
        answer["requests"] = requests(job["requests"])
    if "classify" in job:
        answer["classify"] = classify(job["classify"])
    if "verify" in job:
        answer["verify"] = verdicts(job["verify"])
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
