"""Run one :class:`Scenario` with the real fwup and with ``nhlink-fwup``; list the differences.

Each run gets its own folder holding ``firmware.fw``, ``target.img`` (the starting image)
and the key files, so the command lines and any text naming a file are the same for both
tools. The record of what the real fwup did (``CaseRecord``) is what a divergence is kept
as: a fixture replayed by tests/fwup/test_diff_fixtures.py without the reference.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fwup_diff.outcome import (
    ImageView,
    RunResult,
    frame,
    image_problem,
    run_ours,
    run_reference,
    stdout_problem,
    view_image,
    with_listings,
)
from tests.fwup_diff.scenario import KEYS, Scenario, env_for_create


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One command as the real fwup ran it, enough to run it again without fwup."""

    argv: list[str]
    stdin_chunk: int | None  # framed (with --framing) or raw stdin in pieces of this size
    start: bytes | None  # the starting image (None: no file)
    exit: int
    stdout: bytes
    image: ImageView | None  # None for -V/-l/-m

    @property
    def framing(self) -> bool:
        return "--framing" in self.argv

    @property
    def applies(self) -> bool:
        return self.argv[0] == "-a"

    def stdin(self, archive: bytes) -> bytes | None:
        if self.stdin_chunk is None:
            return None
        return frame(archive, self.stdin_chunk) if self.framing else archive

    def to_json(self) -> dict[str, Any]:
        start = None
        if self.start is not None:
            start = {
                "size": len(self.start),
                "zlib_base64": base64.b64encode(zlib.compress(self.start, 9)).decode(),
            }
        return {
            "argv": self.argv,
            "stdin_chunk": self.stdin_chunk,
            "start": start,
            "exit": self.exit,
            "stdout_base64": base64.b64encode(self.stdout).decode(),
            "stdout_decoded": _readable(self.stdout, self.framing),
            "image": self.image.to_json() if self.image is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        start = None
        if data["start"] is not None:
            start = zlib.decompress(base64.b64decode(data["start"]["zlib_base64"]))
            assert len(start) == data["start"]["size"]
        image = ImageView.from_json(data["image"]) if data["image"] is not None else None
        return cls(
            data["argv"],
            data["stdin_chunk"],
            start,
            data["exit"],
            base64.b64decode(data["stdout_base64"]),
            image,
        )


def _readable(stdout: bytes, framing: bool) -> list[str] | str:
    from tests.fwup_diff.outcome import packets  # noqa: PLC0415

    return packets(stdout) if framing else stdout.decode("utf-8", "replace")


@dataclass
class CaseRecord:
    fat_regions: tuple[tuple[int, int], ...]
    archive: bytes
    runs: list[RunRecord] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Divergence:
    run: int
    argv: list[str]
    what: str


_ZEROS = bytes(1 << 16)


def write_sparse(path: Path, data: bytes) -> None:
    """``data`` into a new file, its all-zero 64 KiB pieces left as holes (faster)."""
    with path.open("wb") as fh:
        fh.truncate(len(data))
        for at in range(0, len(data), len(_ZEROS)):
            piece = data[at : at + len(_ZEROS)]
            if piece != _ZEROS[: len(piece)]:
                fh.seek(at)
                fh.write(piece)


def prepare_folder(folder: Path, archive: bytes, start: bytes | None) -> None:
    """A run folder: the archive, the starting image, the public keys."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "firmware.fw").write_bytes(archive)
    if start is not None:
        write_sparse(folder / "target.img", start)
    for pub, _priv in KEYS.values():
        (folder / pub.name).symlink_to(pub)


def live_image_problem(
    ref_path: Path, ours_path: Path, fat_regions: tuple[tuple[int, int], ...]
) -> str | None:
    """The images both tools left: equal bytes, or FAT volumes with equal listings."""
    if ref_path.exists() and ours_path.exists() and ref_path.read_bytes() == ours_path.read_bytes():
        return None
    ref = view_image(ref_path, fat_regions)
    return image_problem(ref, view_image(ours_path, fat_regions), ours_path, ref_path)


def replay_run(
    run: RunRecord, archive: bytes, folder: Path, fat_regions: tuple[tuple[int, int], ...]
) -> tuple[RunResult, list[str]]:
    """Run ``nhlink-fwup`` as the record says; the differences from the recorded fwup run."""
    prepare_folder(folder, archive, run.start)
    ours = run_ours(run.argv, folder, run.stdin(archive))
    return ours, compare(run, ours, folder, fat_regions, ref_folder=None)


def compare(
    run: RunRecord,
    ours: RunResult,
    folder: Path,
    fat_regions: tuple[tuple[int, int], ...],
    ref_folder: Path | None,
) -> list[str]:
    problems = []
    if b"Traceback" in ours.stderr:
        problems.append("traceback on stderr:\n" + ours.stderr.decode(errors="replace"))
    if run.exit != ours.exit:
        problems.append(f"exit status: fwup {run.exit}, ours {ours.exit}")
    text = stdout_problem(run.stdout, ours.stdout, run.framing)
    if text:
        problems.append(text)
    target = folder / "target.img"
    image = None
    if ref_folder is not None and run.applies:
        image = live_image_problem(ref_folder / "target.img", target, fat_regions)
    elif run.image is not None:
        image = image_problem(run.image, view_image(target, fat_regions), target)
    if image:
        problems.append(image)
    return problems


REFERENCE_RERUNS = 3  # runs of the real fwup again before a divergence counts


class ReferenceVaries(Exception):
    """The real fwup's own result changed from one run to the next: the case is dropped."""


class Differ:
    """Creates archives with the real fwup and runs scenarios through both tools."""

    def __init__(self, fwup: Path, work: Path) -> None:
        self.fwup = fwup
        self.work = work
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fwup-ref")
        self.created = 0
        self.refused = 0
        self.refusals: Counter[str] = Counter()  # why the real fwup would not create a case
        self.applies = 0
        self.varied = 0  # cases dropped: the real fwup's result varied between runs

    def close(self) -> None:
        self._pool.shutdown()

    def create(self, scenario: Scenario, folder: Path) -> bytes | None:
        """The archive as fwup makes (and signs, and then damages) it; None if refused."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        conf = scenario.write_inputs(folder)
        made = subprocess.run(
            [str(self.fwup), "-c", "-f", str(conf), "-o", str(folder / "unsigned.fw")],
            cwd=folder,
            capture_output=True,
            env=env_for_create(),
            timeout=120,
            check=False,
        )
        if made.returncode != 0:
            self.refused += 1
            reason = made.stderr.decode(errors="replace").strip().splitlines() or ["?"]
            self.refusals[reason[-1].split(": ", 1)[-1][:100]] += 1
            return None
        archive = folder / "unsigned.fw"
        if scenario.sign != "none":
            key = str(KEYS[scenario.sign][1])
            subprocess.run(
                [str(self.fwup), "-S", "-s", key, "-i", str(archive), "-o", "signed.fw"],
                cwd=folder,
                capture_output=True,
                env=env_for_create(),
                timeout=120,
                check=True,
            )
            archive = folder / "signed.fw"
        self.created += 1
        data = archive.read_bytes()
        return scenario.mutation.apply(data) if scenario.mutation else data

    def run(self, scenario: Scenario, name: str) -> tuple[CaseRecord | None, list[Divergence]]:
        """Create and run ``scenario``; the real fwup runs in a thread while ours runs here."""
        base = self.work / name
        archive = self.create(scenario, base / "create")
        if archive is None:
            return None, []
        record = CaseRecord(scenario.fat_regions, archive)
        try:
            return record, self._run_steps(scenario, base, record)
        except ReferenceVaries:
            return None, []

    def _run_steps(self, scenario: Scenario, base: Path, record: CaseRecord) -> list[Divergence]:
        divergences: list[Divergence] = []
        start_path = base / "start.img"
        scenario.start.write(start_path)
        first_start = start_path.read_bytes() if start_path.exists() else None
        previous: bytes | None = first_start
        runs: list[tuple[list[str], int | None, bytes | None]] = []
        for step in scenario.steps:
            start = first_start if step.start == "start" else previous
            batch = [(m.argv(step.task, scenario.keys), m.stdin_chunk, start) for m in step.modes]
            self._compare_batch(base, record, batch, divergences)
            runs += batch
            img = base / f"ref-{len(record.runs) - len(batch)}" / "target.img"
            previous = img.read_bytes() if img.exists() else None
        inspect = [
            ([*argv[:-1], "-i", "-"], 16384, None)
            if argv and argv[-1] == "<stdin"
            else ([*argv, "-i", "firmware.fw"], None, None)
            for argv in scenario.inspect
        ]
        self._compare_batch(base, record, inspect, divergences)
        return divergences

    def _compare_batch(
        self,
        base: Path,
        record: CaseRecord,
        batch: list[tuple[list[str], int | None, bytes | None]],
        divergences: list[Divergence],
    ) -> None:
        """Run each command with both tools (the real fwup's in threads) and compare."""
        archive = record.archive
        jobs = []
        for argv, chunk, start in batch:
            index = len(record.runs) + len(jobs)
            folder = base / f"ref-{index}"
            prepare_folder(folder, archive, start)
            stdin = RunRecord(argv, chunk, start, 0, b"", None).stdin(archive)
            future = self._pool.submit(run_reference, self.fwup, argv, folder, stdin)
            jobs.append((index, argv, chunk, start, folder, stdin, future))
        for index, argv, chunk, start, folder, stdin, future in jobs:
            ours_folder = base / f"ours-{index}"
            prepare_folder(ours_folder, archive, start)
            ours = run_ours(argv, ours_folder, stdin)
            self.applies += 1
            ref = future.result()
            run = RunRecord(argv, chunk, start, ref.exit, ref.stdout, None)
            record.runs.append(run)
            problems = compare(run, ours, ours_folder, record.fat_regions, folder)
            if problems and self._reference_varies(run, folder, record, stdin):
                raise ReferenceVaries(" ".join(argv))
            for what in problems:
                divergences.append(Divergence(index, argv, what))

    def _reference_varies(
        self, run: RunRecord, folder: Path, record: CaseRecord, stdin: bytes | None
    ) -> bool:
        """Whether the real fwup, run again on the same input, ends otherwise than it did.

        fwup has races of its own: a regular file's soft end (which sizes an expanding
        MBR/GPT partition) moves when its writer thread writes a segment, and the main
        thread reads it without waiting for that thread; on a loaded machine the last
        segment is sometimes not counted. Such a case says nothing about us."""
        for attempt in range(REFERENCE_RERUNS):
            again = folder.with_name(f"{folder.name}-again{attempt}")
            prepare_folder(again, record.archive, run.start)
            ref = run_reference(self.fwup, run.argv, again, stdin)
            image = None
            if run.applies:
                image = live_image_problem(
                    folder / "target.img", again / "target.img", record.fat_regions
                )
            varies = (
                ref.exit != run.exit
                or stdout_problem(run.stdout, ref.stdout, run.framing) is not None
                or image is not None
            )
            shutil.rmtree(again, ignore_errors=True)
            if varies:
                self.varied += 1
                return True
        return False

    def record_images(self, record: CaseRecord, base: Path) -> CaseRecord:
        """The record with the image every apply left (sha256s, FAT listings): a fixture."""
        runs = []
        for i, run in enumerate(record.runs):
            image = None
            if run.applies:
                image = view_image(base / f"ref-{i}" / "target.img", record.fat_regions)
                if image.region_sha256 and image.size >= 0:
                    image = with_listings(image, base / f"ref-{i}" / "target.img")
            runs.append(
                RunRecord(run.argv, run.stdin_chunk, run.start, run.exit, run.stdout, image)
            )
        return CaseRecord(record.fat_regions, record.archive, runs)
