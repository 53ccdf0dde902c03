"""One generated differential case: a fwup.conf, its host files, and how to apply it.

A :class:`Scenario` is plain data (strategies.py draws it): the real fwup turns the
config and files into an archive (``fwup -c``, ``-S`` to sign), the archive may then be
cut or damaged, and every :class:`Step` applies it with both tools from the same starting
image, once per :class:`Mode` (text output and ``--framing``).
"""

from __future__ import annotations

import os
import random
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "fwup"
KEYS = {
    "good": (FIXTURES / "fwup-key.pub", FIXTURES / "test-only-fwup-key.priv"),
    "wrong": (FIXTURES / "wrong-key.pub", FIXTURES / "test-only-wrong-key.priv"),
}
HOLE_UNIT = 4096  # holes must cover whole file-system blocks to show up as holes


@dataclass(frozen=True, slots=True)
class HostFile:
    """A file next to the config; its bytes come from ``seed`` so a case stays small."""

    name: str
    size: int
    kind: str  # random | zeros | pattern | text
    seed: int = 0
    text: bytes = b""
    holes: tuple[tuple[int, int], ...] = ()  # (offset, length) in HOLE_UNIT multiples

    def data(self) -> bytes:
        if self.kind == "text":
            return self.text
        if self.kind == "zeros":
            return bytes(self.size)
        if self.kind == "pattern":
            unit = random.Random(self.seed).randbytes(1 + self.seed % 61)
            return (unit * (self.size // len(unit) + 1))[: self.size]
        return random.Random(self.seed).randbytes(self.size)

    def write(self, folder: Path) -> None:
        data = self.data()
        path = folder / self.name
        if not self.holes:
            path.write_bytes(data)
            return
        # Write only what lies outside the holes, then set the length: the rest stays a hole.
        with path.open("wb") as fh:
            pos = 0
            for start, length in (*self.holes, (len(data), 0)):
                if start > pos:
                    fh.seek(pos)
                    fh.write(data[pos:start])
                pos = max(pos, start + length)
            fh.truncate(len(data))


@dataclass(frozen=True, slots=True)
class Mode:
    """One way to run an apply: text output (``-n``, ``-q``, the bar) or ``--framing``."""

    framing: bool
    stdin_chunk: int | None = None  # framed stdin in pieces of this size; None: ``-i`` file
    options: tuple[str, ...] = ()  # e.g. -n, -q, -v, --progress-low 10

    def argv(self, task: str, keys: tuple[str, ...]) -> list[str]:
        args = ["-a", "-d", "target.img", "-t", task]
        args += ["-i", "-"] if self.stdin_chunk is not None else ["-i", "firmware.fw"]
        if self.framing:
            args.append("--framing")
        for key in keys:
            args += ["-p", KEYS[key][0].name]  # run folders hold the key files
        return args + list(self.options)


@dataclass(frozen=True, slots=True)
class Step:
    task: str
    start: str  # "start": the scenario's starting image; "previous": real fwup's last image
    modes: tuple[Mode, ...]


@dataclass(frozen=True, slots=True)
class StartImage:
    """The image both tools start from: ``size`` bytes (0 with ``absent``: no file at all)."""

    size: int
    fills: tuple[tuple[int, int, int], ...] = ()  # (offset, length, seed): random bytes
    absent: bool = False

    def write(self, path: Path) -> None:
        if self.absent:
            path.unlink(missing_ok=True)
            return
        with path.open("wb") as fh:
            fh.truncate(self.size)
            for offset, length, seed in self.fills:
                fh.seek(offset)
                fh.write(random.Random(seed).randbytes(length))


@dataclass(frozen=True, slots=True)
class Mutation:
    """Damage done to the created archive: cut it, or flip bits of one byte.

    ``where`` picks the region (``any`` byte of the file; an entry's ``header``, ``data``
    or data ``descriptor`` by index in the ZIP; the ``tail`` after the last entry's data:
    its descriptor and the central directory), ``at`` is a position in 1/65536 of it.
    """

    kind: str  # truncate | flip
    where: str  # any | header | data
    entry: int
    at: int
    xor: int = 1

    def apply(self, archive: bytes) -> bytes:
        start, end = 0, len(archive)
        if self.where != "any":
            spans = _entry_spans(archive)
            if spans and self.where == "tail":
                start = spans[-1][2]
            elif spans and self.where == "descriptor":
                start = spans[self.entry % len(spans)][2]
                end = min(start + 16, end)
            elif spans:
                header, data, after = spans[self.entry % len(spans)]
                start, end = (header, data) if self.where == "header" else (data, after)
        if end <= start:
            start, end = 0, len(archive)
        pos = start + (end - start) * self.at // 65536
        if self.kind == "truncate":
            return archive[:pos]
        out = bytearray(archive)
        out[min(pos, len(out) - 1)] ^= self.xor or 1
        return bytes(out)


def _entry_spans(archive: bytes) -> list[tuple[int, int, int]]:
    """(local header start, data start, data end) of every ZIP entry, in file order."""
    import io  # noqa: PLC0415

    try:
        infos = zipfile.ZipFile(io.BytesIO(archive)).infolist()
    except zipfile.BadZipFile:
        return []
    spans = []
    for info in sorted(infos, key=lambda i: i.header_offset):
        h = info.header_offset
        name_len = int.from_bytes(archive[h + 26 : h + 28], "little")
        extra_len = int.from_bytes(archive[h + 28 : h + 30], "little")
        data = h + 30 + name_len + extra_len
        spans.append((h, data, data + info.compress_size))
    return spans


@dataclass(frozen=True, slots=True)
class Scenario:
    conf: str
    files: tuple[HostFile, ...]
    start: StartImage
    steps: tuple[Step, ...]
    sign: str = "none"  # none | good | wrong: the key the real fwup signs with
    keys: tuple[str, ...] = ()  # keys given to the applies (-p), in order
    mutation: Mutation | None = None
    fat_regions: tuple[tuple[int, int], ...] = ()  # (block offset, block count)
    # -V / -l / -m runs: argv without -i (a last "<stdin": the archive comes on stdin)
    inspect: tuple[tuple[str, ...], ...] = ()
    notes: dict[str, str] = field(default_factory=dict)

    def write_inputs(self, folder: Path) -> Path:
        """The config and host files in ``folder``; returns the config's path."""
        for f in self.files:
            f.write(folder)
        conf = folder / "fwup.conf"
        conf.write_text(self.conf)
        return conf


def env_for_create() -> dict[str, str]:
    """Reproducible archives: fwup obeys SOURCE_DATE_EPOCH."""
    return {"PATH": os.environ.get("PATH", os.defpath), "SOURCE_DATE_EPOCH": "1700000000"}
