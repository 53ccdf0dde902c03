"""Sparse file-resources (``length={data,hole,data,...}``), empty resources (no
``length=``) and resources whose length does not match their data, applied as
real fwup 1.16 applies them.

The recorded cases (``tests/fixtures/fwup/sparse/``) hold archives and what the
real fwup did with them: framed output, image, host file, FAT file. Re-record
with ``python -m tests.fwup.test_sparse --record PATH/TO/fwup``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nhlink_dbus.core.block_cache import BlockCache
from nhlink_dbus.core.fw_archive import EntryStart, ZipStreamReader
from nhlink_dbus.core.fwup_apply import ApplyEngine, ApplyOptions, _SparseCursor
from nhlink_dbus.core.fwup_conf import load_meta_conf
from nhlink_dbus.errors import FirmwareError, NhlinkError
from tests.fwup.expect_records import FIXTURES
from tests.fwup.test_stream_chunking import Listener, MemoryDevice

SPARSE = FIXTURES / "sparse"
EMPTY_DIGEST = hashlib.blake2b(b"", digest_size=32).hexdigest()


# -- archives -------------------------------------------------------------------------


class _Unseekable(io.RawIOBase):
    """Makes zipfile write what fwup writes: flag bit 3, sizes in data descriptors."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        return self.out.write(b)

    def seekable(self) -> bool:
        return False


def make_fw(meta: str, data: bytes, streamed: bool = True) -> bytes:
    """An unsigned archive with one resource ``data/r``. ``streamed``: no sizes in the
    local headers (as fwup -c writes); otherwise sizes there (as ``zip`` writes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(
        _Unseekable(buf) if streamed else buf, "w", compression=zipfile.ZIP_DEFLATED
    ) as zf:
        for name, body in (("meta.conf", meta.encode()), ("data/r", data)):
            zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), body, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def meta_conf(length: str | None, digest: str, funlist: str, task: str = "t") -> str:
    length_line = f"length={length}\n" if length is not None else ""
    return (
        f'file-resource "r" {{\n{length_line}blake2b-256={digest}\n}}\n'
        f'task "{task}" {{\non-resource "r" {{\nfunlist={funlist}\n}}\n}}\n'
    )


def apply(
    fw: bytes, base: bytes = b"", task: str = "t", cuts: list[int] | None = None
) -> tuple[str, bytes, list[int]]:
    """In-process apply onto a growing in-memory file: (outcome, image, percents)."""
    dev = MemoryDevice(base)
    listener = Listener()
    engine = ApplyEngine(ApplyOptions(task=task), BlockCache(dev), listener, lambda *_: True)
    outcome = "ok"
    try:
        pos = 0
        for point in [*(cuts or []), len(fw)]:
            cut = min(max(point, pos), len(fw))
            engine.feed(fw[pos:cut])
            pos = cut
        engine.finish()
    except NhlinkError as exc:
        outcome = str(exc)
    return outcome, bytes(dev.data), listener.percents


def blake(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


# -- meta.conf ------------------------------------------------------------------------


def test_sparse_map_parsed() -> None:
    conf = load_meta_conf(
        meta_conf("{0,32768,4096,28672,4096}", EMPTY_DIGEST, "{2,raw_write,0}").encode()
    )
    res = conf.resources["r"]
    assert res.runs == (0, 32768, 4096, 28672, 4096)
    assert res.length == 8192  # what the archive holds
    assert res.size == 32768 + 4096 + 28672 + 4096
    assert res.ending_hole == 0
    res = load_meta_conf(
        meta_conf("{1024,512}", EMPTY_DIGEST, "{2,raw_write,0}").encode()
    ).resources["r"]
    assert (res.length, res.size, res.ending_hole) == (1024, 1536, 512)


def test_plain_length_and_large_values() -> None:
    res = load_meta_conf(meta_conf("1024", EMPTY_DIGEST, "{2,raw_write,0}").encode()).resources["r"]
    assert (res.length, res.size, res.runs, res.sparse_map) == (1024, 1024, (1024,), ())
    # 106_large_length_field: a hole past 32 bits
    big = load_meta_conf(
        meta_conf("{0,17179869184,1024}", EMPTY_DIGEST, "{2,raw_write,0}").encode()
    )
    assert big.resources["r"].length == 1024
    assert big.resources["r"].size == 17179869184 + 1024


def test_no_length_is_an_empty_resource() -> None:
    # fwup -c writes no length= for an empty file; libconfuse reads 0.
    res = load_meta_conf(meta_conf(None, EMPTY_DIGEST, "{2,raw_write,0}").encode()).resources["r"]
    assert (res.length, res.size, res.runs) == (0, 0, (0,))


def test_negative_length_refused() -> None:
    with pytest.raises(FirmwareError, match="negative length"):
        load_meta_conf(meta_conf("{10,-5,10}", EMPTY_DIGEST, "{2,raw_write,0}").encode())


def test_bad_digest_only_matters_to_a_task_using_the_resource() -> None:
    text = meta_conf("4", "xyz", "{2,raw_write,0}") + 'task "other" {\n}\n'
    assert load_meta_conf(text.encode()).resources["r"].blake2b_256 == "xyz"
    fw = make_fw(text, b"abcd")
    assert apply(fw, task="other")[0] == "ok"
    assert apply(fw, task="t")[0] == "invalid blake2b hash for 'r'"


# -- the cursor -------------------------------------------------------------------------


def test_cursor_splits_at_runs_and_skips_holes() -> None:
    cur = _SparseCursor((3, 10, 2, 5, 4))
    assert cur.pieces(b"abcd") == [(0, b"abc"), (13, b"d")]
    assert cur.pieces(b"efghij") == [(14, b"e"), (20, b"fghi")]
    assert cur.ended
    assert cur.pieces(b"more") == []  # fwup reads no further


def test_cursor_leading_hole_and_empty_maps() -> None:
    cur = _SparseCursor((0, 100, 2))
    assert cur.pieces(b"xy") == [(100, b"xy")]
    assert _SparseCursor((0,)).ended
    assert _SparseCursor((0, 50)).ended
    # An empty data run after a hole reads as the end, as fwup's read callback does.
    cur = _SparseCursor((2, 5, 0, 5, 2))
    assert cur.pieces(b"abcd") == [(0, b"ab")]
    assert cur.ended


# -- applying ------------------------------------------------------------------------------


def _ptbw_model(base: bytes, dest: int, runs: tuple[int, ...], data: bytes) -> bytes:
    """What raw_write leaves, modelled block by block: a block that any data (or the
    final hole's last 512 bytes) touches is written whole, zero-padded; the others keep
    the target's bytes."""
    pieces: list[tuple[int, bytes]] = []
    offset = used = 0
    for i, run in enumerate(runs):
        if i % 2 == 0:
            pieces.append((dest + offset, data[used : used + run]))
            used += run
        offset += run
    if len(runs) % 2 == 0 and runs[-1]:
        n = min(runs[-1], 512)
        pieces.append((dest + offset - n, bytes(n)))
    image = bytearray(base)
    touched: set[int] = set()
    for at, piece in pieces:
        first, last = at // 512, -(-(at + len(piece)) // 512)
        if len(image) < last * 512:
            image.extend(bytes(last * 512 - len(image)))
        for block in range(first, last):
            if block not in touched:
                image[block * 512 : block * 512 + 512] = bytes(512)
                touched.add(block)
        image[at : at + len(piece)] = piece
    return bytes(image)


def test_raw_write_holes_keep_the_target_and_the_last_hole_is_zeroed() -> None:
    data = random.Random(1).randbytes(2200)
    runs = (0, 3000, 1500, 140000, 700, 5000)
    length = "{" + ",".join(map(str, runs)) + "}"
    fw = make_fw(meta_conf(length, blake(data), "{2,raw_write,1}"), data)
    base = b"\xff" * (512 << 10)
    outcome, image, _ = apply(fw, base)
    assert outcome == "ok"
    assert image[: len(base)] == _ptbw_model(base, 512, runs, data)


def test_empty_resource_without_length_applies() -> None:
    fw = make_fw(meta_conf(None, EMPTY_DIGEST, "{2,raw_write,0,2,raw_write,8}"), b"")
    assert apply(fw, b"\xff" * 8192) == ("ok", b"\xff" * 8192, [])


def test_all_hole_resource_written_twice() -> None:
    # {0,N}: no data; each raw_write writes the last block of the hole.
    fw = make_fw(meta_conf("{0,131072}", EMPTY_DIGEST, "{2,raw_write,0,2,raw_write,256}"), b"")
    outcome, image, _ = apply(fw)
    assert outcome == "ok"
    assert len(image) == 2 * 131072  # the second ends at 256 KiB, in whole cache segments
    assert image == bytes(len(image))


def test_length_mismatch_errors() -> None:
    data = random.Random(2).randbytes(1024)
    digest = blake(data)
    # sizes in the ZIP header, plain length: fwup's xdelta3 guard
    fw = make_fw(meta_conf("2000", digest, "{2,raw_write,0}"), data, streamed=False)
    assert apply(fw)[0] == (
        "File 'r' isn't expected size (1024 vs 2000) and xdelta3 patch support not enabled on"
        " it. (Add delta-source-raw-offset / delta-source-raw-count or"
        " delta-source-fat-offset / delta-source-fat-path)"
    )
    # no sizes in the header: short data is counted, long data cut at the length
    fw = make_fw(meta_conf("2000", digest, "{2,raw_write,0}"), data)
    assert apply(fw)[0] == "raw_write wrote 1024 bytes for 'r', but should have written 2000"
    fw = make_fw(meta_conf("500", blake(data[:500]), "{2,raw_write,0}"), data)
    assert apply(fw)[0] == "ok"
    # a sparse map is never checked against the header
    fw = make_fw(meta_conf("{1000,24,100}", digest, "{2,raw_write,0}"), data, streamed=False)
    assert apply(fw)[0] == "raw_write wrote 1024 bytes for 'r', but should have written 1100"


def test_entry_start_reports_header_size() -> None:
    data = b"x" * 100
    for streamed, size in ((True, None), (False, 100)):
        events = ZipStreamReader().feed(
            make_fw(meta_conf("100", blake(data), "{}"), data, streamed)
        )
        starts = [e for e in events if isinstance(e, EntryStart) and e.name == "data/r"]
        assert [s.size for s in starts] == [size]


_SLICED_DATA = random.Random(3).randbytes(8000)
_SLICED = make_fw(
    meta_conf("{0,700,3000,130000,5000,300}", blake(_SLICED_DATA), "{2,raw_write,3}"),
    _SLICED_DATA,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(0, len(_SLICED)), max_size=30).map(sorted))
def test_sparse_apply_any_slicing(cuts: list[int]) -> None:
    outcome, image, _ = apply(_SLICED, b"\xee" * 200000, cuts=cuts)
    assert outcome == "ok"
    assert image == _SLICED_IMAGE


_SLICED_IMAGE = apply(_SLICED, b"\xee" * 200000)[1]


# -- recorded against the real fwup ------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    length: str | None  # None: no length= line
    data: int  # bytes of data/r (seeded random)
    funlist: str
    base: int = 0  # target prefilled with 0xff, this many bytes
    streamed: bool = True
    digest_of: int | None = None  # hash only this many leading bytes (default: all)
    fat: bool = False


CASES = [
    Case("raw-holes", "{0,3000,1500,140000,700,5000}", 2200, "{2,raw_write,1}", 512 << 10),
    Case("raw-lasthole", "{1024,512}", 1024, "{2,raw_write,4}"),
    Case("raw-segments", "{7000,131072,13000,300000,511,1}", 20511, "{2,raw_write,300}", 1 << 20),
    Case("raw-empty-nolen", None, 0, "{2,raw_write,0,2,raw_write,8}", 8192),
    Case("raw-allhole-twice", "{0,131072}", 0, "{2,raw_write,0,2,raw_write,600}", 1 << 20),
    Case("raw-twice-data", "{1024,50}", 1024, "{2,raw_write,0,2,raw_write,8}"),
    Case("raw-short", "{2000,100}", 1024, "{2,raw_write,0}"),
    Case("raw-long", "{500,100}", 1024, "{2,raw_write,0}", digest_of=500),
    Case("raw-long-badhash", "500", 1024, "{2,raw_write,0}"),
    Case("raw-size-mismatch", "2000", 1024, "{2,raw_write,0}", streamed=False),
    Case("raw-size-empty", None, 1024, "{2,raw_write,0}", streamed=False),
    Case("path-sparse", "{0,512,1024,512}", 1024, '{2,path_write,"out.bin"}'),
    Case("pipe-sparse-ok", "{512,512,512}", 1024, '{2,pipe_write,"cat > out.bin"}'),
    Case("pipe-sparse-fail", "{0,512,1024,512}", 1024, '{2,pipe_write,"cat > out.bin"}'),
    Case("pipe-lasthole-fail", "{1024,100}", 1024, '{2,pipe_write,"cat > out.bin"}'),
    Case(
        "fat-sparse",
        "{100,5000,200,3000}",
        300,
        '{3,fat_mkfs,0,32760,3,fat_write,0,"s.bin"}',
        fat=True,
    ),
    Case("fat-allhole", "{0,131072}", 0, '{3,fat_mkfs,0,32760,3,fat_write,0,"s.bin"}', fat=True),
]


def _case_data(case: Case) -> bytes:
    # Incompressible: how libarchive hands out inflated bytes of a compressible stream
    # (and so fwup's progress steps) is another matter than sparse resources.
    return random.Random(case.name).randbytes(case.data)


def _case_fw(case: Case) -> bytes:
    data = _case_data(case)
    digest = blake(data[: case.digest_of] if case.digest_of is not None else data)
    return make_fw(meta_conf(case.length, digest, case.funlist), data, case.streamed)


def _frames(out: bytes) -> list[str]:
    frames, pos = [], 0
    while pos + 8 <= len(out):
        n = int.from_bytes(out[pos : pos + 4], "big")
        kind, code = out[pos + 4 : pos + 6].decode(), int.from_bytes(out[pos + 6 : pos + 8], "big")
        frames.append(f"{kind}{code} {out[pos + 8 : pos + 4 + n].decode()}".rstrip())
        pos += 4 + n
    return frames


def _sha(path: Path) -> list[object] | None:
    if not path.exists():
        return None
    data = path.read_bytes()
    return [len(data), hashlib.sha256(data).hexdigest()]


def _run(argv: list[str], case: Case, fw: Path, work: Path) -> dict[str, object]:
    image = work / "img"
    image.write_bytes(b"\xff" * case.base)
    (work / "out.bin").unlink(missing_ok=True)
    args = [*argv, "--unsafe", "-a", "--framing", "-d", str(image), "-i", str(fw), "-t", "t"]
    proc = subprocess.run(args, cwd=work, capture_output=True, timeout=120, check=False)
    result: dict[str, object] = {
        "exit": proc.returncode,
        "frames": _frames(proc.stdout),
        "out": _sha(work / "out.bin"),
    }
    if case.fat:
        if proc.returncode == 0:
            env = {"MTOOLSRC": "/dev/null", "MTOOLS_SKIP_CHECK": "1", "PATH": os.defpath}
            cat = subprocess.run(
                ["mtype", "-i", str(image), "::/s.bin"], env=env, capture_output=True, check=True
            )
            result["fat_file"] = [len(cat.stdout), hashlib.sha256(cat.stdout).hexdigest()]
    else:
        result["image"] = _sha(image)
    return result


def _recorded() -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads((SPARSE / "expect.json").read_text())
    return data


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_recorded_case(case: Case, tmp_path: Path) -> None:
    fw = SPARSE / f"{case.name}.fw"
    if case.fat and shutil.which("mtype") is None:
        pytest.skip("mtools not installed")
    got = _run([sys.executable, "-m", "nhlink_dbus.fwup.cli"], case, fw, tmp_path)
    assert got == _recorded()[case.name]


def _record(fwup: str) -> None:
    SPARSE.mkdir(parents=True, exist_ok=True)
    expect = {}
    work = SPARSE / "work"
    work.mkdir(exist_ok=True)
    for case in CASES:
        fw = SPARSE / f"{case.name}.fw"
        fw.write_bytes(_case_fw(case))
        expect[case.name] = _run([fwup], case, fw, work)
        print(case.name, expect[case.name]["frames"])
    for leftover in work.iterdir():
        leftover.unlink()
    work.rmdir()
    (SPARSE / "expect.json").write_text(json.dumps(expect, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--record":
        sys.exit("usage: python -m tests.fwup.test_sparse --record PATH/TO/fwup")
    _record(sys.argv[2])
