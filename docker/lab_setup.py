"""Set the lab up once its bridge answers: a tenant key (`bridge keys create`), a voice agent whose
ws_url is the demo agent, made the tenant's default, so every call into the lab profile reaches
the demo agent. Used by `make lab` (scripts/lab.sh) and by the compose lab's one-shot
`lab-setup` service (docker/docker-compose.yml); run it with the bridge's python:

    python docker/lab_setup.py --bridge-url http://127.0.0.1:8080 --agent-ws ws://127.0.0.1:9000/ws \
        --state-dir var/lab/state

REDIS_URL (in its environment) is the Redis the bridge uses: `bridge keys create` writes there.
It waits for the bridge's /healthz (Redis and FreeSWITCH up) first. Into --state-dir it writes
`api-key` (mode 600), `lab.env` (BRIDGE_URL, API_KEY, VOICE_AGENT_ID, for `. lab.env`) and last
`ready` (the voice agent's id). The softphone containers wait for lab.env and then for the lab
to answer (docker/softphone/wait-lab.py). Run again with the same state dir it reuses the
key and the agent while they still work (a persistent Redis), else it makes new ones.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bridge.store.tenants import ALL_SCOPES

TENANT = "lab"  # freeswitch-conf/vars.xml bridge_default_tenant: the tenant of every lab call


def api(base: str, method: str, path: str, key: str | None = None, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_healthy(base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            status, last = api(base, "GET", "/healthz")
            if status == 200:
                return
        except OSError as exc:  # not listening yet
            last = str(exc)
        time.sleep(1)
    sys.exit(f"lab-setup: {base}/healthz not ready after {timeout:.0f} s: {last}")


def create_key(cli: str) -> str:
    argv = [cli, "keys", "create", "--tenant", TENANT]
    for scope in ALL_SCOPES:
        argv += ["--scope", scope]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"lab-setup: {' '.join(argv[:5])} ... failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


def still_works(base: str, state: Path, agent_ws: str) -> tuple[str, str] | None:
    try:
        key = (state / "api-key").read_text().strip()
    except FileNotFoundError:
        return None
    status, body = api(base, "GET", "/api/v1/voice-agents/default", key)
    if status != 200 or not body or not body.get("voice_agent_id"):
        return None
    va = body["voice_agent_id"]
    status, agent = api(base, "GET", f"/api/v1/voice-agents/{va}", key)
    if status != 200 or agent.get("ws_url") != agent_ws or agent.get("status") != "active":
        return None
    return key, va


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bridge-url", default="http://127.0.0.1:8080")
    p.add_argument("--agent-ws", default="ws://127.0.0.1:9000/ws", help="the demo agent's WebSocket")
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--bridge-cli", default=shutil.which("bridge") or "bridge")
    p.add_argument("--timeout", type=float, default=180.0, help="how long to wait for /healthz")
    args = p.parse_args()
    base = args.bridge_url.rstrip("/")
    state: Path = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    (state / "ready").unlink(missing_ok=True)

    wait_healthy(base, args.timeout)
    reused = still_works(base, state, args.agent_ws)
    if reused:
        key, va = reused
        print(f"lab-setup: reusing the key in {state / 'api-key'} and voice agent {va}", flush=True)
    else:
        key = create_key(args.bridge_cli)
        status, agent = api(
            base, "POST", "/api/v1/voice-agents", key, {"name": "demo agent", "ws_url": args.agent_ws}
        )
        if status != 201:
            sys.exit(f"lab-setup: POST /api/v1/voice-agents answered {status}: {agent}")
        va = agent["id"]
        status, answer = api(base, "POST", "/api/v1/voice-agents/default", key, {"voice_agent_id": va})
        if status != 200:
            sys.exit(f"lab-setup: POST /api/v1/voice-agents/default answered {status}: {answer}")
        key_file = state / "api-key"
        key_file.write_text(key + "\n")
        os.chmod(key_file, 0o600)
        print(f"lab-setup: tenant {TENANT!r}: a new key, voice agent {va} ({args.agent_ws}) is the default")
    (state / "lab.env").write_text(f"BRIDGE_URL={base}\nAPI_KEY={key}\nVOICE_AGENT_ID={va}\n")
    (state / "ready").write_text(f"{va}\n")
    print(f"lab-setup: API key {key}", flush=True)


if __name__ == "__main__":
    main()
