"""Reads the apply records of ``tests/fixtures/fwup/*.expect.md`` (real fwup 1.16 runs).

Each ``###`` section with a ``Command`` and an exit code becomes an
:class:`ApplyRecord`: how to set up the target, the command line, the exit
code, fwup's stdout (framed ``.bin`` or the text block) and the image sha256.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "fwup"


@dataclass(frozen=True)
class ApplyRecord:
    fixture: str  # simple, ab, ...
    title: str
    setup: str
    argv: tuple[str, ...]
    stdin_name: str | None
    exit_code: int
    stdout_file: str | None
    stdout_text: str | None
    sha256: str | None
    deterministic: bool

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")
        return f"{self.fixture}:{slug[:60]}"


def _sections(text: str) -> list[tuple[str, str]]:
    parts = re.split(r"^### (.+)$", text, flags=re.M)
    return [(parts[i].strip(), parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def load_records() -> list[ApplyRecord]:
    records: list[ApplyRecord] = []
    for md in sorted(FIXTURES.glob("*.expect.md")):
        fixture = md.name.removesuffix(".expect.md")
        for title, body in _sections(md.read_text()):
            setup_m = re.search(r"- Target setup: (.+)", body)
            cmd_m = re.search(r"```\n\s*(fwup [^\n]+)\n\s*```", body)
            exit_m = re.search(r"Exit code: \*\*(\d)\*\*", body)
            if not (setup_m and cmd_m and exit_m):
                continue
            words = shlex.split(cmd_m.group(1))
            stdin_name = None
            if "<" in words:
                i = words.index("<")
                stdin_name = words[i + 1]
                words = words[:i] + words[i + 2 :]
            bin_m = re.search(r"Raw stdout bytes: `(framing/[^`]+)`", body)
            text_m = re.search(r"stdout \(not framed\):\n\n```\n(.*?)```", body, flags=re.S)
            sha_m = re.search(r"sha256 `([0-9a-f]{64})`", body)
            records.append(
                ApplyRecord(
                    fixture=fixture,
                    title=title,
                    setup=setup_m.group(1),
                    argv=tuple(words[1:]),
                    stdin_name=stdin_name,
                    exit_code=int(exit_m.group(1)),
                    stdout_file=bin_m.group(1) if bin_m else None,
                    stdout_text=text_m.group(1) if text_m else None,
                    sha256=sha_m.group(1) if sha_m else None,
                    # EXPECT.md: past a hard --max-size fwup's PR count before the ER
                    # varies between runs (a background writer finds the error).
                    deterministic="--max-size" not in words
                    and "NOT DETERMINISTIC" not in title
                    and "not deterministic" not in body.lower()
                    and "are NOT" not in body,
                )
            )
    return records


def frame(data: bytes, size: int, end: bool) -> bytes:
    out = bytearray()
    for i in range(0, len(data), size):
        piece = data[i : i + size]
        out += len(piece).to_bytes(4, "big") + piece
    if end:
        out += b"\0\0\0\0"
    return bytes(out)


def stdin_bytes(name: str | None) -> bytes:
    """Rebuild the stdin a record names (EXPECT.md says how each was made)."""
    if name is None or name == "/dev/null":
        return b""
    m = re.fullmatch(
        r"(first-(\d+)-bytes-of-)?([a-z-]+\.fw)(\.framed(4k|1)(-noend|-without-last-4-bytes)?)?",
        name,
    )
    if not m:
        raise ValueError(f"unknown stdin {name}")
    data = (FIXTURES / m.group(3)).read_bytes()
    if not m.group(4):
        return data[: int(m.group(2))] if m.group(2) else data
    size = 4096 if m.group(5) == "4k" else len(data)
    framed = frame(data, size, end=m.group(6) is None)
    # "first-N-bytes-of-X.fw.framed4k": the first N bytes of the framed stream, as it was
    # recorded (the stream stops inside a frame: fwup's read fails, "Truncated ZIP file
    # body"; a cut archive framed whole would end cleanly and read "ZIP decompression
    # failed (-5)" instead).
    return framed[: int(m.group(2))] if m.group(2) else framed


@dataclass(frozen=True)
class InfoRecord:
    """A ``-m`` / ``-l`` / ``-V`` run: command, exit code, stdout."""

    fixture: str
    title: str
    argv: tuple[str, ...]
    exit_code: int
    stdout: bytes

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")
        return f"{self.fixture}:{slug[:60]}"


def load_info_records() -> list[InfoRecord]:
    out: list[InfoRecord] = []
    for md in sorted(FIXTURES.glob("*.expect.md")):
        fixture = md.name.removesuffix(".expect.md")
        for title, body in _sections(md.read_text()):
            if "Target setup" in body:
                continue
            m = re.search(
                r"```\n(fwup [^\n]+)\n```\n\nExit code: \*\*(\d)\*\*; stderr: `\"\"`\n\n"
                r"(?:Raw stdout: `(framing/[^`]+)`|```\n(.*?)```)",
                body,
                flags=re.S,
            )
            if not m:
                continue
            stdout = (FIXTURES / m.group(3)).read_bytes() if m.group(3) else m.group(4).encode()
            out.append(
                InfoRecord(
                    fixture, title, tuple(shlex.split(m.group(1))[1:]), int(m.group(2)), stdout
                )
            )
    return out
