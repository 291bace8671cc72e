"""The shipped FreeSWITCH configuration stays consistent with what the bridge expects."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from bridge.calls.manager import VAR_CAMPAIGN, VAR_LEAD, VAR_TENANT, VAR_VOICE_AGENT
from bridge.config import Settings

CONF = Path(__file__).resolve().parent.parent / "freeswitch-conf"


def _parse(name: str) -> ET.Element:
    return ET.parse(CONF / name).getroot()


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
    assert int(params["listen-port"]) == default.port


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
