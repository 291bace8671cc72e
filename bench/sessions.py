"""Live sessions held by one bridge process (`--phase=sessions`): its RSS and Redis per session.

`--sessions` calls (10,000) are placed on a switch simulator in a process of its own and go
through the real path: CHANNEL_PARK over ESL, the bridge's session in Redis, the voice agent's
slot, uuid_answer, the recording, the audio fork to a voice AI (a process of its own as well,
which receives every call's metadata frame), ai_session.started, the session timeout and token
refresh timers. The figure is the bridge process's VmRSS (from /proc) once every call has
reached the AI, against its VmRSS before the first call.

"Held" means: each session is live (in Redis' live set, its hash, tokens and agent slot), its
timers are armed and its fork is up. A call's event worker (a task with its queue) exits after
120 s without an event for that call and comes back with the next one, so calls placed more
than 120 s before the measurement no longer have one; the count of workers alive is printed.
The forks stream no audio (the simulator's sender is idled): in production audio flows
FreeSWITCH -> AI and never through the bridge.

Redis per session: (used_memory after - before) / sessions, and MEMORY USAGE of each key that
names one call (its token and agent-slot entries live in shared keys, inside the first figure).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Agent, Child, PhaseResult, Target, child_main, commands, machine, say

TARGET_RSS_MB = 300
MODULE = "bench.sessions"


async def agent_role(_job: dict[str, Any]) -> None:
    agent = Agent()
    await agent.start()
    say({"url": agent.url})
    async for cmd in commands():
        if cmd["cmd"] == "stop":
            break
        if cmd["cmd"] == "count":
            say({"n": len(agent.tokens)})
    await agent.stop()


def _raise_nofile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def run(args: argparse.Namespace) -> PhaseResult:
    import redis as redis_sync

    from bridge.store import keys
    from bridge.store.embedded import EmbeddedRedis

    result = PhaseResult("sessions")
    n = args.sessions
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        er = EmbeddedRedis(Path(tmp) / "redis", persistent=False)
        url = await er.astart()
        r = redis_sync.Redis(unix_socket_path=str(er.socket_path))
        agent = far = bridge = None
        try:
            agent = await Child(MODULE, "agent", {}).start()
            agent_url = (await agent.read())["url"]
            far = await Child(
                "bench.throughput",
                "far",
                {"name": "sessions", "agent_url": agent_url, "silent_forks": True},
            ).start()
            esl_url = (await far.read())["esl_url"]
            bridge = await Child(
                "bench.throughput",
                "bridge",
                {
                    "data_dir": str(Path(tmp) / "bridge"),
                    "redis_url": url,
                    "esl_url": esl_url,
                    "agent_url": agent_url,
                    "tenant": "sessions",
                },
            ).start()
            await bridge.read()
            await bridge.send({"cmd": "stats"})
            before = await bridge.read()
            used0 = int(r.info("memory")["used_memory"])
            t0 = time.monotonic()
            # In batches, each placed once the one before has reached the AI: a burst of parks
            # all at once is a different test (the Redis pool's limit), not what is held.
            placed = 0
            while placed < n:
                batch = min(args.session_batch, n - placed)
                await far.send({"cmd": "place", "n": batch, "tenant": "sessions", "batch": batch})
                await far.read(timeout=600)
                placed += batch
                deadline = time.monotonic() + 120
                while True:
                    await agent.send({"cmd": "count"})
                    reached = (await agent.read())["n"]
                    if reached >= placed:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"only {reached} of {placed} calls reached the AI")
                    await asyncio.sleep(0.02)
            placed_s = time.monotonic() - t0
            await asyncio.sleep(1.0)
            await bridge.send({"cmd": "stats"})
            after = await bridge.read()
            used1 = int(r.info("memory")["used_memory"])
            one = next(iter(r.smembers(keys.live_sessions())), None)
            per_key: dict[str, int] = {}
            if one is not None:
                call_id = one.decode()
                for key in r.scan_iter(match=f"*{call_id}*", count=10_000):
                    per_key[key.decode().replace(call_id, "{call_id}")] = int(r.memory_usage(key) or 0)
        finally:
            for child in (bridge, far, agent):
                if child is not None:
                    await child.stop()
            r.close()
            await er.astop()
    if after["live_sessions"] < n:
        raise RuntimeError(f"{after['live_sessions']} live sessions of {n}")
    rss_mb = after["rss_kib"] / 1024
    result.figures["sessions held"] = after["live_sessions"]
    result.figures["bridge RSS MB, idle"] = before["rss_kib"] / 1024
    result.figures["bridge RSS MB, sessions held"] = rss_mb
    result.figures["bridge RSS KiB per session"] = (after["rss_kib"] - before["rss_kib"]) / n
    result.figures["call workers alive"] = after["call_workers"]
    result.figures["call timers in the manager"] = after["timers"]
    result.figures["Redis bytes per session (used_memory delta)"] = (used1 - used0) / n
    result.figures["Redis bytes per session (MEMORY USAGE of its keys)"] = sum(per_key.values())
    result.figures["calls set up per second"] = n / placed_s
    result.targets.append(
        Target(
            f"{n:,} sessions in <= {TARGET_RSS_MB} MB RSS",
            "bridge RSS MB, sessions held",
            "<=",
            TARGET_RSS_MB,
        )
    )
    keys_text = ", ".join(f"{k} {v} B" for k, v in sorted(per_key.items()))
    result.notes += [
        f"{n:,} calls through the real path (park, session, slot, answer, recording, audio fork",
        "to a voice AI in its own process, timers); the simulator is a process of its own too.",
        "RSS = VmRSS of the bridge process once every call has reached the AI. Held = live in",
        "Redis, timers armed, fork up; a call's event worker exits after 120 s without an event",
        "(see 'call workers alive'). Keys of one session: " + (keys_text or "(none found)") + ".",
        f"{machine()}.",
    ]
    return result


if __name__ == "__main__":
    _raise_nofile()
    child_main({"agent": agent_role})
