"""Reading a request's JSON body, with bounds, before any route sees it.

Every JSON route reads its body through `read_json_object`. What it refuses, and why:

- more than MAX_BODY_BYTES: 413 `payload_too_large`, from the declared Content-Length before a byte
  is read (else aiohttp's reader refuses it while reading, also 413);
- bytes that are not UTF-8, and JSON that is not an object or not valid (NaN and Infinity
  included, which Python's json module accepts): 400 `invalid_json`;
- nesting deeper than MAX_DEPTH: 400 `validation_error`, found by counting brackets outside strings
  before json.loads runs (deep enough nesting is a RecursionError in json.loads, and anything
  below it that walks the value, pydantic or json.dumps, recurses too);
- a string, key or value, that cannot be encoded as UTF-8 (a lone surrogate such as `"\\ud800"`,
  which JSON escapes allow): 400 `validation_error`. Redis, structlog and the switch all encode
  what they are given; such a string got as far as the first of them and was a 500.

`check_headers` applies the last rule to the headers: aiohttp decodes header bytes that are not
UTF-8 into lone surrogates (surrogateescape), so a credential or Idempotency-Key holding them would
reach the same encoders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from bridge.errors import ApiError

MAX_BODY_BYTES = 256 * 1024
# The deepest body this API defines is a verb's `metadata` (or a lead's `custom_fields`) holding
# free-form JSON, three levels in; 32 leaves room for that free-form part while every recursive
# walk after the parser stays far below Python's recursion limit (1000).
MAX_DEPTH = 32

_NOT_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*"|[^"\[\]{}]+')


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range for a number")
    return value


def _invalid(where: list[str], message: str, kind: str) -> ApiError:
    """A 400 `validation_error` shaped like the ones pydantic's errors become (errors[])."""
    at = ".".join(where)
    return ApiError(
        400,
        "validation_error",
        f"{at}: {message}",
        extra={"errors": [{"loc": where, "msg": message, "type": kind}]},
    )


def nesting_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in `raw`, strings skipped (their brackets are text)."""
    depth = deepest = 0
    for char in _NOT_STRUCTURE.sub(b"", raw):
        if char in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in b"]}":
            depth -= 1
    return deepest


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """`raw` as a JSON object within the bounds above, or the ApiError that says why not."""
    if not raw.strip():
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"request body is over {MAX_BODY_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_json", f"request body is not UTF-8: {exc.reason}") from None
    # Cheap first: fewer brackets than the bound cannot nest beyond it.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and nesting_depth(raw) > MAX_DEPTH:
        raise _invalid(["body"], f"JSON nests deeper than {MAX_DEPTH} levels", "json_too_deep")
    try:
        body = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    # Only a \u escape can put a surrogate in a str decoded from valid UTF-8.
    if "\\u" in text and not _encodable(body):
        raise _invalid(
            ["body"], "strings must be valid Unicode (no lone surrogate such as \\ud800)", "unicode"
        )
    return body


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object within the bounds, or a 400/413 in the envelope."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"request body is over {MAX_BODY_BYTES} bytes")
    return parse_json_object(await request.read())


def check_headers(headers: Mapping[str, str]) -> None:
    """400 `validation_error` for a header value that is not valid UTF-8 (see the module doc)."""
    for name, value in headers.items():
        if value.isascii():
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _invalid(["header", name], "not valid UTF-8", "unicode") from None
