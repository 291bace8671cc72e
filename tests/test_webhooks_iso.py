"""Timestamps in webhook payloads and delivery logs: ISO 8601, UTC, milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from bridge.webhooks.subscriptions import iso


@given(st.floats(min_value=0, max_value=32503680000, allow_nan=False))
def test_iso_is_what_datetime_would_write(ts: float) -> None:
    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert iso(ts) == expected


def test_iso_examples() -> None:
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    assert iso(1777646228.102) == "2026-05-01T14:37:08.102Z"
