"""mod_conference: rooms, members, the `conference` API and conference::maintenance events.

Member ids are one global counter (esl-captures/06: ids are not reset per conference), the
list is newest-member-first, and `bgdial` answers "+OK Job-UUID: ..." even through `api`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from bridge.sim.arguments import parse_conference_target, parse_var_block, separate_string
from bridge.sim.channels import Channel, new_uuid
from bridge.sim.events import CONFERENCE_CALLING, Headers, SimEvent, channel_basic, channel_data

if TYPE_CHECKING:
    from bridge.sim.core import SwitchCore

log = structlog.get_logger(__name__)
SUBCLASS = "conference::maintenance"

# The conference.conf.xml profiles the simulator runs with (freeswitch-conf/autoload_configs,
# tests/test_freeswitch_conf.py keeps them equal). Only the params that change what the
# simulator does are listed. `verbose-events`: member events carry every channel variable
# (conference_member_add_event_data uses switch_channel_event_set_data instead of the basic
# data); FreeSWITCH's stock profiles leave it off, and the captures were recorded that way.
# `rate`: what `conference list` and json_list show (FreeSWITCH's default is 8000).
PROFILES: dict[str, dict[str, str]] = {"default": {"verbose-events": "true", "rate": "16000"}}
DEFAULT_RATE = 8000

# conference_api.c: the syntax line conference_api_dispatch writes ("%s %s", no newline) when
# a CONF_API_SUB_ARGS_SPLIT command returns an error status.
PLAY_USAGE = "play <file_path> [async|<member_id> [nomux]]"
RELATE_USAGE = "relate <member_id>[,<member_id>] <other_member_id>[,<other_member_id>] [nospeak|nohear|clear]"


@dataclass(slots=True)
class Member:
    id: int
    channel: Channel
    joined: float
    hear: bool = True
    speak: bool = True
    talking: bool = False
    hold: bool = False
    moderator: bool = False
    ghost: bool = False
    endconf: bool = False
    volume_in: int = 0
    volume_out: int = 0
    energy: int = 100
    kicked: bool = False
    relations: dict[int, str] = field(default_factory=dict)
    # The file `conference <c> play <file> <member_id>` is playing to this member alone, if any.
    playing: str | None = None

    def list_flags(self, floor: bool) -> str:
        flags = [f for f, on in (("hear", self.hear), ("speak", self.speak), ("talking", self.talking)) if on]
        if floor:
            flags.append("floor")
        if self.moderator:
            flags.append("moderator")
        if self.ghost:
            flags.append("ghost")
        return "|".join(flags)


@dataclass(slots=True)
class Conference:
    name: str
    profile: str
    uuid: str
    created: float
    members: list[Member] = field(default_factory=list)  # newest first, like `conference list`
    floor: Member | None = None
    locked: bool = False
    rate: int = DEFAULT_RATE
    # Sticky CFLAG_ANSWERED / CFLAG_ENFORCE_MIN: set when the first (answered) member joins
    # (mod_conference.c conference_function, conference_member.c with min = 1).
    answered: bool = False
    enforce_min: bool = False

    @property
    def size(self) -> int:
        return sum(1 for m in self.members if not m.ghost)


class Conferences:
    def __init__(self, core: SwitchCore) -> None:
        self.core = core
        self.rooms: dict[str, Conference] = {}
        self.profiles: dict[str, dict[str, str]] = {name: dict(p) for name, p in PROFILES.items()}
        self._next_member_id = 0

    # ------------------------------------------------------------ events

    def _conf_headers(self, conf: Conference, size: int | None = None) -> Headers:
        return [
            ("Conference-Name", conf.name),
            ("Conference-Domain", self.core.events.ipv4),
            ("Conference-Size", str(conf.size if size is None else size)),
            ("Conference-Ghosts", str(sum(1 for m in conf.members if m.ghost))),
            ("Conference-Profile-Name", conf.profile),
            ("Conference-Unique-ID", conf.uuid),
        ]

    def verbose(self, conf: Conference) -> bool:
        return self.profiles.get(conf.profile, {}).get("verbose-events", "").lower() in ("true", "yes", "1")

    def _member_headers(self, conf: Conference, m: Member) -> Headers:
        data = channel_data(m.channel) if self.verbose(conf) else channel_basic(m.channel)
        return [
            ("Floor", "true" if conf.floor is m else "false"),
            *data,
            ("Video", "false"),
            ("Hear", _tf(m.hear)),
            ("See", "true"),
            ("Speak", _tf(m.speak)),
            ("Talking", _tf(m.talking)),
            ("Mute-Detect", "false"),
            ("Hold", _tf(m.hold)),
            ("Member-ID", str(m.id)),
            ("Member-Type", "moderator" if m.moderator else "member"),
            ("Member-Ghost", _tf(m.ghost)),
            ("Energy-Level", str(m.energy)),
            ("Current-Energy", "0"),
        ]

    def _event(
        self, conf: Conference, action: str, member: Member | None = None, *, size: int | None = None
    ) -> SimEvent:
        ev = self.core.events.new("CUSTOM", subclass=SUBCLASS, calling=CONFERENCE_CALLING.get(action))
        ev.extend(self._conf_headers(conf, size))
        if member is not None:
            ev.extend(self._member_headers(conf, member))
        return ev

    def fire(
        self,
        conf: Conference,
        action: str,
        member: Member | None = None,
        *,
        size: int | None = None,
        post: Headers = (),
    ) -> None:
        ev = self._event(conf, action, member, size=size)
        ev.add("Action", action)
        ev.extend(list(post))
        self.core.fire(ev)

    def _fire_floor_change(self, conf: Conference, old: Member | None, new: Member) -> None:
        ev = self.core.events.new("CUSTOM", subclass=SUBCLASS, calling=CONFERENCE_CALLING["floor-change"])
        ev.extend(self._conf_headers(conf))
        ev.add("Action", "floor-change")
        ev.add("Old-ID", str(old.id) if old else "none")
        ev.extend(self._conf_headers(conf))
        ev.extend(self._member_headers(conf, new))
        ev.add("New-ID", str(new.id))
        self.core.fire(ev)

    # ------------------------------------------------------------ rooms and members

    def get_or_create(self, name: str, profile: str) -> Conference:
        conf = self.rooms.get(name)
        if conf is None:
            rate = _atoi(self.profiles.get(profile, {}).get("rate", "")) or DEFAULT_RATE
            conf = Conference(name=name, profile=profile, uuid=new_uuid(), created=time.time(), rate=rate)
            self.rooms[name] = conf
            self.fire(conf, "conference-create")
        return conf

    def member_of(self, ch: Channel) -> tuple[Conference, Member] | None:
        conf = self.rooms.get(ch.conference or "")
        if conf is None:
            return None
        for m in conf.members:
            if m.channel is ch:
                return conf, m
        return None

    async def run_member(self, ch: Channel, data: str) -> None:
        """The `conference` application: join, stay until kicked, hung up or transferred."""
        from bridge.sim.apps import idle

        target = parse_conference_target(data)
        if not target.name:
            return
        existing = self.rooms.get(target.name)
        if existing is not None and existing.locked:
            log.info("sim_conference_locked", conference=target.name, uuid=ch.uuid)
            return
        if not ch.answered:
            ch.answer()
        conf = self.get_or_create(target.name, target.profile)
        ch.set_codec(write=False, function="switch_core_session_set_read_codec")
        self._next_member_id += 1
        m = Member(
            id=self._next_member_id,
            channel=ch,
            joined=time.time(),
            hear="deaf" not in target.flags,
            speak="mute" not in target.flags,
            moderator="moderator" in target.flags,
            ghost="ghost" in target.flags,
            endconf="endconf" in target.flags,
        )
        conf.members.insert(0, m)
        conf.answered = True
        conf.enforce_min = conf.enforce_min or conf.size >= 1
        ch.conference, ch.member_id = conf.name, m.id
        ch.variables.update(
            {"conference_name": conf.name, "conference_uuid": conf.uuid, "conference_member_id": str(m.id)}
        )
        self.fire(conf, "add-member", m)
        if conf.floor is None and not m.ghost:
            conf.floor = m
            self._fire_floor_change(conf, None, m)
        if ch.speaking and m.speak:
            m.talking = True
            self.fire(conf, "start-talking", m)
        try:
            await idle(ch, done=lambda: m.kicked)
        finally:
            self._leave(conf, m)

    def _leave(self, conf: Conference, m: Member) -> None:
        if m not in conf.members:
            return
        conf.members.remove(m)
        if conf.floor is m:
            conf.floor = None
        ch = m.channel
        self.fire(conf, "del-member", m)
        if ch.alive:
            ch.set_codec(write=False, function="switch_core_session_set_read_codec")
        ch.conference, ch.member_id = None, None
        for key in ("conference_name", "conference_uuid", "conference_member_id"):
            ch.variables.pop(key, None)
        if m.endconf or (m.moderator and "endconf" in ch.var("conference_flags")):
            for other in list(conf.members):
                other.kicked = True
                other.channel.interrupt()
        if not conf.members:
            self.fire(conf, "conference-destroy")
            self.rooms.pop(conf.name, None)

    # ------------------------------------------------------------ the conference API

    async def api(self, args: str) -> str:
        argv = separate_string(args, " ", 16)
        if not argv or argv[0] in ("list", "json_list"):
            return self._list_all(argv[0] if argv else "list", argv[1:])
        name = argv[0]
        sub = argv[1].lower() if len(argv) > 1 else ""
        rest = argv[2:]
        if sub in ("bgdial", "dial"):
            return await self._dial(name, sub, args)
        conf = self.rooms.get(name)
        if conf is None:
            return f"-ERR Conference {name} not found\n"
        if sub == "list":
            if rest and rest[0] == "count":
                return f"{conf.size}\n"
            return "".join(self._member_line(conf, m) for m in conf.members)
        if sub == "json_list":
            return json.dumps([self._json(conf)]) + "\n"
        if sub in ("lock", "unlock"):
            conf.locked = sub == "lock"
            self.fire(conf, sub)
            return f"OK {conf.name} {sub}ed\n"
        if sub == "relate":
            return self._relate(conf, rest)
        if sub == "play":
            return self._play(conf, rest)
        handler = {
            "kick": self._kick,
            "hup": self._hup,
            "mute": self._mute,
            "unmute": self._unmute,
            "deaf": self._deaf,
            "undeaf": self._undeaf,
            "hold": self._hold,
            "unhold": self._unhold,
        }.get(sub)
        if handler is None:
            return "-ERR Unsupported command\n" if sub else f"-USAGE: conference {name} <command>\n"
        if not rest:
            return "-ERR Invalid member selector\n"
        members = self._select(conf, rest[0])
        if members is None:
            return f"-ERR Non-Existant ID {rest[0]}\n" if rest[0].isdigit() else "-ERR Non-Existant member\n"
        return "".join(handler(conf, m) for m in members)

    def _select(self, conf: Conference, selector: str) -> list[Member] | None:
        if selector == "all":
            return list(conf.members)
        if selector == "last":
            return conf.members[:1] or None
        if selector == "non_moderator":
            return [m for m in conf.members if not m.moderator]
        if "=" in selector:
            var, _, value = selector.partition("=")
            found = [
                m
                for m in conf.members
                if (m.channel.uuid if var == "uuid" else m.channel.variables.get(var)) == value
            ]
            return found[:1] or None
        if selector.isdigit():
            found = [m for m in conf.members if m.id == int(selector)]
            return found or None
        return None

    def _member_line(self, conf: Conference, m: Member) -> str:
        p = m.channel.profile
        name = (p.caller_id_name or "") if p else ""
        number = (p.caller_id_number or "") if p else ""
        flags = m.list_flags(conf.floor is m)
        fields = (
            m.id,
            m.channel.name,
            m.channel.uuid,
            name,
            number,
            flags,
            m.volume_in,
            m.volume_out,
            m.energy,
        )
        return ";".join(str(f) for f in fields) + "\n"

    def _list_all(self, kind: str, rest: list[str]) -> str:
        if kind == "json_list":
            return json.dumps([self._json(c) for c in self.rooms.values()]) + "\n"
        if not self.rooms:
            return "+OK No active conferences.\n"
        out = []
        for conf in self.rooms.values():
            # conference_api_sub_list: "+OK Conference %s (%u member%s rate: %u%s flags: " then the
            # set flags in its order joined by "|" ("none" if none), then ")\n".
            members = f"{conf.size} member{'' if conf.size == 1 else 's'}"
            rate = f"{conf.rate}{' locked' if conf.locked else ''}"
            out.append(f"+OK Conference {conf.name} ({members} rate: {rate} flags: {self._flags(conf)})\n")
            out.extend(self._member_line(conf, m) for m in conf.members)
        return "".join(out)

    @staticmethod
    def _flags(conf: Conference) -> str:
        """The CFLAGs a conference started by the `conference` application has: running, dynamic,
        exit_sound, enter_sound and json_status from the start (conference_new, conference_function),
        answered and enforce_min once a member joined, locked while locked."""
        flags = [
            ("locked", conf.locked),
            ("running", True),
            ("answered", conf.answered),
            ("enforce_min", conf.enforce_min),
            ("dynamic", True),
            ("exit_sound", True),
            ("enter_sound", True),
            ("json_status", True),
        ]
        return "|".join(name for name, on in flags if on) or "none"

    def _json(self, conf: Conference) -> dict[str, object]:
        now = time.time()
        return {
            "conference_name": conf.name,
            "member_count": conf.size,
            "ghost_count": sum(1 for m in conf.members if m.ghost),
            "rate": conf.rate,
            "run_time": int(now - conf.created),
            "conference_uuid": conf.uuid,
            "machine_name": self.core.settings.switchname,
            "running": True,
            "answered": conf.answered,
            "enforce_min": conf.enforce_min,
            "dynamic": True,
            "locked": conf.locked,
            "exit_sound": True,
            "enter_sound": True,
            "members": [
                {
                    "type": "caller",
                    "id": m.id,
                    "flags": {
                        "can_hear": m.hear,
                        "can_see": True,
                        "can_speak": m.speak,
                        "hold": m.hold,
                        "mute_detect": False,
                        "talking": m.talking,
                        "has_video": False,
                        "video_bridge": False,
                        "has_floor": conf.floor is m,
                        "is_moderator": m.moderator,
                        "end_conference": m.endconf,
                        "is_ghost": m.ghost,
                    },
                    "uuid": m.channel.uuid,
                    "caller_id_name": (m.channel.profile.caller_id_name or "") if m.channel.profile else "",
                    "caller_id_number": (m.channel.profile.caller_id_number or "")
                    if m.channel.profile
                    else "",
                    "join_time": int(now - m.joined),
                    "last_talking": 0,
                    "energy": m.energy,
                    "volume_in": m.volume_in,
                    "volume_out": m.volume_out,
                    "output-volume": m.volume_out,
                    "input-volume": m.volume_in,
                }
                for m in conf.members
            ],
        }

    def _kick(self, conf: Conference, m: Member) -> str:
        self.fire(conf, "kick-member", m)
        m.kicked = True
        m.channel.interrupt()
        return f"+OK kicked {m.id}\n"

    def _hup(self, conf: Conference, m: Member) -> str:
        self.fire(conf, "hup-member", m)
        m.kicked = True
        m.channel.hangup("NORMAL_CLEARING")
        return f"+OK hup {m.id}\n"

    def _mute(self, conf: Conference, m: Member) -> str:
        m.speak = False
        m.talking = False
        self.fire(conf, "mute-member", m)
        return f"+OK mute {m.id}\n"

    def _unmute(self, conf: Conference, m: Member) -> str:
        m.speak = True
        self.fire(conf, "unmute-member", m)
        return f"+OK unmute {m.id}\n"

    def _deaf(self, conf: Conference, m: Member) -> str:
        m.hear = False
        self.fire(conf, "deaf-member", m)
        return f"+OK deaf {m.id}\n"

    def _undeaf(self, conf: Conference, m: Member) -> str:
        m.hear = True
        self.fire(conf, "undeaf-member", m)
        return f"+OK undeaf {m.id}\n"

    def _hold(self, conf: Conference, m: Member) -> str:
        m.hold = True
        self.fire(conf, "hold-member", m)
        return f"+OK hold {m.id}\n"

    def _unhold(self, conf: Conference, m: Member) -> str:
        m.hold = False
        self.fire(conf, "unhold-member", m)
        return f"+OK unhold {m.id}\n"

    def _member(self, conf: Conference, member_id: int) -> Member | None:
        """conference_member_get: by id; 0 and members being kicked are never found."""
        if member_id <= 0:
            return None
        return next((m for m in conf.members if m.id == member_id and not m.kicked), None)

    def _member_by_str(self, conf: Conference, id_str: str) -> Member | None:
        """conference_member_get_by_str: `var=value` (first member whose variable matches) or atoi."""
        if "=" in id_str:
            found = self._select(conf, id_str)
            return found[0] if found else None
        return self._member(conf, _atoi(id_str))

    def _relate(self, conf: Conference, rest: list[str]) -> str:
        """conference_api_sub_relate; rest is argv[2:]."""
        if len(rest) <= 1:
            if not any(m.relations for m in conf.members):
                return "+OK No relationships\n"
            if not rest:
                return ""  # argc == 2 with relationships prints nothing
            out = []
            for member_id in (_atoi(i) for i in separate_string(rest[0], ",", 100)):
                for m in conf.members:
                    if member_id > 0 and m.id != member_id:
                        continue
                    # conference_member_add_relationship prepends: newest first
                    out.extend(
                        f"{m.id} -> {other} {_relation_flags(action)}\n"
                        for other, action in reversed(m.relations.items())
                    )
            return "".join(out)
        if len(rest) == 2:
            return RELATE_USAGE
        action = rest[2]
        clear = action.lower() == "clear"
        if not (clear or any(word in action for word in ("nospeak", "nohear", "sendvideo"))):
            return RELATE_USAGE
        out = []
        for a in (_atoi(i) for i in separate_string(rest[0], ",", 100)):
            for b in (_atoi(i) for i in separate_string(rest[1], ",", 100)):
                member = self._member(conf, a)
                if clear:
                    # _conference_api_sub_relate_clear_member_relationship: only `a` must exist;
                    # b == 0 clears all of a's relationships.
                    if member is None:
                        out.append(f"-ERR relationship {_u32(a)}->{_u32(b)} not found.\n")
                        continue
                    for other in [o for o in member.relations if b == 0 or o == b]:
                        del member.relations[other]
                    out.append(f"+OK relationship {_u32(a)}->{_u32(b)} cleared.\n")
                    continue
                other_member = self._member(conf, b) if member is not None else None
                if member is None or other_member is None:
                    out.append(f"-ERR relationship {_u32(a)}->{_u32(b)} not found.\n")
                    continue
                member.relations[other_member.id] = action
                if "nospeak" in action:
                    member.talking = False
                out.append(f"+OK {_u32(a)}->{_u32(b)} {action} set\n")
        return "".join(out)

    def _play(self, conf: Conference, rest: list[str]) -> str:
        """conference_api_sub_play; rest is argv[2:], so argc is len(rest) + 2."""
        argc = len(rest) + 2
        is_async = False
        if (argc == 4 and rest[1].lower() == "async") or (argc == 5 and rest[2].lower() == "async"):
            argc -= 1
            is_async = True
        if argc < 3:
            return PLAY_USAGE
        path = rest[0]
        member: Member | None = None
        if argc >= 4:
            member = self._member_by_str(conf, rest[1])
            if member is None:
                # "-ERR Member: %u not found.\n" is given the id *string*: it prints the low 32
                # bits of a pointer. The simulator prints the low 32 bits of its own string's address.
                return f"-ERR Member: {id(rest[1]) & 0xFFFFFFFF} not found.\n{PLAY_USAGE}"
        response, duration = self.core.playback_outcome(path)
        if response != "FILE PLAYED":
            return f"-ERR (play) File: {path} not found.\n"
        action = "play-file-member" if member else "play-file"
        post: Headers = [("File", path)] if member else [("File", path), ("Async", _tf(is_async))]
        if member is not None:
            member.playing = path
        self.fire(conf, action, member, post=post)

        async def done() -> None:
            await asyncio.sleep(duration if duration is not None else 3600)
            if member is not None:
                if member not in conf.members:
                    return  # the member left: its file handle closed with it
                if member.playing == path:
                    member.playing = None
            if conf.name in self.rooms:
                self.fire(conf, f"{action}-done", member, post=[("File", path), ("Async", "false")])

        self.core.spawn(done(), name=f"conference-play:{conf.name}")
        if member:
            return f"+OK (play) Playing file {path} to member {member.id}\n"
        return f"+OK (play) Playing file {path}\n"

    async def _dial(self, name: str, sub: str, raw: str) -> str:
        """`conference <room> [bg]dial <endpoint> <cid_num> <cid_name>` dials a leg that joins the room."""
        _, _, rest = raw.strip().partition(" ")
        _, _, rest = rest.strip().partition(" ")
        argv = separate_string(rest, " ", 4)
        if not argv:
            usage = "<endpoint_module_name>/<destination> <callerid number> <callerid name>"
            return f"-ERR Usage: conference {name} {sub} {usage}\n"
        variables, endpoint = parse_var_block(argv[0])
        cid_num = argv[1] if len(argv) > 1 else None
        cid_name = argv[2] if len(argv) > 2 else None
        job = new_uuid()
        if sub == "dial":
            cause = await self._outcall(name, endpoint, variables, cid_num, cid_name, None)
            return f"+OK Call Requested: result: [{cause}]\n"
        self.core.spawn(
            self._outcall(name, endpoint, variables, cid_num, cid_name, job), name=f"bgdial:{job}"
        )
        return f"+OK Job-UUID: {job}\n"

    async def _outcall(
        self,
        name: str,
        endpoint: str,
        variables: dict[str, str],
        cid_num: str | None,
        cid_name: str | None,
        job: str | None,
    ) -> str:
        from bridge.sim.apps import start_flow
        from bridge.sim.originate import dial

        result = await dial(self.core, endpoint, variables, cid_name=cid_name, cid_num=cid_num)
        cause = "SUCCESS" if result.ok else (result.cause or "NORMAL_TEMPORARY_FAILURE")
        conf = self.rooms.get(name)
        if conf is None and result.ok:
            conf = self.get_or_create(name, "default")
        if conf is not None:
            post: Headers = [("Result", cause)]
            if job:
                post.append(("Job-UUID", job))
            if result.channel is not None:
                post.append(("Peer-UUID", result.channel.uuid))
            self.fire(conf, "bgdial-result" if job else "dial-result", post=post)
        if result.ok and result.channel is not None:
            start_flow(result.channel, [("conference", name)], routing=False, enter_execute=True)
        return cause


def _tf(value: bool) -> str:
    return "true" if value else "false"


def _atoi(text: str) -> int:
    """C atoi: leading blanks, an optional sign, then digits; 0 if there are none."""
    s = text.lstrip(" \t\n\r\f\v")
    sign = -1 if s[:1] == "-" else 1
    s = s[1:] if s[:1] in ("+", "-") else s
    digits = ""
    for c in s:
        if not c.isdigit():
            break
        digits += c
    return sign * int(digits) if digits else 0


def _u32(value: int) -> int:
    """An int printed with %u (a uint32_t member id)."""
    return value & 0xFFFFFFFF


def _relation_flags(action: str) -> str:
    """_conference_api_sub_relate_show_member_relationships: "%s%s%s" of SPEAK/NOSPEAK, HEAR/NOHEAR,
    SENDVIDEO/NOSENDVIDEO, each with a trailing space."""
    speak = "NOSPEAK " if "nospeak" in action else "SPEAK "
    hear = "NOHEAR " if "nohear" in action else "HEAR "
    video = "SENDVIDEO " if "sendvideo" in action else "NOSENDVIDEO "
    return speak + hear + video
