"""FreeSWITCH loads the project's freeswitch-conf/ cleanly, with the modules the bridge needs."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest

from tests.freeswitch.conftest import CONF, FreeSwitch
from tests.sim_helpers import RawEsl

pytestmark = pytest.mark.freeswitch

BRIDGE_NEEDS = ("mod_audio_fork", "mod_conference", "mod_loopback", "mod_callcenter", "mod_event_socket")


def test_loading_the_conf_logs_no_error(freeswitch: FreeSwitch):
    assert "Started Profile lab" in freeswitch.startup_log
    assert FreeSwitch.severe_lines(freeswitch.startup_log) == []
    assert FreeSwitch.severe_lines(freeswitch.output_text()) == []


async def test_the_modules_the_bridge_needs_are_loaded(fs_esl: RawEsl):
    for module in BRIDGE_NEEDS:
        assert (await fs_esl.api(f"module_exists {module}")).strip() == "true", module


async def test_every_module_in_modules_conf_is_loaded(fs_esl: RawEsl):
    listed = [m.get("module") for m in ET.parse(CONF / "autoload_configs/modules.conf.xml").iter("load")]
    assert set(BRIDGE_NEEDS) <= set(listed)
    for module in listed:
        assert (await fs_esl.api(f"module_exists {module}")).strip() == "true", module


async def test_a_conference_join_and_music_on_hold_log_no_error(freeswitch: FreeSwitch, fs_esl: RawEsl):
    """The first conference member binds the profile's caller controls; local_stream://moh plays
    the conf's own WAV. Both logged [ERR] before the conf was fixed."""
    before = len(freeswitch.log_text())
    originate = "originate loopback/conf-conf-check/lab &playback(local_stream://moh)"
    reply = await fs_esl.api(originate, timeout=15)
    assert reply.startswith("+OK"), reply
    listing = ""
    for _ in range(50):
        listing = await fs_esl.api("conference conf-check list")
        if "loopback/conf-conf-check-b" in listing:
            break
        await asyncio.sleep(0.1)
    assert "loopback/conf-conf-check-b" in listing, listing
    await asyncio.sleep(1.0)  # a second of hold music into the room
    await fs_esl.api("hupall NORMAL_CLEARING")
    await asyncio.sleep(0.5)
    assert FreeSwitch.severe_lines(freeswitch.log_text()[before:]) == []


async def test_sip_and_rtp_bind_to_loopback_on_the_ports_given(freeswitch: FreeSwitch, fs_esl: RawEsl):
    status = await fs_esl.api("sofia status profile lab")
    fields = dict(line.split(None, 1) for line in status.splitlines() if len(line.split(None, 1)) == 2)
    assert fields["BIND-URL"].startswith(f"sip:mod_sofia@127.0.0.1:{freeswitch.sip_port};")
    assert fields["RTP-IP"].strip() == fields["SIP-IP"].strip() == "127.0.0.1"
    assert (await fs_esl.api("global_getvar esl_port")).strip() == str(freeswitch.esl_port)
    start = (await fs_esl.api("global_getvar rtp_start_port")).strip()
    assert start == freeswitch.env["FREESWITCH_RTP_START_PORT"]
