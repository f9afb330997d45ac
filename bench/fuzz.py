"""Coverage-guided fuzzing (atheris, libFuzzer) of the decoders that read other people's bytes.

    .venv/bin/pip install atheris
    .venv/bin/python bench/fuzz.py hj212 -atheris_runs=200000        # the HJ 212 frame decoder
    .venv/bin/python bench/fuzz.py payload -max_total_time=60         # the MQTT payload decoder

Any exception other than the decoder's own explained rejection (FrameError,
PayloadError) is a crash that libFuzzer reports with the input that caused it.
Prints the number of inputs run at the end (libFuzzer's own statistics line).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports():
    from drivers.mqtt_decode import PayloadError, decode
    from telemetry.hj212.codec import FrameError, FrameReader, decode_frame

NOW = 1_764_000_000 * 10**9


def hj212(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_frame(data)
    reader = FrameReader()
    for frame in reader.feed(data):
        with contextlib.suppress(FrameError):
            decode_frame(frame)


def payload(data: bytes) -> None:
    for fmt in ("auto", "json", "batch", "number"):
        with contextlib.suppress(PayloadError):
            decode(data, NOW, fmt)  # type: ignore[arg-type]


def main() -> None:
    targets = {"hj212": hj212, "payload": payload}
    if len(sys.argv) < 2 or sys.argv[1] not in targets:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(targets)}}} [libFuzzer options]")
    target = targets[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
