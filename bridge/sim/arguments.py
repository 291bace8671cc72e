"""FreeSWITCH's argument splitting and the small grammars built on it (freeswitch.md §2.0).

`separate_string` reproduces `switch_separate_string` from switch_utils.c, including its
surprises: single quotes group words and are removed, backslash escapes are interpreted
(`\\n`, `\\s`, `\\'`), a leading `^^<c>` picks another delimiter, and when the argument array
is full the last element receives the unsplit remainder (still unquoted and unescaped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

QUOTE = "'"
ESCAPE = "\\"
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "s": " "}


def _cleanup(token: str, delim: str) -> str:
    """cleanup_separated_string: strip quotes, interpret escapes, trim surrounding blanks."""
    i = 0
    while i < len(token) and token[i] == " ":
        i += 1
    out: list[str] = []
    end = 0  # length of `out` up to the last character worth keeping
    inside_quotes = False
    while i < len(token):
        ch = token[i]
        if ch == ESCAPE and i + 1 < len(token):
            nxt = token[i + 1]
            if nxt in ("'", '"', ESCAPE) or nxt == delim or nxt in _UNESCAPE:
                out.append(_UNESCAPE.get(nxt, nxt))
                end = len(out)
                i += 2
                continue
        if ch == QUOTE:
            inside_quotes = not inside_quotes
        else:
            out.append(ch)
            if ch != " " or inside_quotes:
                end = len(out)
        i += 1
    return "".join(out[:end])


def separate_string(data: str, delim: str = " ", max_args: int = 128) -> list[str]:
    """Split like switch_separate_string(buf, delim, argv, max_args)."""
    if not data or max_args <= 0:
        return []
    if data.startswith("^^") and len(data) >= 4:
        delim = data[2]
        data = data[3:]
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    inside_quotes = False
    if delim == " ":
        # START -> SKIP_INITIAL_SPACE -> FIND_DELIM -> SKIP_ENDING_SPACE, as in the C tokenizer.
        state = "start"
        while pos < len(data) and len(starts) < max_args:
            ch = data[pos]
            if state == "start":
                starts.append(pos)
                ends.append(len(data))
                state = "skip_initial"
            elif state == "skip_initial":
                if ch == " ":
                    pos += 1
                else:
                    state = "find"
            elif state == "find":
                if ch == ESCAPE:
                    pos += 1
                elif ch == QUOTE:
                    inside_quotes = not inside_quotes
                elif ch == " " and not inside_quotes:
                    ends[-1] = pos
                    state = "skip_ending"
                pos += 1
            elif ch == " ":
                pos += 1
            else:
                state = "start"
    else:
        state = "start"
        while pos < len(data) and len(starts) < max_args:
            ch = data[pos]
            if state == "start":
                starts.append(pos)
                ends.append(len(data))
                state = "find"
                continue
            if ch == ESCAPE:
                pos += 1
            elif ch == QUOTE:
                inside_quotes = not inside_quotes
            elif ch == delim and not inside_quotes:
                ends[-1] = pos
                state = "start"
            pos += 1
    return [_cleanup(data[s:e], delim) for s, e in zip(starts, ends, strict=True)]


def split_command(line: str) -> tuple[str, str]:
    """`uuid_kill abc NORMAL_CLEARING` -> ("uuid_kill", "abc NORMAL_CLEARING"), as switch_api_execute
    sees it: the command name ends at the first space, the rest is passed verbatim."""
    line = line.strip()
    name, _, rest = line.partition(" ")
    return name, rest.lstrip(" ")


# ---------------------------------------------------------------- {var=value,...} prefixes


def parse_var_block(text: str, opener: str = "{", closer: str = "}") -> tuple[dict[str, str], str]:
    """Strip leading `{a=b,c='d,e'}` blocks (several may follow each other) and return
    (variables, rest). Commas inside single quotes do not split; quotes are removed."""
    variables: dict[str, str] = {}
    rest = text.lstrip()
    while rest.startswith(opener):
        depth = 0
        end = -1
        in_quote = False
        for i, ch in enumerate(rest):
            if ch == QUOTE:
                in_quote = not in_quote
            elif not in_quote and ch == opener:
                depth += 1
            elif not in_quote and ch == closer:
                depth -= 1
                if depth == 0:
                    end = i
                    break
        if end < 0:
            break
        body = rest[1:end]
        for item in separate_string(body, ",", 512):
            name, sep, value = item.partition("=")
            if sep and name:
                variables[name.strip()] = value
        rest = rest[end + 1 :]
    return variables, rest


# ---------------------------------------------------------------- inline dialplan


def parse_inline_dialplan(target: str) -> list[tuple[str, str]]:
    """`app1:arg1,app2:arg2` or `m:<d>:app1:arg1<d>app2` (mod_dptools inline_dialplan_hunt)."""
    delim = ","
    if target.startswith("m:") and len(target) > 3 and target[3] == ":":
        delim = target[2]
        target = target[4:]
    apps: list[tuple[str, str]] = []
    for part in separate_string(target, delim, 128):
        if not part:
            continue
        app, _, data = part.partition(":")
        apps.append((app.strip(), data))
    return apps


# ---------------------------------------------------------------- conference targets


@dataclass(slots=True)
class ConferenceTarget:
    """`room@profile+pin+flags{moderator|mute}` as the conference application reads it."""

    name: str
    profile: str = "default"
    pin: str | None = None
    flags: set[str] = field(default_factory=set)


def parse_conference_target(data: str) -> ConferenceTarget:
    flags: set[str] = set()
    m = re.search(r"\+flags\{([^}]*)\}", data)
    if m:
        flags = {f.strip() for f in m.group(1).split("|") if f.strip()}
        data = data[: m.start()] + data[m.end() :]
    name, _, rest = data.partition("@")
    profile, _, pin = rest.partition("+")
    if not rest:
        name, _, pin = name.partition("+")
    return ConferenceTarget(
        name=name.strip(), profile=profile.strip() or "default", pin=pin or None, flags=flags
    )


# ---------------------------------------------------------------- originate


@dataclass(slots=True)
class OriginateArgs:
    variables: dict[str, str]
    endpoint: str  # e.g. sofia/gateway/pstn/+15551234567 (first leg only)
    app: str | None  # "park", "conference", ... when the target is &app(args)
    app_data: str
    exten: str | None
    dialplan: str
    context: str
    cid_name: str | None
    cid_num: str | None
    timeout_s: int | None


def _undef(value: str | None) -> str | None:
    return None if value is None or value == "undef" or value == "" else value


def parse_originate(args: str) -> OriginateArgs | None:
    """`<call url> <exten>|&<app>(<args>) [<dialplan>] [<context>] [<cid_name>] [<cid_num>] [<timeout>]`.
    Returns None for a usage error."""
    argv = separate_string(args, " ", 7)
    if len(argv) < 2:
        return None
    variables, endpoint = parse_var_block(argv[0])
    # A dial string may hold several legs (`,` simultaneous, `|` sequential); the sandbox rings the first.
    endpoint = re.split(r"[,|:]_:|[,|]", endpoint, maxsplit=1)[0]
    leg_vars, endpoint = parse_var_block(endpoint, "[", "]")
    variables.update(leg_vars)
    target = argv[1]
    app: str | None = None
    app_data = ""
    exten: str | None = None
    if target.startswith("&"):
        m = re.match(r"^&([\w-]+)(?:\((.*)\))?$", target, re.S)
        if not m:
            return None
        app, app_data = m.group(1), m.group(2) or ""
    else:
        exten = target
    dialplan = _undef(argv[2] if len(argv) > 2 else None) or "XML"
    context = _undef(argv[3] if len(argv) > 3 else None) or "default"
    timeout = _undef(argv[6] if len(argv) > 6 else None)
    return OriginateArgs(
        variables=variables,
        endpoint=endpoint,
        app=app,
        app_data=app_data,
        exten=exten,
        dialplan=dialplan,
        context=context,
        cid_name=_undef(argv[4] if len(argv) > 4 else None),
        cid_num=_undef(argv[5] if len(argv) > 5 else None),
        timeout_s=int(timeout) if timeout and timeout.isdigit() else None,
    )
