"""Coverage-guided fuzzing of the byte parsers with atheris (libFuzzer), beside
hypothesis: ``make fuzz`` runs this once per target in its own process.

    python -m tests.fuzz.libfuzzer TARGET RUNS CORPUS_DIR

The contract is the one of tests/fuzz/targets.py (the same ``check`` functions);
libFuzzer feeds bytes, mapped onto each target's input below, and keeps the
inputs that reach new code of ``nhlink_dbus`` (instrumented at import). Seeds are
the targets' own, written into CORPUS_DIR (the caller's, which it removes: libFuzzer
ends the process without Python's clean-up). A broken contract ends the run
with the input saved as ``crash-*`` in the working directory; ``Done N runs`` is
the count ``make fuzz`` reports. (atheris found the short Zip64 record of
tests/core/test_fw_archive_extra.py that hypothesis's edits had missed.)
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["nhlink_dbus"]):
    from tests.fuzz import targets as t


def _hub(data: bytes) -> Any:
    try:
        payload = json.loads(data[1:])
    except (ValueError, RecursionError):
        return None
    return t._HUB_EVENTS[data[0] % len(t._HUB_EVENTS)] if data else "update", payload


def _blocks(data: bytes) -> Any:
    half = len(data) // 2
    return (data[:half], data[half:], data[0] % 3) if data else None


# target -> (bytes to its input (None: skip), seeds as bytes)
MAPPINGS: dict[str, tuple[Callable[[bytes], Any], Callable[[], list[bytes]]]] = {
    "phoenix-frames": (lambda data: data, t._frame_seeds),
    "hub-payloads": (
        _hub,
        lambda: [b"\x00" + json.dumps(p).encode() for p in t._payload_seeds()],
    ),
    "meta-conf": (lambda data: data, lambda: [t._small_fw()[1]]),
    "fw-zip-stream": (lambda data: (data, [], True), lambda: [t._small_fw()[0]]),
    "uboot-env": (
        _blocks,
        lambda: [t.uboot_env.encode({"a": "1", "nerves_fw_active": "a"}, 128) * 2],
    ),
    "toml-config": (
        lambda data: data.decode("utf-8", "replace"),
        lambda: [t._CONFIG_SEED.replace("{key}", t._small_fw()[2]).encode()],
    ),
}


def main(name: str, runs: int, corpus: Path) -> None:
    logging.disable(logging.CRITICAL)  # parsers log what they drop, 10^5 times
    to_input, seeds = MAPPINGS[name]
    check = t.TARGETS[name].check

    def one(data: bytes) -> None:
        value = to_input(data)
        if value is not None:
            check(value)

    for n, seed in enumerate(seeds()):
        (corpus / f"seed-{n}").write_bytes(seed)
    atheris.Setup([sys.argv[0], f"-runs={runs}", "-max_len=8192", str(corpus)], one)
    atheris.Fuzz()  # exits the process


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
