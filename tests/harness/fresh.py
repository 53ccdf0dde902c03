"""Python code run in a fresh interpreter (what a module imports, module-level state),
with this repository first on its path; its stdout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_fresh(code: str, cwd: Path) -> str:
    """``python -c code`` in ``cwd``; a non-zero exit fails with its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout
