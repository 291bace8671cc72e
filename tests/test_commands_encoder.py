"""bridge.calls.commands against FreeSWITCH's own parsers (bridge.sim.arguments reproduces
switch_separate_string, {var} blocks, inline dialplans and originate): for arbitrary unicode, a
value is either refused or the command the switch reads back holds exactly that value."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.calls.commands import (
    DELIM,
    SPEECH_MAX_CHARS,
    UnsafeValue,
    arg_list,
    command,
    delimited_command,
    inline_dialplan,
    join,
    json_text,
    literal,
    speech_text,
    url,
    var_block,
    word,
)
from bridge.calls.sessions import Session
from bridge.calls.switch import queue_dialplan
from bridge.config import Settings
from bridge.errors import ApiError, SwitchError
from bridge.sim.arguments import (
    parse_inline_dialplan,
    parse_originate,
    parse_var_block,
    separate_string,
    split_command,
)
from bridge.tts import speech_source
from bridge.verbs.call_control import dial_endpoint, transfer_dialplan
from bridge.verbs.models import Transfer
from tests.strategies import hostile_text

UUID = "6f1c9a52-0d7e-4a53-9a55-2b8f3f1d1c11"
HOSTILE = hostile_text(max_size=40)
MANY = settings(max_examples=400, deadline=None)


def _safe_text(text: str) -> None:
    """What no encoded command may hold, whatever its kind."""
    assert "${" not in text and "$" not in text
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)
    assert all(ord(c) < 0x80 for c in text)


def _argv(cmd: str, max_args: int = 16) -> tuple[str, list[str]]:
    name, rest = split_command(cmd)
    return name, separate_string(rest, " ", max_args)


# ---------------------------------------------------------------- one kind at a time


@MANY
@given(HOSTILE)
def test_a_word_is_refused_or_read_back_as_one_argument(value: str):
    try:
        cmd = command("uuid_setvar", UUID, "bridge_x", word(value, "value"))
    except UnsafeValue as exc:
        assert exc.status == 400 and exc.code == "validation_error" and "value" in exc.message
        return
    _safe_text(cmd)
    assert _argv(cmd, 3) == ("uuid_setvar", [UUID, "bridge_x", value])


@MANY
@given(HOSTILE)
def test_a_url_is_refused_or_read_back_whole(tail: str):
    for candidate in (tail, f"https://media.example/{tail}"):
        try:
            encoded = url(candidate, "audio_url")
        except UnsafeValue:
            continue
        cmd = command("uuid_displace", UUID, "start", join("http_cache://", encoded), "0", "m")
        _safe_text(cmd)
        assert _argv(cmd) == ("uuid_displace", [UUID, "start", f"http_cache://{candidate}", "0", "m"])


@MANY
@given(st.dictionaries(HOSTILE, HOSTILE, max_size=5))
def test_a_variable_block_is_refused_or_parses_back_to_exactly_its_variables(variables: dict[str, str]):
    try:
        block = var_block(variables)
    except UnsafeValue:
        return
    originate = command("originate", join(block, "sofia/gateway/pstn/+14155550100"), literal("&park()"))
    _safe_text(originate)
    name, rest = split_command(originate)
    parsed = parse_originate(rest)
    assert name == "originate" and parsed is not None
    assert parsed.variables == variables
    assert parsed.endpoint == "sofia/gateway/pstn/+14155550100"
    assert parsed.app == "park"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | HOSTILE,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(HOSTILE, inner, max_size=4),
    max_leaves=12,
)


@MANY
@given(JSON)
def test_json_text_is_refused_only_for_lone_surrogates_and_otherwise_reads_back_equal(payload: Any):
    try:
        text = json_text(payload)
    except UnsafeValue as exc:
        assert "surrogate" in exc.reason
        return
    ws = url("ws://127.0.0.1:9000/ws", schemes=("ws",))
    cmd = command("uuid_audio_fork", arg_list(UUID, "start", ws, "mono", "16k", "ai_fork", text))
    _safe_text(cmd)
    assert all(c not in text for c in " '|$")
    name, argv = _argv(cmd, 7)
    assert name == "uuid_audio_fork" and argv[:6] == [UUID, "start", ws, "mono", "16k", "ai_fork"]
    assert json.loads(argv[6]) == payload


@MANY
@given(HOSTILE)
def test_an_inline_dialplan_is_refused_or_reads_back_its_applications(destination: str):
    settings_ = Settings().with_(gateway="pstn", sip_profile="lab")
    try:
        endpoint = dial_endpoint(settings_, "sip_uri", destination)
        plan = inline_dialplan(
            ("set", "continue_on_fail=true"),
            ("bridge", join(var_block({"ignore_early_media": "true"}), endpoint)),
            ("park", ""),
        )
    except UnsafeValue:
        return
    cmd = command("uuid_transfer", UUID, plan, "inline")
    _safe_text(cmd)
    name, argv = _argv(cmd)
    assert name == "uuid_transfer" and argv[0] == UUID and argv[2] == "inline" and len(argv) == 3
    apps = parse_inline_dialplan(argv[1])
    assert [app for app, _ in apps] == ["set", "bridge", "park"]
    variables, endpoint = parse_var_block(apps[1][1])
    assert variables == {"ignore_early_media": "true"}
    assert endpoint == f"sofia/lab/{destination}"


@MANY
@given(HOSTILE)
def test_a_queue_name_is_refused_or_reads_back(queue: str):
    try:
        plan = queue_dialplan(queue, "default")
    except UnsafeValue:
        return
    _, argv = _argv(command("uuid_transfer", UUID, plan, "inline"))
    expected = queue if "@" in queue else f"{queue}@default"
    assert parse_inline_dialplan(argv[1]) == [("callcenter", expected)]


# ---------------------------------------------------------------- what the verbs build


def _session() -> Session:
    return Session(call_id=UUID, tenant_id="acme", direction="inbound", from_="+14155550100", to="+1415")


@MANY
@given(st.sampled_from(["e164", "sip_uri", "agent_queue"]), HOSTILE)
def test_transfer_destinations_that_pass_the_model_read_back_exactly(kind: str, destination: str):
    try:
        cmd = Transfer(event="transfer", destination_type=kind, destination=destination)
    except ValueError:
        return  # refused at the API edge (400)
    defaults = Settings()
    plan = transfer_dialplan(defaults, _session(), cmd)
    _, argv = _argv(command("uuid_transfer", UUID, plan, "inline"))
    apps = parse_inline_dialplan(argv[1])
    if kind == "agent_queue":
        domain = "" if "@" in cmd.destination else f"@{defaults.callcenter_domain}"
        assert apps == [("callcenter", cmd.destination + domain)]
        return
    assert [app for app, _ in apps] == ["set", "set", "bridge", "park"]
    variables, endpoint = parse_var_block(apps[2][1])
    assert variables["origination_caller_id_number"] == "+14155550100"
    via = f"gateway/{defaults.gateway}" if kind == "e164" else defaults.sip_profile
    assert endpoint == f"sofia/{via}/{cmd.destination}"


# ---------------------------------------------------------------- the findings of issue 13


@pytest.mark.parametrize(
    "value",
    [
        "x}sofia/gateway/evil/+19995550000,{a=b",
        "l,origination_caller_id_number=+10000000000",
        "${uuid_kill(6f1c9a52-0d7e-4a53-9a55-2b8f3f1d1c11)}",
        "a\nb",
        "a\rb",
        "a\x00b",
        "a'b",
        "a b",
    ],
)
def test_the_values_issue_13_found_reaching_the_switch_are_refused(value: str):
    with pytest.raises(UnsafeValue):
        var_block({"bridge_campaign_id": value})
    with pytest.raises(UnsafeValue):
        word(value)
    with pytest.raises(UnsafeValue):
        url(f"http://h/{value}")


def test_an_unsafe_value_is_both_a_refused_command_and_a_400():
    with pytest.raises(UnsafeValue) as caught:
        word("${x}", "lead_id")
    assert isinstance(caught.value, SwitchError) and isinstance(caught.value, ApiError)
    assert caught.value.extra == {"field": "lead_id"}
    assert "'$'" in caught.value.message


def test_a_command_is_only_what_command_builds():
    from bridge.calls.switch import _require_command

    with pytest.raises(TypeError):
        _require_command(f"uuid_kill {UUID}")
    _require_command(command("uuid_kill", UUID))


# ---------------------------------------------------------------- speech text (v1.1 TTS)


def _speech_normalised(text: str) -> str:
    """The documented normalisation (docs/control-api.md "TTS"), written out independently."""
    import unicodedata

    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if c.isspace() else "\u2019" if c == "'" else c for c in text)
    return " ".join(text.split())


SPEECH = st.text(
    st.one_of(
        st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF),
        st.sampled_from(list("${}[]()',|^\\\" \n\r\t\x00=:;@/&!~%#*?+`<>")),
        st.sampled_from(list("Hello, world. 10:30! ¿Qué tal? été \u2019")),
    ),
    max_size=60,
)


@MANY
@given(SPEECH)
def test_speech_text_is_refused_or_read_back_by_uuid_broadcast_and_mod_ssml_as_its_normal_form(text: str):
    """uuid_broadcast ^^`<uuid>`playback::{playback_id=…}tts://flite|kal|<text>`aleg, parsed the
    way the switch does it: mod_commands' split (on the delimiter), switch_ivr_broadcast's `::`,
    switch_core_file_open's {…} block and `://`, mod_ssml's tts_file_open split on `|` (three parts)."""
    try:
        source = speech_source("flite", "", text, None)
    except ApiError as exc:
        assert exc.status == 400 and exc.extra["errors"][0]["loc"] == ["tts_text"]
        return
    expected = _speech_normalised(text)
    assert expected and len(expected) <= SPEECH_MAX_CHARS
    path = join("playback::", var_block({"playback_id": "pb_01J"}), source)
    cmd = delimited_command("uuid_broadcast", UUID, path, "aleg")
    assert "\n" not in cmd and "$" not in cmd and "\\" not in cmd and "'" not in cmd
    name, rest = split_command(cmd)
    argv = separate_string(rest, " ", 4)
    assert name == "uuid_broadcast" and argv[0] == UUID and argv[2] == "aleg" and len(argv) == 3
    app, sep, data = argv[1].partition("::")
    assert (app, sep) == ("playback", "::") and "!" not in app
    variables, file = parse_var_block(data)
    assert variables == {"playback_id": "pb_01J"}
    module, _, spec = file.partition("://")
    assert module == "tts"
    assert separate_string(spec, "|", 3) == ["flite", "kal", expected]


@MANY
@given(SPEECH)
def test_speech_text_in_a_conference_play_reads_back_as_the_file_and_the_member(text: str):
    try:
        source = speech_source("espeak", "", text, "en-gb")
    except ApiError:
        return
    cmd = delimited_command("conference", "room-1", "play", source, "7")
    name, rest = split_command(cmd)
    argv = separate_string(rest, " ", 25)
    assert name == "conference" and argv == ["room-1", "play", str(source), "7"]
    assert separate_string(str(source).removeprefix("tts://"), "|", 3) == [
        "tts_commandline",
        "en-gb",
        _speech_normalised(text),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "${uuid_kill(6f1c9a52-0d7e-4a53-9a55-2b8f3f1d1c11)}",
        "hi `uuid_kill x`",
        "a|b",
        "a^b",
        "{x=y}",
        "[[h@l@U]]",  # espeak-ng's phoneme input
        "<speak>x</speak>",
        "back\\slash",
        "nul\x00",
        "bell\x07",
        "rtl\u202eoverride",
        "zero\u200bwidth",
        "tilde~",
        "   ",
        "",
        "x" * (SPEECH_MAX_CHARS + 1),
    ],
)
def test_hostile_speech_text_is_refused(text: str):
    with pytest.raises(UnsafeValue):
        speech_text(text, "tts_text")


def test_speech_text_normalises_whitespace_and_the_apostrophe():
    assert speech_text("  Don't\n\tpanic,\r\n  it's 10:30!  ") == "Don\u2019t panic, it\u2019s 10:30!"
    assert speech_text("e\u0301te\u0301") == "\u00e9t\u00e9"  # NFC


def test_a_delimited_command_refuses_an_argument_holding_the_delimiter_or_blank_edges():
    cmd = delimited_command("uuid_broadcast", UUID, speech_text("a b"))
    assert cmd == f"uuid_broadcast ^^{DELIM}{UUID}{DELIM}a b"
    with pytest.raises(UnsafeValue):
        delimited_command("x", literal(f"a{DELIM}b"))
    with pytest.raises(UnsafeValue):
        delimited_command("x", literal(" a"))
    with pytest.raises(UnsafeValue):
        delimited_command("x", "a b")  # a plain str must be a word


@pytest.mark.parametrize(
    ("mode", "voice"), [("flite", "en-us"), ("flite", "kal;rm"), ("espeak", "kal"), ("espeak", "en us")]
)
def test_a_voice_off_the_engines_list_is_a_400_naming_voice(mode: str, voice: str):
    with pytest.raises(ApiError) as caught:
        speech_source(mode, "", "hello", voice)
    assert caught.value.status == 400 and caught.value.extra["errors"][0]["loc"] == ["voice"]


def test_tts_off_is_422_and_settings_refuse_an_unknown_engine_or_voice():
    with pytest.raises(ApiError) as caught:
        speech_source("off", "", "hello", None)
    assert (caught.value.status, caught.value.code) == (422, "tts_not_supported")
    assert speech_source("flite", "", "hi", None) == "tts://flite|kal|hi"
    assert speech_source("flite", "slt", "hi", None) == "tts://flite|slt|hi"
    assert speech_source("espeak", "", "hi", None) == "tts://tts_commandline|en-us|hi"
    with pytest.raises(ValueError):
        Settings(tts="festival")
    with pytest.raises(ValueError):
        Settings(tts="flite", tts_voice="en-us")
    assert Settings(tts="espeak", tts_voice="de").tts_voice == "de"
