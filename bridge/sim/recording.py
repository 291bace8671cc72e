"""`uuid_record` in the simulator: the WAV file a recording leaves, as FreeSWITCH 1.10.12 writes it.

What the real switch does (src/switch_ivr_async.c record_callback, src/switch_core_io.c):

- `start`: a media bug that writes every 20 ms frame to the file, 16-bit PCM WAV at the channel's
  rate (`record_sample_rate` overrides it); with `RECORD_STEREO=true`, two channels: left is what
  the channel reads (the caller), right what it writes (what the caller hears: the AI).
- `mask`: the frames are still written, as zeros (`mask ? null_data : data`), so a masked stretch is
  silence of its real length in the file.
- `pause`: the bug is skipped (`SMBF_PAUSE`): nothing is written, so a paused stretch is *absent*
  from the file, which is that much shorter than the call.
- the pre-buffer: the bug holds back `RECORD_PRE_BUFFER_FRAMES` frames (25, i.e. 0.5 s, unless the
  variable is set; 0 turns it off) before it writes the first (switch_core_media_bug_read), and
  the backlog stays: the file lags the call by that much. So its last 0.5 s are never written, and
  `mask`, checked when a frame is written, silences what was said 0.5 s *before* the mask and lets
  the masked stretch's last 0.5 s through. Seen on 1.10.12: a caller's 1 s tone / 1 s silence,
  mask from 2.01 s to 3.02 s after start: the file was 5.52 s of 6.0, the tone at 2.52 s in clear;
  with RECORD_PRE_BUFFER_FRAMES=0, 6.02 s and the tone masked from 2.51 s to 3.02 s. A read mute
  acts on the frame as it is read, so it is not shifted.
- a caller muted on the read side (`uuid_audio … start read mute`) is silence for every bug on the
  channel, the recording's left channel included.
- `stop` (or the hangup): the file is closed; `record_seconds`/`record_ms` are what was written.

The simulator has no audio of its own, so the caller "says" a steady tone (TONE_HZ) on the left and
the right is silence; the file is written when the recording stops, before RECORD_STOP fires, so
whoever reacts to RECORD_STOP finds it complete.
"""

from __future__ import annotations

import itertools
import math
import struct
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

TONE_HZ = 400  # a whole number of periods in a 20 ms frame at 8, 16 and 48 kHz: frames join seamlessly
TONE_AMPLITUDE = 8000
FRAME_MS = 20


@dataclass(slots=True)
class Recording:
    path: str
    started: float
    rate: int = 8000
    stereo: bool = False
    paused: bool = False
    masked: bool = False
    muted: bool = False
    # Frames the bug holds back (RECORD_PRE_BUFFER_FRAMES); the channel passes FreeSWITCH's 25
    # when the variable is not set.
    pre_buffer_frames: int = 0
    # (monotonic time, paused, masked, muted) at start and at every change since.
    changes: list[tuple[float, bool, bool, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.changes.append((self.started, self.paused, self.masked, self.muted))

    def set(
        self, *, paused: bool | None = None, masked: bool | None = None, muted: bool | None = None
    ) -> None:
        self.paused = self.paused if paused is None else paused
        self.masked = self.masked if masked is None else masked
        self.muted = self.muted if muted is None else muted
        self.changes.append((time.monotonic(), self.paused, self.masked, self.muted))

    def segments(self, until: float) -> list[tuple[int, bool]]:
        """What the file holds, in order: (samples, the caller's tone is heard), whole 20 ms frames.
        Paused time is left out; the pre-buffer's lag takes the last frames off and shifts masks."""
        points = [*self.changes, (until, False, False, False)]
        spans = [
            (at, then)
            for (at, paused, *_), (then, *_) in itertools.pairwise(points)
            if not paused and then > at
        ]
        lag = self.pre_buffer_frames * FRAME_MS / 1000
        frames = int(max(0.0, sum(b - a for a, b in spans) - lag) * 1000 // FRAME_MS)

        def real(u: float) -> float:
            """The time of `u` seconds into the unpaused timeline."""
            for a, b in spans:
                if u < b - a:
                    return a + u
                u -= b - a
            return until

        def state(t: float) -> tuple[bool, bool]:
            """(masked, muted) at time t."""
            current = self.changes[0]
            for change in self.changes:
                if change[0] > t:
                    break
                current = change
            return current[2], current[3]

        per_frame = self.rate * FRAME_MS // 1000
        out: list[tuple[int, bool]] = []
        for k in range(frames):
            u = (k + 0.5) * FRAME_MS / 1000  # the middle of the frame
            heard = not state(real(u))[1] and not state(real(u + lag))[0]
            if out and out[-1][1] == heard:
                out[-1] = (out[-1][0] + per_frame, heard)
            else:
                out.append((per_frame, heard))
        return out

    def write(self, until: float) -> int:
        """Write the WAV file; returns the frames (samples per channel) written. A path that cannot
        be written is logged and skipped (the real switch would have refused `start`)."""
        segments = self.segments(until)
        channels = 2 if self.stereo else 1
        per_frame = self.rate * FRAME_MS // 1000
        tone = _tone_block(self.rate, per_frame, channels)
        silence = bytes(per_frame * channels * 2)
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            with wave.open(self.path, "wb") as out:
                out.setnchannels(channels)
                out.setsampwidth(2)
                out.setframerate(self.rate)
                for frames, heard in segments:
                    block = tone if heard else silence
                    whole, rest = divmod(frames, per_frame)
                    out.writeframesraw(block * whole + block[: rest * channels * 2])
        except OSError as exc:
            log.warning("sim_recording_not_written", path=self.path, error=str(exc))
        return sum(frames for frames, _ in segments)


def _tone_block(rate: int, frames: int, channels: int) -> bytes:
    """One 20 ms frame: the tone on the left (the caller), silence on the right."""
    samples = []
    for i in range(frames):
        value = int(TONE_AMPLITUDE * math.sin(2 * math.pi * TONE_HZ * i / rate))
        samples.append(value)
        if channels == 2:
            samples.append(0)
    return struct.pack(f"<{len(samples)}h", *samples)


def pre_buffer_frames(value: str | None) -> int:
    """switch_ivr_record_session: RECORD_PRE_BUFFER_FRAMES, atoi'd, used when > 0; unset: 25.
    Set to 0 (or anything not a positive number) it leaves the bug without a pre-buffer."""
    if value is None:
        return 25
    digits = ""
    for c in value.strip():
        if not c.isdigit():
            break
        digits += c
    return int(digits) if digits else 0
