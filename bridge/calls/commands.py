"""FreeSWITCH API commands, built from values: the one place a value becomes a switch argument.

Every string that reaches a command is treated as hostile, whoever it came from (an API body, a
stored lead, a channel variable, a setting). FreeSWITCH reads a command line in layers, and each
layer has its own metacharacters (freeswitch.md §2.0):

- the ESL line itself ends at a newline, so no value may hold a control character;
- `${…}` is expanded wherever a value reaches an application or a dial string, and `${api(…)}`
  runs any API command: no value may hold `$`;
- `switch_separate_string` splits on spaces (or the `^^<c>` delimiter), groups with `'`, and
  interprets `\\` escapes;
- a `{a=b,c=d}` block ends at `}`, splits on `,`, and a `[…]` block is a per-leg one;
- an inline dialplan splits on `,` (or the `m:<c>:` separator, `^` here) and `app:data` on `:`.

Rather than escaping for each layer (where a mistake in one is an injection), every kind of value
has an alphabet in which none of those characters exists, and a value outside it is refused with
UnsafeValue. The API edge validates formats first (E.164, URLs, ids) and answers 400 with the
field's name; UnsafeValue here is the last guard, for values that arrive another way (a channel
variable, data stored before a rule existed).

The one value that needs more than a word is JSON (the audio fork's metadata frame, text frames):
`json_text` writes it with every string character outside a plain alphabet as a `\\uXXXX`
escape, so the text holds no space, quote, `$`, `|` or backslash escape that any layer would read.

Speech text (v1.1 TTS, bridge.tts) is the one free text: `speech_text` normalises it (NFC, every
run of whitespace one space, `'` as U+2019) and refuses what some layer would read (`$`, `\\`,
control and format characters, `| ^ ~ { } [ ] < >` and the backtick). It holds spaces, so its
command is a `delimited_command`: `name ^^`a`b`c`, switch_separate_string's own delimiter,
which no encoded value holds.

A command is a `Command`, which only `command()` and `delimited_command()` make; `Switch.api`
refuses a plain str, so a command cannot be put together with an f-string somewhere else.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from bridge.errors import ApiError, SwitchError


class UnsafeValue(ApiError, SwitchError, ValueError):
    """A value that cannot become a FreeSWITCH argument as it is.

    It is a SwitchError, so every path that undoes a half-done verb when the switch refuses a
    command undoes it for this too (nothing was sent); and an ApiError, so the client gets 400
    validation_error naming the value. A ValueError, so a pydantic validator can let it through."""

    def __init__(self, what: str, reason: str) -> None:
        message = f"{what} cannot be passed to FreeSWITCH: {reason}"
        Exception.__init__(self, message)  # ApiError's and SwitchError's own would chain into each other
        self.status, self.code, self.message = 400, "validation_error", message
        self.headers: dict[str, str] = {}
        self.extra: dict[str, Any] = {"field": what}
        self.command = ""
        self.reply = f"-ERR {message}"
        self.what = what
        self.reason = reason


class Arg(str):
    """One encoded argument (or a piece of one), safe where its builder says."""

    __slots__ = ()


class Command(str):
    """A whole command line made by `command()`."""

    __slots__ = ()


# A word: ids, uuids, keywords, hangup causes, digits, E.164 numbers, file paths, dial strings.
# No space, quote, backslash, `$`, braces, brackets, `,`, `|`, `^`, `!`, `&`, parentheses.
_WORD_RE = re.compile(r"[A-Za-z0-9_.:@+\-/=;~#*%]+")
# A URL as a switch argument: the same alphabet plus `?` and `&` (query strings); `,` `'` `$`
# `{}` `[]` `|` `^` and spaces must be percent-encoded by the caller.
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[A-Za-z0-9_.:@+\-/=;~#*%?&]+")
_VAR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Characters a JSON string may carry as themselves; everything else becomes \uXXXX.
_JSON_PLAIN = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" "_.:@+-/=;~#*%?&()!<>[]"
)

MAX_ARG_LEN = 4096


def _describe(value: str, allowed: str) -> str:
    bad = next((c for c in value if not re.fullmatch(allowed, c)), None)
    if bad is None:
        return "it is too long" if len(value) > MAX_ARG_LEN else "it is empty"
    return f"it contains {bad!r} (U+{ord(bad):04X})"


def word(value: str, what: str = "value") -> Arg:
    """A plain word, passed as it is."""
    if not isinstance(value, str):
        raise UnsafeValue(what, f"it is a {type(value).__name__}, not a string")
    if len(value) > MAX_ARG_LEN or not _WORD_RE.fullmatch(value):
        raise UnsafeValue(what, _describe(value, _WORD_RE.pattern[:-1]))
    return Arg(value)


def url(value: str, what: str = "url", *, schemes: tuple[str, ...] = ("http", "https")) -> Arg:
    """An absolute URL of one of `schemes`."""
    if not isinstance(value, str) or len(value) > MAX_ARG_LEN or not _URL_RE.fullmatch(value or ""):
        text = value if isinstance(value, str) else ""
        raise UnsafeValue(what, _describe(text, r"[A-Za-z0-9_.:@+\-/=;~#*%?&]"))
    scheme = value.split(":", 1)[0].lower()
    if scheme not in schemes:
        raise UnsafeValue(what, f"its scheme must be {' or '.join(schemes)}")
    return Arg(value)


def var_block(variables: Mapping[str, str], *, opener: str = "{", closer: str = "}") -> Arg:
    """`{name=value,…}` (or `[…]` for one leg of a dial string). Values are words (or empty)."""
    items = []
    for name, value in variables.items():
        if not _VAR_NAME_RE.fullmatch(name):
            raise UnsafeValue("channel variable name", _describe(name, r"[A-Za-z0-9_]"))
        items.append(f"{name}={word(value, name) if value != '' else ''}")
    return Arg(opener + ",".join(items) + closer)


def json_text(payload: Any) -> Arg:
    """JSON whose every string character outside a plain alphabet is a \\uXXXX escape."""
    return Arg(_json(payload))


def _json(value: Any) -> str:
    if isinstance(value, str):
        return '"' + "".join(_json_char(c) for c in value) + '"'
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_json(str(k))}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json(v) for v in value) + "]"
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value, allow_nan=False)
    raise UnsafeValue("JSON value", f"a {type(value).__name__} is not JSON")


def _json_char(c: str) -> str:
    if c in _JSON_PLAIN:
        return c
    code = ord(c)
    if 0xD800 <= code <= 0xDFFF:
        raise UnsafeValue("JSON text", f"it contains a lone surrogate U+{code:04X}")
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


# Speech text: ASCII outside this set is refused (`'` becomes U+2019 first); any other character
# is kept unless it is a control, format, surrogate, private-use or unassigned one (category C*).
# Non-ASCII is safe byte for byte: no byte of a multi-byte UTF-8 sequence is an ASCII character.
_SPEECH_ASCII = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 " "!\"#%&()*+,-./:;=?@_"
)
_SPEECH_QUOTE = "\u2019"
SPEECH_MAX_CHARS = 1000
# The delimiter of a delimited_command: outside every alphabet above (word, url, JSON, speech).
DELIM = "`"


def speech_text(value: str, what: str = "text") -> Arg:
    """Free text for a TTS engine, normalised (NFC, whitespace runs as one space, trimmed, `'` as
    U+2019), at most SPEECH_MAX_CHARS characters; anything else is refused."""
    if not isinstance(value, str):
        raise UnsafeValue(what, f"it is a {type(value).__name__}, not a string")
    out = []
    for c in unicodedata.normalize("NFC", value):
        if c.isspace():
            out.append(" ")
        elif c == "'":
            out.append(_SPEECH_QUOTE)
        elif c in _SPEECH_ASCII or (ord(c) > 0x7F and not unicodedata.category(c).startswith("C")):
            out.append(c)
        else:
            raise UnsafeValue(what, f"it contains {c!r} (U+{ord(c):04X}), which speech text may not hold")
    text = " ".join("".join(out).split())
    if not text:
        raise UnsafeValue(what, "it is empty")
    if len(text) > SPEECH_MAX_CHARS:
        raise UnsafeValue(what, f"it is longer than {SPEECH_MAX_CHARS} characters")
    return Arg(text)


def arg_list(*args: str, delim: str = "|") -> Arg:
    """`^^|a|b|c`: one call's own delimiter (jambonz does this for uuid_audio_fork), so a JSON
    argument stays whole. Each piece must already be encoded (a word, a URL, JSON text)."""
    for arg in args:
        if not isinstance(arg, Arg):
            word(arg)
    return Arg("^^" + delim + delim.join(args))


def inline_dialplan(*apps: tuple[str, str]) -> Arg:
    """`'app:data,app:data'` for `uuid_transfer … inline`, in single quotes so the plan stays one
    argument. When a data part holds a comma (a `{…}` block), `m:^:` makes `^` the separator.
    Each data part is built from encoded pieces, which hold neither `^` nor `'`."""
    parts = []
    for app, data in apps:
        word(app, "dialplan application")
        if data and not isinstance(data, Arg):
            data = word(data, f"{app} data")
        parts.append(f"{app}:{data}" if data else app)
    if any("," in part for part in parts):
        return Arg("'m:^:" + "^".join(parts) + "'")
    return Arg("'" + ",".join(parts) + "'")


def join(*pieces: str) -> Arg:
    """Pieces of one argument glued together (`playback::` + `{…}` + url); each already encoded
    or a word."""
    for piece in pieces:
        if not isinstance(piece, Arg):
            word(piece)
    return Arg("".join(pieces))


def literal(text: str) -> Arg:
    """Syntax written in the code itself (`&conference(`, `)`), never a value from outside."""
    return Arg(text)


def delimited_command(name: str, *args: str) -> Command:
    """`name ^^`a`b`c`: for a command one of whose arguments holds spaces (speech text), split by
    switch_separate_string on DELIM instead. Each argument is encoded (or a word) as for
    command(), and none can hold DELIM."""
    word(name, "command")
    parts = [arg if isinstance(arg, Arg) else word(arg, f"{name} argument") for arg in args]
    for part in parts:
        if DELIM in part or not part.strip() or part != part.strip():
            raise UnsafeValue(f"{name} argument", f"{part!r} cannot be a delimited argument")
    return Command(f"{name} ^^{DELIM}" + DELIM.join(parts))


def command(name: str, *args: str) -> Command:
    """`name arg arg …`: encoded arguments as they are, anything else must be a word."""
    word(name, "command")
    parts = [arg if isinstance(arg, Arg) else word(arg, f"{name} argument") for arg in args]
    return Command(" ".join([name, *parts]))
