"""The lab dialplan the simulator routes with (freeswitch-conf/dialplan/lab.xml plus the
extensions the esl-captures were recorded against), and inline dialplans.

XML contexts are a list of (destination regex, actions); `$1`.. in an action's data are the
regex groups, as in FreeSWITCH. No match means "No Route": the channel hangs up with
NO_ROUTE_DESTINATION.
"""

from __future__ import annotations

import re

from bridge.sim.arguments import parse_inline_dialplan

App = tuple[str, str]

_LAB_HELPERS: list[tuple[str, list[App]]] = [
    (r"^conf-(.+)$", [("conference", "$1@default")]),
    (r"^queue-(.+)$", [("callcenter", "$1@default")]),
    (r"^9196$", [("answer", ""), ("echo", "")]),
    (r"^park$", [("park", "")]),
    # Where the bridge's AI conference leg (loopback-b) waits: answered, so the originate of
    # loopback-a returns, and parked without bridge_tenant_id, so it is not taken for an AI call.
    (r"^bridge_ai_leg$", [("answer", ""), ("park", "")]),
]

# The fs-lab extensions of esl-captures/README.txt (context "default").
_CAPTURE_LAB: list[tuple[str, list[App]]] = [
    (r"^5000$", [("answer", ""), ("park", "")]),
    (r"^5001$", [("answer", ""), ("playback", "tone_stream://%(1000,1000,440);loops=-1")]),
    (r"^5100$", [("answer", ""), ("conference", "lab@default")]),
]

CONTEXTS: dict[str, list[tuple[str, list[App]]]] = {
    "default": _CAPTURE_LAB + _LAB_HELPERS,
    "lab": [*_LAB_HELPERS, (r"^(\+?\d+)$", [("park", "")])],
    "public": [*_LAB_HELPERS, (r"^(\+?\d+)$", [("park", "")])],
}


def inbound_extension(variables: dict[str, str]) -> list[App]:
    """The "ai-call" extension of the lab context: the bridge's defaults, the given variables
    (which may override them), then park."""
    apps: list[App] = [("set", "hangup_after_bridge=false"), ("set", "park_after_bridge=true")]
    apps += [("set", f"{name}={value}") for name, value in variables.items()]
    return [*apps, ("park", "")]


def lookup(destination: str, dialplan: str = "XML", context: str = "default") -> list[App] | None:
    """The actions a transfer or originate to `destination` runs, or None for no route."""
    if dialplan.lower() == "inline":
        return parse_inline_dialplan(destination)
    for pattern, actions in CONTEXTS.get(context, []):
        m = re.match(pattern, destination)
        if m:
            return [(app, _expand(data, m)) for app, data in actions]
    return None


def _expand(data: str, m: re.Match[str]) -> str:
    return re.sub(r"\$(\d)", lambda g: m.group(int(g.group(1))) or "", data)
