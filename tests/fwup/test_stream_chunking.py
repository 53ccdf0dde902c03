"""The archive arriving in any slicing gives the same result (hypothesis).

Runs the core applier in-process on an in-memory target: for random chunk
sizes the image, the warnings and the outcome equal those of a straight read,
and progress stays strictly increasing.
"""

from __future__ import annotations

import hashlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nhlink_dbus.core.block_cache import BlockCache
from nhlink_dbus.core.fwup_apply import ApplyEngine, ApplyOptions
from nhlink_dbus.errors import NhlinkError
from nhlink_dbus.fwup.signature import check_signature, parse_public_key
from tests.fwup.expect_records import FIXTURES

KEY = parse_public_key((FIXTURES / "fwup-key.pub").read_text())
SIZE = 64 << 20


class MemoryDevice:
    def __init__(self, data: bytes | None = None) -> None:
        self.data = bytearray(data) if data is not None else bytearray(SIZE)

    def pread(self, size: int, offset: int) -> bytes:
        return bytes(self.data[offset : offset + size])

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        end = offset + len(data)
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = data


class Listener:
    def __init__(self) -> None:
        self.percents: list[int] = []
        self.warnings: list[str] = []

    def progress(self, percent: int) -> None:
        self.percents.append(percent)

    def warning(self, text: str) -> None:
        self.warnings.append(text)


def apply(
    fw: bytes, task: str, cuts: list[int], base: bytes | None = None
) -> tuple[str, str, list[str]]:
    dev = MemoryDevice(base)
    listener = Listener()
    applier = ApplyEngine(
        ApplyOptions(task=task, public_keys=[KEY], total_blocks=SIZE // 512),
        BlockCache(dev),
        listener,
        check_signature,
    )
    outcome = "ok"
    try:
        pos = 0
        for point in [*cuts, len(fw)]:
            cut = min(max(point, pos), len(fw))
            applier.feed(fw[pos:cut])
            pos = cut
            if applier.done:
                break
        applier.finish()
    except NhlinkError as exc:
        outcome = str(exc)
    assert listener.percents == sorted(set(listener.percents))
    assert all(0 < p < 100 for p in listener.percents)
    return outcome, hashlib.sha256(dev.data).hexdigest(), listener.warnings


def cut_points(size: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(min_value=0, max_value=size), max_size=40).map(sorted)


SIMPLE = (FIXTURES / "simple.fw").read_bytes()
AB = (FIXTURES / "ab.fw").read_bytes()
CORRUPT = (FIXTURES / "corrupt-resource.fw").read_bytes()
SIMPLE_REF = apply(SIMPLE, "upgrade", [])
AB_REF = apply(AB, "complete", [])
CORRUPT_REF = apply(CORRUPT, "upgrade", [])


def test_references_match_real_fwup() -> None:
    assert SIMPLE_REF[:2] == (
        "ok",
        "6540ebd8d4dc1883f3a4b7dea8ec00379afc5bcc4e6897293d91f8bd5688db40",
    )
    assert AB_REF[:2] == ("ok", "c3d9d6767375b1311a9911721071cae8c41b770247febeb16df4b241b2a38137")
    assert CORRUPT_REF[0] == "raw_write detected blake2b mismatch on 'rootfs.img'"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=cut_points(len(SIMPLE)))
def test_simple_any_slicing(cuts: list[int]) -> None:
    assert apply(SIMPLE, "upgrade", cuts) == SIMPLE_REF


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=cut_points(len(AB)))
def test_ab_complete_any_slicing(cuts: list[int]) -> None:
    assert apply(AB, "complete", cuts) == AB_REF


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=cut_points(len(CORRUPT)))
def test_corrupt_any_slicing_same_error(cuts: list[int]) -> None:
    outcome, _sha, warnings = apply(CORRUPT, "upgrade", cuts)
    # Which segments reached the target depends on the slicing (as in fwup);
    # the verdict does not.
    assert (outcome, warnings) == (CORRUPT_REF[0], CORRUPT_REF[2])


# Offset of the central directory (from the end-of-central-directory record). fwup stops
# reading at the first header after the last resource: a cut 8 bytes or more past the last
# data descriptor goes unnoticed (libarchive looks 24 bytes ahead there); the texts for
# every cut are compared with the real fwup's in tests/fwup_diff/.
CENTRAL_DIR = int.from_bytes(SIMPLE[-22:][16:20], "little")


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(min_value=0, max_value=CENTRAL_DIR - 1))
def test_truncated_archive_fails(cut: int) -> None:
    outcome, _sha, _ = apply(SIMPLE[:cut], "upgrade", [])
    assert outcome != "ok"


@given(cut=st.integers(min_value=CENTRAL_DIR + 8, max_value=len(SIMPLE)))
@settings(max_examples=10, deadline=None)
def test_cut_after_the_last_entry_applies(cut: int) -> None:
    assert apply(SIMPLE[:cut], "upgrade", []) == SIMPLE_REF


def _framed_randomly(data: bytes, sizes: list[int]) -> bytes:
    out, pos, i = bytearray(), 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        out += n.to_bytes(4, "big") + data[pos : pos + n]
        pos += n
        i += 1
    return bytes(out) + b"\0\0\0\0"


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(min_value=1, max_value=70000), min_size=1, max_size=12))
def test_cli_stdin_random_frames_same_image(sizes: list[int]) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as d:
        target = Path(d) / "t.img"
        with target.open("wb") as fh:
            fh.truncate(SIZE)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "nhlink_dbus.fwup.cli",
                "-a",
                "--framing",
                "-d",
                str(target),
                "-t",
                "complete",
                "-i",
                "-",
                "-p",
                str(FIXTURES / "fwup-key.pub"),
            ],
            input=_framed_randomly(AB, sizes),
            capture_output=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout
        assert hashlib.sha256(target.read_bytes()).hexdigest() == AB_REF[1]
        assert result.stdout.endswith(b"\x00\x00\x00\x04PR\x00\x64\x00\x00\x00\x04OK\x00\x00")
