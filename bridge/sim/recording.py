"""`uuid_record` in the simulator: the WAV file a recording leaves, as FreeSWITCH 1.10.12 writes it.

What the real switch does (src/switch_ivr_async.c record_callback, src/switch_core_io.c):

- `start`: a media bug that writes every 20 ms frame to the file, 16-bit PCM WAV at the channel's
  rate (`record_sample_rate` overrides it); with `RECORD_STEREO=true`, two channels: left is what
  the channel reads (the caller), right what it writes (what the caller hears: the AI).
- `mask`: the frames are still written, as zeros (`mask ? null_data : data`), so a masked stretch is
  silence of its real length in the file.
- `pause`: the bug is skipped (`SMBF_PAUSE`): nothing is written, so a paused stretch is *absent*
  from the file, which is that much shorter than the call.
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
        """What the file holds, in order: (frames, the caller's tone is heard). Paused time is left out."""
        out: list[tuple[int, bool]] = []
        points = [*self.changes, (until, False, False, False)]
        written = 0.0
        frames_so_far = 0
        for (at, paused, masked, muted), (then, *_rest) in itertools.pairwise(points):
            if paused or then <= at:
                continue
            written += then - at
            # Whole frames only (FreeSWITCH writes 20 ms at a time), rounded on the running total
            # so many short stretches do not lose a frame each.
            total = int(written * 1000 // FRAME_MS) * self.rate * FRAME_MS // 1000
            if total > frames_so_far:
                out.append((total - frames_so_far, not (masked or muted)))
                frames_so_far = total
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
