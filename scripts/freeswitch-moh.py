"""Write freeswitch-conf/sounds/music/8000/bridge-moh.wav: the lab's music on hold.

Four soft chimes (C5 E5 G5 E5, one a second, each fading out), 8 kHz mono 16-bit PCM, 4 s.
Deterministic: running it again writes the same bytes. Run with any python3:
    python3 scripts/freeswitch-moh.py
"""

from __future__ import annotations

import math
import struct
import sys
import wave
from pathlib import Path

RATE = 8000
NOTES_HZ = (523.25, 659.25, 783.99, 659.25)
AMPLITUDE = 0.12  # of full scale: quiet, it plays under a held call
OUT = Path(__file__).resolve().parent.parent / "freeswitch-conf/sounds/music/8000/bridge-moh.wav"


def samples() -> bytes:
    out = bytearray()
    for freq in NOTES_HZ:
        for n in range(RATE):
            t = n / RATE
            envelope = math.exp(-3.0 * t) * min(1.0, n / 80)  # 10 ms attack, then a decay
            tone = math.sin(2 * math.pi * freq * t) + 0.3 * math.sin(4 * math.pi * freq * t)
            out += struct.pack("<h", round(32767 * AMPLITUDE * envelope * tone / 1.3))
    return bytes(out)


def main(path: Path = OUT) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(samples())
    print(path)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
