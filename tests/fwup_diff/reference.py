"""Where the real fwup (the reference the differential tests compare with) comes from.

In order: ``FWUP_REF`` (a path to an fwup 1.16.0 executable); else a build cached under
``.tools/fwup`` (git-ignored) by ``../shared/tools/fwup/build.sh``, which is run when that
script exists (it reuses its build; about 15 s the first time). Without either the
differential tests do not run, and say so (tests/fwup_diff/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO.parent / "shared" / "tools" / "fwup" / "build.sh"
BUILD_DIR = REPO / ".tools" / "fwup"
VERSION = "1.16.0"


@dataclass(frozen=True, slots=True)
class Reference:
    fwup: Path | None  # None: not available; ``reason`` says why
    reason: str


def _check(path: Path, origin: str) -> Reference:
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        return Reference(None, f"{origin} {path} cannot run: {exc.strerror}")
    if out.returncode != 0 or out.stdout.strip() != VERSION:
        return Reference(None, f"{origin} {path} is not fwup {VERSION} ({out.stdout.strip()!r})")
    return Reference(path, f"{origin} {path}")


def find_reference() -> Reference:
    """The reference fwup, building it from ../shared/tools/fwup when that is here."""
    env = os.environ.get("FWUP_REF")
    if env:
        return _check(Path(env), "FWUP_REF")
    if not BUILD_SCRIPT.is_file():
        return Reference(
            None, f"FWUP_REF is not set and {BUILD_SCRIPT} (to build fwup {VERSION}) is not there"
        )
    build = subprocess.run(
        ["bash", str(BUILD_SCRIPT), str(BUILD_DIR)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    lines = build.stdout.strip().splitlines()
    if build.returncode != 0 or not lines:
        tail = " ".join(build.stderr.strip().splitlines()[-3:])
        return Reference(None, f"building fwup with {BUILD_SCRIPT} failed: {tail}")
    return _check(Path(lines[-1]), "built by build.sh:")
