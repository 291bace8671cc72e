"""Wait until the lab can take a call: docker/lab_setup.py's state (lab.env) is there, the bridge's
/healthz answers 200 (Redis and FreeSWITCH up), tenant lab's default voice agent is set with that
key, and the demo agent's port accepts connections. A ready file left by an earlier `up` is fine:
what counts is that the lab answers now. Stdlib only.

    python3 wait-lab.py /lab/lab.env [timeout_s]
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit


def check(env_file: Path) -> str:
    env = dict(line.split("=", 1) for line in env_file.read_text().split() if "=" in line)
    base, key = env["BRIDGE_URL"], env["API_KEY"]
    with urllib.request.urlopen(base + "/healthz", timeout=5) as resp:
        if resp.status != 200:
            return f"healthz {resp.status}"
    req = urllib.request.Request(base + "/api/v1/voice-agents/default")
    req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        va = json.load(resp).get("voice_agent_id")
    if not va:
        return "no default voice agent yet"
    req = urllib.request.Request(base + f"/api/v1/voice-agents/{va}")
    req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        ws = urlsplit(json.load(resp)["ws_url"])
    socket.create_connection((ws.hostname, ws.port or 80), timeout=5).close()
    return ""


def main() -> None:
    env_file = Path(sys.argv[1])
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 300.0
    deadline = time.monotonic() + timeout
    why = "no state yet"
    while time.monotonic() < deadline:
        try:
            why = check(env_file)
            if not why:
                print(
                    "softphone: the lab is ready (bridge healthy, default voice agent listening)", flush=True
                )
                return
        except (OSError, KeyError, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        time.sleep(1)
    sys.exit(f"softphone: the lab was not ready after {timeout:.0f} s: {why}")


if __name__ == "__main__":
    main()
