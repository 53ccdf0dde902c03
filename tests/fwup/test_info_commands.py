"""``-m``, ``-l`` and ``-V`` give exactly what real fwup printed (EXPECT records)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.fwup.expect_records import FIXTURES, InfoRecord, load_info_records

RECORDS = load_info_records()


def test_records_found() -> None:
    assert len(RECORDS) >= 30
    kinds = {r.argv[0] for r in RECORDS}
    assert {"-m", "-l", "-V"} <= kinds


@pytest.mark.parametrize("rec", RECORDS, ids=lambda r: r.id)
def test_info_record(rec: InfoRecord) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nhlink_dbus.fwup.cli", *rec.argv],
        cwd=FIXTURES,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert b"Traceback" not in result.stderr
    assert result.returncode == rec.exit_code
    assert result.stdout == rec.stdout
