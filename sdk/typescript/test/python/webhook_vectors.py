"""Shared webhook-signature vectors: signed by the bridge (bridge/webhooks/signing.py), judged by the
official SDK (yotel.webhook.verify). Writes JSON to stdout; test/vectors/webhook-vectors.json is
this script's output, and test/webhook-vectors.test.mjs checks the TypeScript verifier gives the
same verdict on every vector (and that the committed file is still what this script prints).

    cd sdk/typescript
    ../../.venv/bin/python test/python/webhook_vectors.py > test/vectors/webhook-vectors.json

`expected` is "ok", the InvalidSignature reason, or "error:<ExceptionType>" where the SDK raises
something else (a non-ASCII signature token makes hmac.compare_digest raise TypeError).
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

from yotel.webhook import InvalidSignature, verify

from bridge.webhooks.signing import sign, signature_header

NOW = 1_777_646_228
SECRET = "whsec_Zq0x7Jd3S2bXk1F9mQ4pL8vR6tY0uN5c"
OLD = "whsec_previous_secret_still_in_grace"
BODY = (
    b'{"event_id":"evt_01JT9Z7B2W4Q8C6H1R0S5M3N9K","event_type":"call.ended","timestamp":1777646228,'
    b'"tenant_id":"acme","data":{"call_id":"6f1c2b9e","hangup_cause":"NORMAL_CLEARING"}}'
)


def headers(signature: str | None, timestamp: Any, **extra: Any) -> dict[str, Any]:
    h: dict[str, Any] = {"Content-Type": "application/json", "X-Yotel-Event": "call.ended"}
    if signature is not None:
        h["X-Yotel-Signature"] = signature
    if timestamp is not None:
        h["X-Yotel-Timestamp"] = timestamp
    h.update(extra)
    return h


def cases() -> list[dict[str, Any]]:
    good = sign(SECRET, NOW, BODY)
    out: list[dict[str, Any]] = []

    def case(
        name: str, hdrs: dict[str, Any], *, body: bytes = BODY, secret: str = SECRET, now: int = NOW
    ) -> None:
        out.append({"name": name, "body": body, "headers": hdrs, "secret": secret, "now": now})

    case("valid", headers(good, str(NOW)))
    case("lower-case header names", {"x-yotel-signature": good, "x-yotel-timestamp": str(NOW)})
    case("upper-case header names", {"X-YOTEL-SIGNATURE": good, "X-YOTEL-TIMESTAMP": str(NOW)})
    case("rotation header, new secret", headers(signature_header([OLD, SECRET], NOW, BODY), str(NOW)))
    case(
        "rotation header, old secret",
        headers(signature_header([OLD, SECRET], NOW, BODY), str(NOW)),
        secret=OLD,
    )
    case(
        "rotation header, neither secret",
        headers(signature_header([OLD, SECRET], NOW, BODY), str(NOW)),
        secret="whsec_x",
    )
    case("wrong secret", headers(good, str(NOW)), secret="whsec_wrong")
    case("tampered body", headers(good, str(NOW)), body=BODY.replace(b"NORMAL_CLEARING", b"USER_BUSY"))
    case("body with a trailing newline", headers(good, str(NOW)), body=BODY + b"\n")
    case("signed over another timestamp", headers(sign(SECRET, NOW - 1, BODY), str(NOW)))
    case("300 s old", headers(sign(SECRET, NOW - 300, BODY), str(NOW - 300)))
    case("301 s old", headers(sign(SECRET, NOW - 301, BODY), str(NOW - 301)))
    case("300 s ahead", headers(sign(SECRET, NOW + 300, BODY), str(NOW + 300)))
    case("301 s ahead", headers(sign(SECRET, NOW + 301, BODY), str(NOW + 301)))
    case("negative timestamp", headers(sign(SECRET, -NOW, BODY), str(-NOW)))
    case("missing signature", headers(None, str(NOW)))
    case("missing timestamp", headers(good, None))
    case("empty signature", headers("", str(NOW)))
    case("empty timestamp", headers(good, ""))
    case("no headers", {})
    case("sha1 prefix", headers("sha1=" + good.removeprefix("sha256="), str(NOW)))
    case("scheme B header", headers(f"t={NOW},v0={good.removeprefix('sha256=')}", str(NOW)))
    case("one token not sha256=", headers(f"{good},v0=abc", str(NOW)))
    case("SHA256= upper-case prefix", headers("SHA256=" + good.removeprefix("sha256="), str(NOW)))
    case("upper-case hex", headers("sha256=" + good.removeprefix("sha256=").upper(), str(NOW)))
    case("truncated hex", headers(good[:-1], str(NOW)))
    case("hex with garbage after", headers(good + "00", str(NOW)))
    case("spaces around tokens", headers(f"  {sign(OLD, NOW, BODY)} ,\t{good}  ", str(NOW)))
    case("empty tokens", headers(f",,{good},,", str(NOW)))
    case("only commas", headers(",, ,", str(NOW)))
    case("bare sha256=", headers("sha256=", str(NOW)))
    case("non-ASCII token before the match", headers(f"sha256=\u00e9,{good}", str(NOW)))
    case("non-ASCII token after the match", headers(f"{good},sha256=\u00e9", str(NOW)))
    case("Python-whitespace (U+001C) around a token", headers(f"\x1c{good}\x1c", str(NOW)))
    case("no-break space around a token", headers(f"\u00a0{good}\u3000", str(NOW)))
    case("timestamp with a plus sign", headers(good, f"+{NOW}"))
    case("timestamp with spaces", headers(good, f"  {NOW}\t"))
    case("timestamp with underscores", headers(good, "1_777_646_228"))
    case("timestamp with a double underscore", headers(good, "1__777646228"))
    case("timestamp with a trailing underscore", headers(good, f"{NOW}_"))
    case("timestamp with leading zeros", headers(good, f"000{NOW}"))
    case("timestamp as a float", headers(good, f"{NOW}.0"))
    case("timestamp in exponent form", headers(good, "1.777646228e9"))
    case("timestamp in hex", headers(good, hex(NOW)))
    case(
        "fullwidth-digit timestamp",
        headers(good, str(NOW).translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789"})),
    )
    case(
        "Arabic-Indic-digit timestamp",
        headers(good, str(NOW).translate({ord(c): ord(c) - 0x30 + 0x660 for c in "0123456789"})),
    )
    case("no-break space before the timestamp", headers(good, f"\u00a0{NOW}"))
    case("U+001C before the timestamp", headers(good, f"\x1c{NOW}"))
    case("superscript digit in the timestamp", headers(good, f"{NOW}\u00b2"))
    case("timestamp as a JSON number", headers(good, NOW))
    case(
        "a later header of the same name wins",
        {"X-Yotel-Signature": "sha256=00", "x-yotel-signature": good, "X-Yotel-Timestamp": str(NOW)},
    )
    case("binary body", headers(sign(SECRET, NOW, bytes(range(256))), str(NOW)), body=bytes(range(256)))
    case("empty body", headers(sign(SECRET, NOW, b""), str(NOW)), body=b"")
    case(
        "non-ASCII secret",
        headers(sign("whsec_\u00fcn\u00efcode", NOW, BODY), str(NOW)),
        secret="whsec_\u00fcn\u00efcode",
    )
    case("empty secret", headers(sign("", NOW, BODY), str(NOW)), secret="")
    case("timestamp of 5000 digits", headers(good, "1" * 5000))
    return out


def verdict(c: dict[str, Any]) -> str:
    try:
        verify(raw_body=c["body"], headers=c["headers"], signing_secret=c["secret"], now=c["now"])
        return "ok"
    except InvalidSignature as exc:
        return exc.reason
    except Exception as exc:
        return f"error:{type(exc).__name__}"


def main() -> None:
    vectors = []
    for c in cases():
        vectors.append(
            {
                "name": c["name"],
                "body_b64": base64.b64encode(c["body"]).decode(),
                "headers": c["headers"],
                "secret": c["secret"],
                "now": c["now"],
                "expected": verdict(c),
            }
        )
    json.dump({"now": NOW, "vectors": vectors}, sys.stdout, indent=1, ensure_ascii=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
