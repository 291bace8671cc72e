"""The real-switch tier: a FreeSWITCH built by `make freeswitch`, run with the project's own
freeswitch-conf/ on loopback, in a throw-away run directory.

The switch is found in $FREESWITCH_PREFIX (default /opt/bridge-freeswitch). Without one the tier
skips, saying how to build it; under CI=true it fails instead, so CI never passes by not testing.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.sim_helpers import RawEsl

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "freeswitch-conf"
DEFAULT_PREFIX = "/opt/bridge-freeswitch"
STAMP_NAME = ".bridge-freeswitch-build"  # written by scripts/build-freeswitch.sh when a build finished

# freeswitch-conf binds everything to 127.0.0.1: ESL (event_socket.conf.xml), SIP (sip_profiles/lab.xml)
# and RTP (switch.conf.xml), on ports vars.xml takes from FREESWITCH_*_PORT when they are set. The tier
# sets them to free ports, so it runs beside another switch (or another run of itself).
ESL_PASSWORD = "ClueCon"  # vars.xml esl_password
RTP_PORTS = 200
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

# A FreeSWITCH log line: "2025-01-01 12:00:00.123456 97.53% [ERR] file.c:87 text" (the CPU idle
# figure and a leading channel uuid are optional).
SEVERE = re.compile(r"\[(ERR|CRIT|ALERT)\]")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def no_switch(reason: str) -> None:
    """Skip (or under CI fail) the tier for want of a FreeSWITCH."""
    if _in_ci():
        pytest.fail(f"CI=true and {reason}: run `make freeswitch` before the real-switch tier", pytrace=False)
    pytest.skip(f"{reason}; `make freeswitch` builds one (see docs/freeswitch.md)")


def find_prefix() -> Path:
    prefix = Path(os.environ.get("FREESWITCH_PREFIX") or DEFAULT_PREFIX)
    binary = prefix / "bin" / "freeswitch"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        no_switch(f"no FreeSWITCH built in {prefix} ({binary} missing)")
    if not (prefix / STAMP_NAME).is_file():
        no_switch(f"the FreeSWITCH build in {prefix} did not finish (no {STAMP_NAME})")
    return prefix


def _free_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP (SIP listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port on 127.0.0.1")


def ports_env() -> dict[str, str]:
    """FREESWITCH_*_PORT for the switch: the caller's own if set, else free ones. The `pstn`
    gateway's proxy (FREESWITCH_PSTN_PROXY) is a free port too: the lab's SIPp UAS listens there."""
    rtp_start = random.randrange(20000, 30000 - RTP_PORTS, 2)
    chosen = {
        "FREESWITCH_ESL_PORT": str(_free_port()),
        "FREESWITCH_SIP_PORT": str(_free_port()),
        "FREESWITCH_RTP_START_PORT": str(rtp_start),
        "FREESWITCH_RTP_END_PORT": str(rtp_start + RTP_PORTS),
        "FREESWITCH_PSTN_PROXY": f"127.0.0.1:{_free_port()}",
    }
    return {name: os.environ.get(name) or value for name, value in chosen.items()}


def _esl_greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.settimeout(2.0)
            return b"auth/request" in s.recv(256)
    except OSError:
        return False


@dataclass
class FreeSwitch:
    """A running FreeSWITCH and where its files are."""

    prefix: Path
    run_root: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    esl_port: int
    sip_port: int
    esl_password: str = ESL_PASSWORD
    startup_log: str = ""  # the log as it stood once the switch was up and settled
    dirs: dict[str, Path] = field(default_factory=dict)

    @property
    def pstn_port(self) -> int:
        """Where the `pstn` gateway sends its calls (127.0.0.1, UDP): the lab's SIPp UAS."""
        return int(self.env["FREESWITCH_PSTN_PROXY"].rpartition(":")[2])

    @property
    def log_path(self) -> Path:
        return self.dirs["log"] / "freeswitch.log"

    @property
    def recordings_dir(self) -> Path:
        return self.dirs["recordings"]

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def output_text(self) -> str:
        try:
            return (self.run_root / "stdout.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @staticmethod
    def severe_lines(text: str) -> list[str]:
        return [line for line in text.splitlines() if SEVERE.search(line)]

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            found = regex.search(self.log_text())
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matching {pattern!r} within {timeout}s:\n{self.tail()}")
            if self.process.poll() is not None:
                raise AssertionError(f"FreeSWITCH exited ({self.process.returncode}):\n{self.tail()}")
            time.sleep(0.1)

    def tail(self, lines: int = 40) -> str:
        text = self.log_text() or self.output_text()
        return "\n".join(text.splitlines()[-lines:])

    async def esl(self) -> RawEsl:
        """A fresh authenticated ESL connection with no event subscription."""
        return await RawEsl.connect(self.esl_port, self.esl_password, subscribe=None)


def command(prefix: Path, run_root: Path) -> tuple[list[str], dict[str, Path]]:
    """`freeswitch` in the foreground without a console, every writable directory under run_root."""
    dirs = {
        name: run_root / name
        for name in ("log", "run", "db", "temp", "recordings", "cache", "storage", "certs")
    }
    argv = [str(prefix / "bin" / "freeswitch"), "-nonat", "-nc", "-nf", "-conf", str(CONF)]
    for name, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        argv += [f"-{name}", str(path)]
    return argv, dirs


def start(prefix: Path, run_root: Path) -> FreeSwitch:
    argv, dirs = command(prefix, run_root)
    ports = ports_env()
    env = {**os.environ, **ports}
    with (run_root / "stdout.log").open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    switch = FreeSwitch(
        prefix=prefix,
        run_root=run_root,
        process=process,
        env=ports,
        esl_port=int(ports["FREESWITCH_ESL_PORT"]),
        sip_port=int(ports["FREESWITCH_SIP_PORT"]),
        dirs=dirs,
    )
    try:
        _wait_until_up(switch)
    except BaseException:
        stop(switch)
        raise
    return switch


def _wait_until_up(switch: FreeSwitch) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _esl_greets(switch.esl_port):
        if switch.process.poll() is not None:
            pytest.fail(f"FreeSWITCH exited ({switch.process.returncode}) on start:\n{switch.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no ESL on 127.0.0.1:{switch.esl_port} after {START_TIMEOUT_S}s:\n{switch.tail()}")
        time.sleep(0.2)
    # The core logs its banner once every module is loaded; the sofia profile starts in its own thread.
    switch.wait_for_log(r"FreeSWITCH Started", timeout=START_TIMEOUT_S)
    switch.wait_for_log(r"Started Profile lab", timeout=START_TIMEOUT_S)
    time.sleep(1.0)  # let the stream and profile threads log their first lines
    switch.startup_log = switch.log_text()


def stop(switch: FreeSwitch) -> None:
    process = switch.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="session")
def freeswitch_prefix() -> Path:
    return find_prefix()


@pytest.fixture(scope="session")
def freeswitch(freeswitch_prefix: Path) -> Iterator[FreeSwitch]:
    """One FreeSWITCH for the whole session, stopped at the end. Its run directory is our own (not
    pytest's basetemp, which other pytest runs on the machine prune); FREESWITCH_KEEP_RUN=1 keeps it."""
    run_root = Path(tempfile.mkdtemp(prefix="bridge-freeswitch-run-"))
    try:
        switch = start(freeswitch_prefix, run_root)
        try:
            yield switch
        finally:
            stop(switch)
    finally:
        if os.environ.get("FREESWITCH_KEEP_RUN") != "1":
            shutil.rmtree(run_root, ignore_errors=True)


@pytest.fixture
async def fs_esl(freeswitch: FreeSwitch) -> AsyncIterator[RawEsl]:
    esl = await freeswitch.esl()
    try:
        yield esl
    finally:
        with contextlib.suppress(Exception):
            await esl.send("exit")
        await esl.close()


# ---------------------------------------------------------------- the lab: bridge + Redis + agent + callers


@pytest.fixture
async def fs_lab(freeswitch: FreeSwitch, redis_url: str, redis: Any, tmp_path: Path) -> AsyncIterator[Any]:
    """The bridge (in-process BridgeRuntime) on the tier's FreeSWITCH, with a fresh Redis db, the
    `lab` tenant and an admin key, a ListeningAgent as the tenant's default voice agent, SIPp
    callers and gateway (tests/freeswitch/lab.py). Channels left on the switch are hung up."""
    from tests.freeswitch.lab import FreeSwitchLab

    settings = FreeSwitchLab.settings_for(freeswitch, redis_url, tmp_path)
    lab = FreeSwitchLab(settings, freeswitch, tmp_path / "sipp")
    await lab.start()
    try:
        yield lab
    finally:
        await lab.stop()


@pytest.fixture(
    params=[
        pytest.param("sim", id="sim"),
        pytest.param("freeswitch", id="freeswitch", marks=pytest.mark.freeswitch),
    ]
)
def lab_switch(request: pytest.FixtureRequest) -> FreeSwitch | None:
    """The switch a shared scenario runs on: None for the simulator, else the tier's FreeSWITCH
    (which skips, or under CI=true fails, without a build, as every real-switch test does)."""
    return request.getfixturevalue("freeswitch") if request.param == "freeswitch" else None


@pytest.fixture
def lab_settings() -> dict[str, Any]:
    """Settings a scenario's bridge runs with beyond the lab's own; a test overrides it with
    `@pytest.mark.parametrize("lab_settings", [{"tts": "flite"}])`."""
    return {}


@pytest.fixture
async def lab(
    lab_switch: FreeSwitch | None, redis_url: str, redis: Any, tmp_path: Path, lab_settings: dict[str, Any]
) -> AsyncIterator[Any]:
    """A scenario's lab on either switch (ids "sim" and "freeswitch"): see tests/freeswitch/lab.py."""
    from tests.conftest import fast_settings
    from tests.freeswitch.lab import FreeSwitchLab, SimLab

    if lab_switch is None:
        lab: Any = SimLab(fast_settings(redis_url, tmp_path, rate_limit_per_s=1000, **lab_settings))
    else:
        settings = FreeSwitchLab.settings_for(lab_switch, redis_url, tmp_path, **lab_settings)
        lab = FreeSwitchLab(settings, lab_switch, tmp_path / "sipp")
    await lab.start()
    try:
        yield lab
    finally:
        await lab.stop()
