"""The reader's FrameSplitter: whatever sizes the socket hands the bytes over in, the same frames
come out as from the whole stream at once, and a frame too large is refused, not buffered for ever."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.esl.protocol import (
    MAX_HEADER_BLOCK,
    FrameSplitter,
    ProtocolError,
    encode_frame,
    encode_json_event,
    split_frames,
)

_values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@st.composite
def _streams(draw: st.DrawFn) -> bytes:
    frames: list[bytes] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["event", "reply", "api", "blank"]))
        if kind == "event":
            headers = draw(st.dictionaries(st.sampled_from(["Event-Name", "Unique-ID", "x"]), _values))
            frames.append(encode_frame({"Content-Type": "text/event-json"}, encode_json_event(headers)))
        elif kind == "reply":
            frames.append(encode_frame({"Content-Type": "command/reply", "Reply-Text": "+OK accepted"}))
        elif kind == "api":
            body = draw(_values).replace("\r", "")
            frames.append(encode_frame({"Content-Type": "api/response"}, body.encode()))
        else:
            frames.append(b"\n")  # stray blank lines between frames
    return b"".join(frames)


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


@settings(max_examples=300)
@given(_streams(), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_chunking_gives_the_frames_of_the_whole_stream(data: bytes, cuts: list[int]) -> None:
    whole, rest = split_frames(data)
    assert rest == b""
    splitter = FrameSplitter()
    got = [frame for chunk in _cut(data, cuts) for frame in splitter.feed(chunk)]
    assert [(f.headers, f.body) for f in got] == [(f.headers, f.body) for _, f in whole]


def test_a_large_body_arriving_in_small_chunks_comes_out_once_whole() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, newlines and all
    data = encode_frame({"Content-Type": "api/response"}, body)
    splitter = FrameSplitter()
    out = [frame for i in range(0, len(data), 1000) for frame in splitter.feed(data[i : i + 1000])]
    assert len(out) == 1 and out[0].body == body


def test_a_header_block_without_its_end_is_refused_past_the_limit() -> None:
    splitter = FrameSplitter()
    with pytest.raises(ProtocolError):
        for _ in range(MAX_HEADER_BLOCK // 4096 + 2):
            splitter.feed(b"X-Long: " + b"a" * 4088 + b"\n")


def test_a_bad_content_length_is_refused() -> None:
    with pytest.raises(ProtocolError):
        FrameSplitter().feed(b"Content-Type: api/response\nContent-Length: -1\n\n")
