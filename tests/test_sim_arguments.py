"""switch_separate_string and the grammars built on it, as the simulator parses commands."""

from __future__ import annotations

import pytest

from bridge.sim.arguments import (
    parse_conference_target,
    parse_inline_dialplan,
    parse_originate,
    parse_var_block,
    separate_string,
)


@pytest.mark.parametrize(
    ("data", "size", "expected"),
    [
        ("a b  c", 10, ["a", "b", "c"]),
        ("  lead and trail  ", 10, ["lead", "and", "trail"]),
        ("one 'two words' three", 10, ["one", "two words", "three"]),
        ("it\\'s fine", 10, ["it's", "fine"]),
        ("hello\\sthere x", 10, ["hello there", "x"]),
        ("line\\nbreak", 10, ["line\nbreak"]),
        ('{"a":\\"b\\"}', 10, ['{"a":"b"}']),
        ("keep\\xbackslash", 10, ["keep\\xbackslash"]),
        # a full argv: the last slot gets the unsplit remainder, still cleaned of quotes
        ("a b c 'd e' f", 3, ["a", "b", "c 'd e' f".replace("'", "")]),
        ("^^|a b|c|'d|e'", 10, ["a b", "c", "d|e"]),
        ('^^|uuid|start|ws://h/p|mono|16k|bug|{"k": "v w", "n": [1, 2]}', 7,
         ["uuid", "start", "ws://h/p", "mono", "16k", "bug", '{"k": "v w", "n": [1, 2]}']),
        ("^^;x;y;z", 2, ["x", "y;z"]),
        ("", 5, []),
    ],
)  # fmt: skip
def test_separate_string(data, size, expected):
    assert separate_string(data, " ", size) == expected


def test_escaped_delimiter_in_override_mode():
    assert separate_string("^^|a\\|b|c", " ", 5) == ["a|b", "c"]


def test_var_block_with_quoted_commas_and_leg_vars():
    variables, rest = parse_var_block("{a=1,b='x,y',c=}sofia/gateway/pstn/+1555")
    assert variables == {"a": "1", "b": "x,y", "c": ""} and rest == "sofia/gateway/pstn/+1555"
    variables, rest = parse_var_block("[leg_timeout=10]user/1000", "[", "]")
    assert variables == {"leg_timeout": "10"} and rest == "user/1000"


def test_inline_dialplan_default_and_custom_separator():
    assert parse_inline_dialplan("callcenter:support@default") == [("callcenter", "support@default")]
    assert parse_inline_dialplan("answer,park") == [("answer", ""), ("park", "")]
    apps = parse_inline_dialplan("m:^:set:a=b^bridge:{x=1,y=2}sofia/gateway/pstn/+1555^park")
    assert apps == [("set", "a=b"), ("bridge", "{x=1,y=2}sofia/gateway/pstn/+1555"), ("park", "")]


def test_conference_target():
    t = parse_conference_target("room1@default+flags{moderator|mute}")
    assert (t.name, t.profile, t.pin, t.flags) == ("room1", "default", None, {"moderator", "mute"})
    t = parse_conference_target("room2@wideband+1234")
    assert (t.name, t.profile, t.pin, t.flags) == ("room2", "wideband", "1234", set())
    assert parse_conference_target("lab").profile == "default"


def test_originate_with_app_and_with_extension():
    o = parse_originate("{origination_uuid=u1,originate_timeout=30}sofia/gateway/pstn/+1555 &park()")
    assert o is not None
    assert o.variables == {"origination_uuid": "u1", "originate_timeout": "30"}
    assert (o.endpoint, o.app, o.app_data, o.exten) == ("sofia/gateway/pstn/+1555", "park", "", None)
    o = parse_originate("user/1000,user/1001 &eavesdrop(abc)")
    assert o is not None and (o.endpoint, o.app, o.app_data) == ("user/1000", "eavesdrop", "abc")
    o = parse_originate("loopback/9196 9196 XML lab 'Caller Name' 1001 20")
    assert o is not None
    assert (o.exten, o.dialplan, o.context, o.cid_name, o.cid_num, o.timeout_s) == (
        "9196", "XML", "lab", "Caller Name", "1001", 20,
    )  # fmt: skip
    assert parse_originate("only-one-arg") is None
