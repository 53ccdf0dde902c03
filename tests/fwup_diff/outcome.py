"""What one run left behind, and how two of them are compared.

Compared: the exit status, stdout (every framing packet; in text mode the same text, the
bar's elapsed time excepted), and the target image: byte for byte, except FAT volumes,
which are compared by their mtools listing (fatlist.py) when their bytes differ.

``nhlink-fwup`` runs in this process (``cli.main`` with stdin/stdout swapped), which
keeps thousands of cases within minutes; the real fwup runs as a process.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fwup_diff.fatlist import fat_listing

_ELAPSED = re.compile(rb"Elapsed time: [^\n]*")


@dataclass(frozen=True, slots=True)
class ImageView:
    """The target after a run; FAT listings are filled in only when needed."""

    size: int  # -1: no file
    sha256: str
    outside_fat_sha256: str
    region_sha256: dict[int, str]
    listings: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "sha256": self.sha256,
            "outside_fat_sha256": self.outside_fat_sha256,
            "region_sha256": {str(k): v for k, v in self.region_sha256.items()},
            "listings": {str(k): v for k, v in self.listings.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageView:
        return cls(
            data["size"],
            data["sha256"],
            data["outside_fat_sha256"],
            {int(k): v for k, v in data["region_sha256"].items()},
            {int(k): v for k, v in data["listings"].items()},
        )


def view_image(path: Path, fat_regions: tuple[tuple[int, int], ...]) -> ImageView:
    if not path.exists():
        return ImageView(-1, "", "", {})
    data = bytearray(path.read_bytes())
    whole = hashlib.sha256(data).hexdigest()
    regions = {}
    for offset, count in fat_regions:
        start, end = offset * 512, min(len(data), (offset + count) * 512)
        regions[offset] = hashlib.sha256(data[start:end]).hexdigest()
        if end > start:
            data[start:end] = bytes(end - start)
    return ImageView(len(data), whole, hashlib.sha256(data).hexdigest(), regions)


def with_listings(view: ImageView, path: Path) -> ImageView:
    listings = {offset: fat_listing(path, offset) for offset in view.region_sha256}
    return ImageView(view.size, view.sha256, view.outside_fat_sha256, view.region_sha256, listings)


def image_problem(
    ref: ImageView, ours: ImageView, ours_path: Path | None, ref_path: Path | None = None
) -> str | None:
    """Why ``ours`` is not what the real fwup left (``ref``), or None when it is."""
    if ref.size != ours.size:
        return f"image size: fwup {ref.size}, ours {ours.size}"
    if ref.sha256 == ours.sha256:
        return None
    if ref.outside_fat_sha256 != ours.outside_fat_sha256 or not ref.region_sha256:
        return "image bytes differ" + (" outside the FAT volumes" if ref.region_sha256 else "")
    if ref_path is not None and not ref.listings:
        ref = with_listings(ref, ref_path)
    assert ours_path is not None
    for offset, ref_sha in ref.region_sha256.items():
        if ours.region_sha256.get(offset) == ref_sha:
            continue
        theirs = ref.listings[offset]
        if "(exit 0)" not in theirs.split("\n", 1)[0]:
            return f"FAT area at block {offset}: not a FAT volume for mtools, and bytes differ"
        mine = fat_listing(ours_path, offset)
        if mine != theirs:
            return f"FAT listing at block {offset} differs:\n--- fwup\n{theirs}--- ours\n{mine}"
    return None


def packets(stdout: bytes) -> list[str]:
    """fwup's framed stdout as readable packets (``PR 12``, ``ER 0 text``); a tail is shown raw."""
    out, pos = [], 0
    while pos + 4 <= len(stdout):
        length = int.from_bytes(stdout[pos : pos + 4], "big")
        body = stdout[pos + 4 : pos + 4 + length]
        if length < 4 or len(body) < length:
            break
        code = int.from_bytes(body[2:4], "big")
        text = body[4:].decode("utf-8", "replace")
        out.append(f"{body[:2].decode('latin-1')} {code}" + (f" {text}" if text else ""))
        pos += 4 + length
    if pos < len(stdout):
        out.append(f"raw {stdout[pos:]!r}")
    return out


def normalize_text(stdout: bytes) -> bytes:
    """The text-mode bar ends with the elapsed time; that alone may differ."""
    return _ELAPSED.sub(b"Elapsed time: T", stdout)


def stdout_problem(ref: bytes, ours: bytes, framing: bool) -> str | None:
    if framing:
        if ref == ours:
            return None
        return f"framing packets differ:\n  fwup {packets(ref)}\n  ours {packets(ours)}"
    if normalize_text(ref) == normalize_text(ours):
        return None
    return f"stdout differs:\n  fwup {ref!r}\n  ours {ours!r}"


def frame(data: bytes, size: int) -> bytes:
    """fwup's framed stdin: 4-byte big-endian lengths, a zero-length frame at the end."""
    out = bytearray()
    for i in range(0, len(data), size):
        piece = data[i : i + size]
        out += len(piece).to_bytes(4, "big") + piece
    return bytes(out + b"\0\0\0\0")


@dataclass(frozen=True, slots=True)
class RunResult:
    exit: int
    stdout: bytes
    stderr: bytes


def run_reference(fwup: Path, argv: list[str], cwd: Path, stdin: bytes | None) -> RunResult:
    """The real fwup, its stdin a file: a file's reads come in fixed 16 KiB pieces (a pipe's
    would depend on timing), as ``run_ours`` gives them."""
    stdin_path = cwd.parent / f".{cwd.name}.stdin"
    stdin_path.write_bytes(stdin or b"")
    with stdin_path.open("rb") as fh:
        r = subprocess.run(
            [str(fwup), *argv],
            cwd=cwd,
            stdin=fh,
            capture_output=True,
            timeout=120,
            check=False,
            env={"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"},
        )
    stdin_path.unlink()
    return RunResult(r.returncode, r.stdout, r.stderr)


class _Stdout:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def write(self, text: str) -> int:
        self.buffer.write(text.encode())
        return len(text)

    def flush(self) -> None:
        pass


class _Stdin:
    def __init__(self, fh: io.BufferedReader) -> None:
        self.buffer = fh


def run_ours(argv: list[str], cwd: Path, stdin: bytes | None) -> RunResult:
    """``nhlink-fwup ARGV`` in this process, in ``cwd``, with its stdin/stdout captured."""
    from nhlink_dbus.fwup import cli  # noqa: PLC0415

    stdin_path = cwd.parent / f".{cwd.name}.stdin"
    stdin_path.write_bytes(stdin or b"")
    saved = sys.stdin, sys.stdout, sys.stderr, os.getcwd()
    out, err = _Stdout(), _Stdout()
    with stdin_path.open("rb") as fh:
        sys.stdin, sys.stdout, sys.stderr = _Stdin(fh), out, err  # type: ignore[assignment]
        os.chdir(cwd)
        try:
            status = cli.main(argv)
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved[:3]
            os.chdir(saved[3])
    stdin_path.unlink()
    return RunResult(status, out.buffer.getvalue(), err.buffer.getvalue())
