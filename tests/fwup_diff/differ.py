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
from tests.fwup_diff.scenario import KEYS, Mode, Scenario, env_for_create


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


def prepare_folder(folder: Path, archive: bytes, start: bytes | None) -> None:
    """A run folder: the archive, the starting image, the public keys."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "firmware.fw").write_bytes(archive)
    if start is not None:
        (folder / "target.img").write_bytes(start)
    for pub, _priv in KEYS.values():
        (folder / pub.name).symlink_to(pub)


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
    if run.image is not None:
        target = folder / "target.img"
        mine = view_image(target, fat_regions)
        ref_path = ref_folder / "target.img" if ref_folder is not None else None
        image = image_problem(run.image, mine, target, ref_path)
        if image:
            problems.append(image)
    return problems


class Differ:
    """Creates archives with the real fwup and runs scenarios through both tools."""

    def __init__(self, fwup: Path, work: Path) -> None:
        self.fwup = fwup
        self.work = work
        self.created = 0
        self.refused = 0
        self.applies = 0

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
        base = self.work / name
        archive = self.create(scenario, base / "create")
        if archive is None:
            return None, []
        record = CaseRecord(scenario.fat_regions, archive)
        divergences: list[Divergence] = []
        start_path = base / "start.img"
        scenario.start.write(start_path)
        first_start = start_path.read_bytes() if start_path.exists() else None
        previous: bytes | None = first_start
        for step in scenario.steps:
            start = first_start if step.start == "start" else previous
            for i, mode in enumerate(step.modes):
                run, ref_folder = self._reference_run(
                    base, len(record.runs), scenario, archive, start, step.task, mode
                )
                record.runs.append(run)
                if i == 0:
                    img = ref_folder / "target.img"
                    previous = img.read_bytes() if img.exists() else None
                ours_folder = base / f"ours-{len(record.runs) - 1}"
                prepare_folder(ours_folder, archive, start)
                ours = run_ours(run.argv, ours_folder, run.stdin(archive))
                self.applies += 1
                for what in compare(run, ours, ours_folder, scenario.fat_regions, ref_folder):
                    divergences.append(Divergence(len(record.runs) - 1, run.argv, what))
        for argv in scenario.inspect:
            folder = base / f"ref-{len(record.runs)}"
            prepare_folder(folder, archive, None)
            full = [*argv, "-i", "firmware.fw"]
            ref = run_reference(self.fwup, full, folder, None)
            run = RunRecord(full, None, None, ref.exit, ref.stdout, None)
            record.runs.append(run)
            ours = run_ours(full, folder, None)
            self.applies += 1
            for what in compare(run, ours, folder, (), None):
                divergences.append(Divergence(len(record.runs) - 1, full, what))
        return record, divergences

    def _reference_run(
        self,
        base: Path,
        index: int,
        scenario: Scenario,
        archive: bytes,
        start: bytes | None,
        task: str,
        mode: Mode,
    ) -> tuple[RunRecord, Path]:
        folder = base / f"ref-{index}"
        prepare_folder(folder, archive, start)
        argv = mode.argv(task, scenario.keys)
        run = RunRecord(argv, mode.stdin_chunk, start, 0, b"", None)
        ref = run_reference(self.fwup, argv, folder, run.stdin(archive))
        view = view_image(folder / "target.img", scenario.fat_regions)
        return RunRecord(argv, mode.stdin_chunk, start, ref.exit, ref.stdout, view), folder

    def record_listings(self, record: CaseRecord, base: Path) -> CaseRecord:
        """Fill in the FAT listings of every recorded image (for a fixture)."""
        runs = []
        for i, run in enumerate(record.runs):
            image = run.image
            if image is not None and image.region_sha256 and image.size >= 0:
                image = with_listings(image, base / f"ref-{i}" / "target.img")
            runs.append(
                RunRecord(run.argv, run.stdin_chunk, run.start, run.exit, run.stdout, image)
            )
        return CaseRecord(record.fat_regions, record.archive, runs)
