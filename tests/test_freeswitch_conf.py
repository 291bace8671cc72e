"""The shipped FreeSWITCH configuration stays consistent with what the bridge expects."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from bridge.calls.manager import VAR_CAMPAIGN, VAR_LEAD, VAR_TENANT, VAR_VOICE_AGENT
from bridge.config import Settings

CONF = Path(__file__).resolve().parent.parent / "freeswitch-conf"


def _parse(name: str) -> ET.Element:
    return ET.parse(CONF / name).getroot()


def _defaults() -> dict[str, str]:
    """The global variables vars.xml sets (X-PRE-PROCESS set), before any env-set override."""
    found = {}
    for pre in _parse("vars.xml").iter("X-PRE-PROCESS"):
        if pre.get("cmd") == "set":
            name, _, value = (pre.get("data") or "").partition("=")
            found[name] = value
    return found


def _resolve(value: str | None) -> str:
    """A param value with its $${var} references replaced by their vars.xml defaults."""
    return re.sub(r"\$\$\{(\w+)\}", lambda m: _defaults()[m.group(1)], value or "")


def test_every_xml_file_is_well_formed():
    files = sorted(CONF.rglob("*.xml"))
    assert len(files) >= 10
    for path in files:
        ET.parse(path)


def test_event_socket_listens_on_loopback_where_the_bridge_connects_by_default():
    params = {
        p.get("name"): p.get("value") for p in _parse("autoload_configs/event_socket.conf.xml").iter("param")
    }
    default = Settings().esl
    assert params["listen-ip"] == default.host == "127.0.0.1"
    assert int(_resolve(params["listen-port"])) == default.port


def test_ports_default_to_the_documented_ones_and_the_environment_can_move_them():
    """8021 (ESL), 5080 (SIP), RTP 16384-16584 unless FREESWITCH_*_PORT is set where the switch
    starts: X-PRE-PROCESS env-set only replaces a value when its environment variable is set."""
    defaults = _defaults()
    assert (defaults["esl_port"], defaults["lab_sip_port"]) == ("8021", "5080")
    assert (defaults["rtp_start_port"], defaults["rtp_end_port"]) == ("16384", "16584")
    env_sets = {
        pre.get("data") for pre in _parse("vars.xml").iter("X-PRE-PROCESS") if pre.get("cmd") == "env-set"
    }
    for var, env in (
        ("esl_port", "FREESWITCH_ESL_PORT"),
        ("lab_sip_port", "FREESWITCH_SIP_PORT"),
        ("rtp_start_port", "FREESWITCH_RTP_START_PORT"),
        ("rtp_end_port", "FREESWITCH_RTP_END_PORT"),
        ("pstn_proxy", "FREESWITCH_PSTN_PROXY"),
    ):
        assert f"{var}=${env}" in env_sets
    profile = {p.get("name"): p.get("value") for p in _parse("sip_profiles/lab.xml").iter("param")}
    assert _resolve(profile["sip-port"]) == "5080"
    core = {p.get("name"): p.get("value") for p in _parse("autoload_configs/switch.conf.xml").iter("param")}
    assert (_resolve(core["rtp-start-port"]), _resolve(core["rtp-end-port"])) == ("16384", "16584")


def test_ai_extension_parks_with_the_variables_the_bridge_reads():
    root = _parse("dialplan/lab.xml")
    ai = next(e for e in root.iter("extension") if e.get("name") == "ai-call")
    actions = [(a.get("application"), a.get("data") or "") for a in ai.iter("action")]
    assert actions[-1][0] == "park"
    assert any(app == "set" and data.startswith(f"{VAR_TENANT}=") for app, data in actions)
    text = (CONF / "dialplan/lab.xml").read_text() + (CONF / "README.md").read_text()
    for var in (VAR_TENANT, VAR_CAMPAIGN, VAR_VOICE_AGENT, VAR_LEAD):
        assert var in text


def test_gateway_profile_queue_and_conference_names_match_the_defaults():
    settings = Settings()
    gateways = [g.get("name") for g in _parse("sip_profiles/lab.xml").iter("gateway")]
    assert settings.gateway in gateways
    assert _parse("sip_profiles/lab.xml").get("name") == settings.sip_profile
    queues = [q.get("name") for q in _parse("autoload_configs/callcenter.conf.xml").iter("queue")]
    assert f"{settings.default_queue}@{settings.callcenter_domain}" in queues
    profiles = [p.get("name") for p in _parse("autoload_configs/conference.conf.xml").iter("profile")]
    assert settings.conference_profile in profiles


def test_ai_conference_leg_parks_answered_without_tenant_and_the_simulator_agrees():
    from bridge.sim.dialplan import lookup

    settings = Settings()
    root = _parse("dialplan/lab.xml")
    context = next(c for c in root.iter("context") if c.get("name") == settings.conference_ai_context)
    leg = next(e for e in context.iter("extension") if e.get("name") == "bridge-ai-leg")
    cond = leg.find("condition")
    assert cond is not None and cond.get("field") == "destination_number"
    assert cond.get("expression") == f"^{settings.conference_ai_exten}$"
    actions = [(a.get("application"), a.get("data") or "") for a in leg.iter("action")]
    assert actions == [("answer", ""), ("park", "")]  # no bridge_tenant_id: not a new AI call
    assert lookup(settings.conference_ai_exten, "XML", settings.conference_ai_context) == actions


def test_conference_profile_sends_member_variables_as_the_simulator_does():
    from bridge.sim.conference import PROFILES

    for profile in _parse("autoload_configs/conference.conf.xml").iter("profile"):
        params = {p.get("name"): p.get("value") for p in profile.iter("param")}
        assert PROFILES[profile.get("name")]["verbose-events"] == params["verbose-events"] == "true"


def test_directory_domain_is_the_switch_domain():
    vars_xml = (CONF / "vars.xml").read_text()
    assert f'data="domain={Settings().directory_domain}"' in vars_xml


BUILD_SCRIPT = Path(__file__).resolve().parent.parent / "scripts/build-freeswitch.sh"


def _built_modules() -> list[str]:
    """The FS_MODULES list of scripts/build-freeswitch.sh (build/modules.conf lines)."""
    text = BUILD_SCRIPT.read_text()
    block = text.split('FS_MODULES="', 1)[1].split('"', 1)[0]
    return [line.strip().rsplit("/", 1)[1] for line in block.splitlines() if line.strip()]


def test_modules_conf_loads_exactly_what_the_build_script_builds():
    loaded = [m.get("module") for m in _parse("autoload_configs/modules.conf.xml").iter("load")]
    assert len(loaded) == len(set(loaded))
    assert sorted(loaded) == sorted([*_built_modules(), "mod_audio_fork"])
    assert loaded[:2] == ["mod_console", "mod_logfile"]  # loggers first: later lines reach the log
    for needed in (
        "mod_event_socket",
        "mod_commands",
        "mod_dptools",
        "mod_conference",
        "mod_loopback",
        "mod_callcenter",
        "mod_http_cache",
        "mod_audio_fork",
    ):
        assert needed in loaded


def test_the_configurations_whose_absence_logs_an_error_are_there():
    # Each of these logs [ERR] "Open of <name> failed" (or "Could not open"), or goes silent, without
    # its file. (mod_spandsp and mod_hash run on their defaults without one.)
    roots = [ET.parse(path).getroot() for path in (CONF / "autoload_configs").glob("*.xml")]
    names = {root.get("name") for root in roots if root.tag == "configuration"}
    for conf in (
        "modules.conf",
        "switch.conf",
        "console.conf",
        "logfile.conf",
        "event_socket.conf",
        "sofia.conf",
        "conference.conf",
        "callcenter.conf",
        "local_stream.conf",
        "http_cache.conf",
        "db.conf",
        "tts_commandline.conf",
    ):
        assert conf in names, conf
    assert "shout.conf" not in names  # mod_shout is not built


def test_conference_members_bind_no_caller_controls():
    """conference_member.c:87 logs [ERR] on every join when the profile's caller-controls group
    is missing; "none" binds no keys (DTMF is the AI's, as on the simulator)."""
    root = _parse("autoload_configs/conference.conf.xml")
    groups = {g.get("name") for section in root.iter("caller-controls") for g in section.iter("group")}
    for profile in root.iter("profile"):
        params = {p.get("name"): p.get("value") for p in profile.iter("param")}
        for key in ("caller-controls", "moderator-controls"):
            assert params.get(key, "default") in groups | {"none"}, (profile.get("name"), key)


def test_music_on_hold_plays_a_wav_the_conf_ships():
    import wave

    streams = _parse("autoload_configs/local_stream.conf.xml").iter("directory")
    directory = next(d for d in streams if d.get("name") == "moh")
    path = directory.get("path") or ""
    assert path.startswith("$${conf_dir}/")
    local = CONF / path.removeprefix("$${conf_dir}/")
    rate = {p.get("name"): p.get("value") for p in directory.iter("param")}["rate"]
    wavs = sorted(local.glob("*.wav"))
    assert wavs, local
    for wav_path in wavs:
        with wave.open(str(wav_path)) as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (int(rate), 1, 2)
            assert wav.getnframes() >= wav.getframerate()  # at least a second
