"""A divergence counts only if the real fwup gives the same result again (differ.py).

fwup has races of its own (see ``Differ._reference_varies``); a case where its result
changes from run to run is dropped instead of failing. Checked here with stand-ins for
fwup whose result does or does not change."""

from __future__ import annotations

from pathlib import Path

from tests.fwup_diff.differ import CaseRecord, Differ, RunRecord, prepare_folder
from tests.fwup_diff.outcome import run_reference

ARGV = ["-a", "-d", "target.img", "-t", "complete", "-i", "firmware.fw", "-n"]


def stand_in(tmp_path: Path, *, varies: bool) -> Path:
    """A program that writes the target and counts its runs; its image changes with the
    count when ``varies``."""
    counter = tmp_path / "count"
    counter.write_text("0")
    script = tmp_path / "fwup"
    image = '"$n"' if varies else "same"
    script.write_text(
        "#!/bin/sh\n"
        f'n=$(cat "{counter}"); n=$((n + 1)); echo "$n" > "{counter}"\n'
        f"printf '%s' {image} > target.img\n"
    )
    script.chmod(0o755)
    return script


def first_run(differ: Differ, tmp_path: Path) -> tuple[RunRecord, Path, CaseRecord]:
    record = CaseRecord((), b"not an archive")
    folder = tmp_path / "case" / "ref-0"
    prepare_folder(folder, record.archive, b"start")
    ref = run_reference(differ.fwup, ARGV, folder, None)
    return RunRecord(ARGV, None, b"start", ref.exit, ref.stdout, None), folder, record


def test_a_reference_whose_image_changes_between_runs_drops_the_case(tmp_path: Path) -> None:
    differ = Differ(stand_in(tmp_path, varies=True), tmp_path / "work")
    try:
        run, folder, record = first_run(differ, tmp_path)
        assert differ._reference_varies(run, folder, record, None)
        assert differ.varied == 1
    finally:
        differ.close()


def test_a_steady_reference_keeps_the_divergence(tmp_path: Path) -> None:
    differ = Differ(stand_in(tmp_path, varies=False), tmp_path / "work")
    try:
        run, folder, record = first_run(differ, tmp_path)
        assert not differ._reference_varies(run, folder, record, None)
        assert differ.varied == 0
        # It ran the reference again each time (three more runs), leaving no folders.
        assert (tmp_path / "count").read_text().strip() == "4"
        assert sorted(p.name for p in folder.parent.iterdir()) == ["ref-0"]
    finally:
        differ.close()
