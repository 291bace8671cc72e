"""Write the lab caller's audio: caller.ulaw (headerless 8 kHz PCMU, what SIPp's rtp_stream sends)
and caller.wav (8 kHz mono 16-bit PCM, baresip's aufile source) into the directory given.

One 14 s cycle: 8 s of silence (the demo agent's greeting plays undisturbed), then 2 s of
"speech" (four syllables of a buzzy 180 Hz voice-like tone, RMS far over the demo agent's barge-in
threshold, so it logs a `heard` line), then 4 s of silence. The WAV holds three cycles (baresip's
aufile stops at the end of its file); SIPp loops the raw file. Deterministic, stdlib only:

    python3 docker/softphone/caller-audio.py DIR
"""

from __future__ import annotations

import math
import sys
import wave
from pathlib import Path

RATE = 8000
LEVEL = 0.35  # of full scale


def cycle() -> list[int]:
    samples = [0] * (8 * RATE)
    syllable, gap = int(0.35 * RATE), int(0.15 * RATE)
    for _ in range(4):
        for i in range(syllable):
            envelope = math.sin(math.pi * i / syllable)
            t = i / RATE
            voice = sum(math.sin(2 * math.pi * 180.0 * k * t) / k for k in (1, 2, 3, 4))
            samples.append(int(LEVEL * 32767 * envelope * voice / 2.1))
        samples.extend([0] * gap)
    samples.extend([0] * (14 * RATE - len(samples)))
    return samples


def ulaw(sample: int) -> int:
    """G.711 mu-law of one 16-bit sample (the classic CCITT encoder)."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sample < 0 else sample, clip) + bias
    exponent = max(0, min(7, (magnitude >> 7).bit_length() - 1))
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    one = cycle()
    (out / "caller.ulaw").write_bytes(bytes(ulaw(s) for s in one))
    with wave.open(str(out / "caller.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(b"".join(s.to_bytes(2, "little", signed=True) for s in one * 3))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
