"""The latency phase against the real FreeSWITCH (`--phase=freeswitch`), when `make freeswitch` has
built one (FREESWITCH_PREFIX, /opt/bridge-freeswitch by default) and SIPp is installed.

The switch, SIPp callers and the listening agent are started the way the real-switch tier starts
them (tests/freeswitch/conftest.py, tests/freeswitch/lab.py): `--fs-calls` SIPp calls are parked,
answered by the bridge and forked to the agent; then the same two measurements as the latency
phase, raw ESL `api uuid_exists` and send_dtmf through the pipeline at the production rate limit.
They are made twice on the same calls: first with every process free to run on any CPU, then
with FreeSWITCH's threads and SIPp pinned to the last CPU and this process (the bridge) and Redis
to the others (docs/operations.md: an operator running both on one box pins them so). The second
is judged; the first is shown. On one CPU only the first is made.
Without a build or without SIPp the phase prints SKIP and the reason, never MISS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import PhaseResult, RawHttp, machine, pct
from bench.latency import latency_result, raw_command_paced, raw_esl, verb_latency

DEFAULT_PREFIX = "/opt/bridge-freeswitch"
STAMP_NAME = ".bridge-freeswitch-build"  # tests/freeswitch/conftest.py's, written by the build script
FS_VERBS_PER_CALL_S = 2


def why_not() -> str | None:
    prefix = Path(os.environ.get("FREESWITCH_PREFIX") or DEFAULT_PREFIX)
    binary = prefix / "bin" / "freeswitch"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return f"no FreeSWITCH built in {prefix} ({binary} missing; `make freeswitch` builds one)"
    if not (prefix / STAMP_NAME).is_file():
        return f"the FreeSWITCH build in {prefix} did not finish (no {STAMP_NAME})"
    sipp = os.environ.get("SIPP") or shutil.which("sipp") or "/usr/bin/sipp"
    if not os.access(sipp, os.X_OK):
        return f"no SIPp at {sipp} (Debian sip-tester, which `make freeswitch` installs)"
    return None


@dataclass
class Samples:
    esl: list[float]  # raw ESL uuid_exists
    own: list[float]  # raw ESL uuid_send_dtmf, paced as the verb is
    verb: list[float]  # send_dtmf through the bridge

    def added(self, q: float) -> float:
        return pct(self.verb, q) - pct(self.esl, q)


def pin(pids: list[int], cpus: set[int]) -> None:
    """Every thread of each process onto `cpus`; threads they start later inherit it."""
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(ProcessLookupError):
                    os.sched_setaffinity(int(tid), cpus)


async def _measure(lab: Any, calls: list[Any], client: RawHttp, n: int) -> Samples:
    api = lab.runtime.services.switches.default.esl.api
    esl = await raw_esl(api, calls[0].call_id, n)
    # A real channel plays each digit out (~100 ms + the gap) and refuses DTMF past its queue,
    # so each call gets 2 verbs a second here, not the limit's 10.
    own = await raw_command_paced(
        api, [c.call_id for c in calls], n, FS_VERBS_PER_CALL_S, "uuid_send_dtmf {} 1"
    )
    verb = await verb_latency(client, [(c.call_id, c.token) for c in calls], n, FS_VERBS_PER_CALL_S)
    return Samples(esl, own, verb)


async def run(args: argparse.Namespace) -> PhaseResult:
    reason = why_not()
    if reason is not None:
        return PhaseResult("freeswitch", skip=reason)
    from bridge.store.embedded import PID_FILE, EmbeddedRedis
    from tests.freeswitch import conftest as fs
    from tests.freeswitch.lab import FreeSwitchLab

    with tempfile.TemporaryDirectory(prefix="bridge-bench-fs-") as tmp:
        root = Path(tmp)
        switch = await asyncio.to_thread(fs.start, fs.find_prefix(), root / "run")
        er = EmbeddedRedis(root / "redis", persistent=False)
        try:
            redis_url = await er.astart()
            settings = FreeSwitchLab.settings_for(switch, redis_url, root).with_(rate_limit_per_s=10)
            lab = FreeSwitchLab(settings, switch, root / "sipp")
            own_core: Samples | None = None
            await lab.start()
            try:
                # SIPp hangs up after max_idle_s without a message; the phase outlasts its 60 s default.
                calls = [await lab.call(max_idle_s=900) for _ in range(args.fs_calls)]
                assert lab.info is not None
                client = RawHttp("127.0.0.1", int(lab.info.base_url.rsplit(":", 1)[1]))
                await client.connect()
                try:
                    shared = await _measure(lab, calls, client, args.fs_samples)
                    cpus = sorted(os.sched_getaffinity(0))
                    if len(cpus) >= 2:
                        switch_side = [
                            switch.process.pid,
                            *(c.process.pid for c in lab.callers if c.process),
                        ]
                        bridge_side = [os.getpid(), int((root / "redis" / PID_FILE).read_text())]
                        try:
                            pin(switch_side, {cpus[-1]})
                            pin(bridge_side, set(cpus[:-1]))
                            own_core = await _measure(lab, calls, client, args.fs_samples)
                        finally:
                            pin(switch_side + bridge_side, set(cpus))
                finally:
                    await client.close()
            finally:
                await lab.stop()
        finally:
            await er.astop()
            await asyncio.to_thread(fs.stop, switch)
    judged = own_core or shared
    result = latency_result("freeswitch", judged.esl, judged.verb)
    # On the real switch uuid_send_dtmf costs more than uuid_exists: the same command sent raw
    # says how much of the difference is the switch's and how much the bridge's.
    f = result.figures
    f["raw ESL uuid_send_dtmf p50 ms"], f["raw ESL uuid_send_dtmf p99 ms"] = (
        pct(judged.own, 50),
        pct(judged.own, 99),
    )
    f["added over raw uuid_send_dtmf, p50 ms"] = f["send_dtmf p50 ms"] - f["raw ESL uuid_send_dtmf p50 ms"]
    f["added over raw uuid_send_dtmf, p99 ms"] = f["send_dtmf p99 ms"] - f["raw ESL uuid_send_dtmf p99 ms"]
    if own_core is not None:
        f["added p50 ms, switch on the bridge's cores"] = shared.added(50)
        f["added p99 ms, switch on the bridge's cores"] = shared.added(99)
    result.notes += [
        f"The real FreeSWITCH (FREESWITCH_PREFIX), {args.fs_calls} SIPp calls parked, answered and",
        "forked to a listening agent, as the real-switch tier starts them; raw ESL uuid_exists vs",
        f"send_dtmf, {args.fs_samples} samples each; the rate limit at its production value (10/s)",
        f"but {FS_VERBS_PER_CALL_S} verbs/s per call sent (a real channel plays each digit out);",
        "also the verb's own command sent raw at that pace (added over raw uuid_send_dtmf: not",
        "judged, shown).",
    ]
    if own_core is not None:
        result.notes += [
            "Measured twice on the same calls: first with every process free to run on any CPU, then",
            "with FreeSWITCH's threads and SIPp on the last CPU and the bridge's process and Redis on",
            "the others, as an operator running both on one box pins them (docs/operations.md). The",
            "judged figures are the second; the first is shown ('switch on the bridge's cores').",
        ]
    else:
        result.notes.append("One CPU: the switch and the bridge share it (no second measurement).")
    result.notes.append(f"{machine()}.")
    return result
