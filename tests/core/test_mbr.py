"""MBR encoding against what the real fwup 1.16.0 wrote (tests/fixtures/fwup/mbr/,
re-recorded with ``make.py``): sector 0, EBRs, bootstrap code, OSIP, expand."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from nhlink_dbus.core import mbr
from nhlink_dbus.core.fwup_conf import load_meta_conf
from nhlink_dbus.errors import FirmwareError

CASES = json.loads((Path(__file__).parents[1] / "fixtures/fwup/mbr/cases.json").read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_blocks_are_fwups(name: str) -> None:
    case = CASES[name]
    conf = load_meta_conf(case["meta_conf"].encode())
    blocks = mbr.encode_all(conf.mbrs["m"], case["image_blocks"])
    got = {str(at): base64.b64encode(data).decode() for at, data in blocks if any(data)}
    assert got == case["blocks"]
    assert all(len(data) == 512 for _, data in blocks)


def test_partition_offset_reads_any_entry_as_fwup_does() -> None:
    conf = load_meta_conf(CASES["unused-entry-keeps-lba"]["meta_conf"].encode())
    sector0 = mbr.encode(conf.mbrs["m"])
    assert mbr.partition_offset(sector0, 0) == 63
    assert mbr.partition_offset(sector0, 1) == 63  # type 0, but the LBA is there
    assert mbr.partition_offset(sector0, 2) == 0
    assert mbr.partition_offset(sector0, 7) == 0  # fwup reads no EBR
    assert mbr.partition_offset(b"\0" * 512, 0) is None


def _conf(body: str, opts: str = "") -> bytes:
    return f'mbr "m" {{\n{opts}\n{body}\n}}\n'.encode()


@pytest.mark.parametrize(
    ("body", "opts", "message"),
    [
        ('partition 12 {\nblock-offset=1\nblock-count=1\ntype=1\n}', "", "numbered 0 through 11"),
        ('partition 0 {\nblock-count=1\ntype=1\n}', "", "block_offset is required"),
        ('partition 0 {\nblock-offset=1\ntype=1\n}', "", "block-count must be specified"),
        ('partition 0 {\nblock-offset=1\nblock-count=1\ntype=256\n}', "", "between 0 and 255"),
        ('partition 1 {\nblock-offset=1\ntype=0xf\n}', "", "only partition 3 may be"),
        ('partition 0 {\nblock-offset=1\nblock-count=1\ntype=1\n}', 'bootstrap-code="00"',
         "exactly 440 bytes"),
        ('partition 0 {\nblock-offset=1\nblock-count=1\ntype=1\n}', "include-osip=true",
         "one or more osii"),
    ],
)  # fmt: skip
def test_bad_mbr_sections_are_refused(body: str, opts: str, message: str) -> None:
    with pytest.raises(FirmwareError, match=message):
        load_meta_conf(_conf(body, opts))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "partition 0 {\nblock-offset=10\nblock-count=100\ntype=0x83\n}\n"
            "partition 1 {\nblock-offset=50\nblock-count=100\ntype=0x83\n}",
            r"partitions 0 \(blocks 10 to 110\) and 1 \(blocks 50 to 150\) overlap",
        ),
        (
            "partition 0 {\nblock-offset=10\nblock-count=10\ntype=0x83\n}\n"
            "partition 4 {\nblock-offset=100\nblock-count=10\ntype=0x83\n}",
            "partition 3 must have extended partition type",
        ),
        (
            "partition 3 {\nblock-offset=100\ntype=0xf\n}\n"
            "partition 4 {\nblock-offset=50\nblock-count=10\ntype=0x83\n}",
            "expected to contain partition 4",
        ),
    ],
)
def test_inconsistent_tables_are_refused_when_encoding(body: str, message: str) -> None:
    conf = load_meta_conf(_conf(body))
    with pytest.raises(FirmwareError, match=message):
        mbr.encode_all(conf.mbrs["m"], 0)
