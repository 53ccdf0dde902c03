"""fwup's gpt_write, checked against fwup's own test vector (tests/163_gpt.test) and sfdisk."""

from __future__ import annotations

import base64
import gzip
import shutil
import struct
import subprocess
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nhlink_dbus.core.gpt import GptSpec, build_gpt, parse_gpt, uuid_mixed_endian
from nhlink_dbus.errors import FirmwareError

EFI_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
LINUX_TYPE = "44479540-f297-41b2-9af7-d131d5f0458a"
DISK_UUID = "b443fbeb-2c93-481b-88b3-0ecb0aeba911"

# fwup tests/163_gpt.test: the expected first 33 sectors and the backup GPT (gzip + base64),
# which the test places at sector 98369 of a 50381824-byte image.
FWUP_163_PRIMARY = """
H4sIAMVuu10AA+3SzyuDcRzA8c+zcuCgdjZZTpIfcVU8w2ySWosc7PIctjjRs6WV0nOgcJXUTnO0
46aYg+JkJFHO/oCVkKKox1d9n8OOj4Oo9+vbtz6f769Pn/qK4D8LyKPruoaKLMfwfXu2FJ2YDCci
yRkRQ1JqpXnuqPK9473lvdqpc1Pn9Y+xw52etvhmpfWqpX4QDOh9R8+b+dDozzrCb+rKdp91vN8F
T6akWBuuDbXb+eSWLMQ2Ho6fq2uZdVOfG3Ea76UlI4vSK8tiiS056ZMVtWKpyB9zNza+91KOFN5u
B+6fotsXTeefof7r6dPX1XBhP3VpOl79xt9ty5IaOVUzq2qnJa/iQf/tAwAAAAAAAAAAAAAAAAAA
AAAAAAAAAMCf8QXD+LQzAEIAAA==
"""
FWUP_163_SECONDARY = """
H4sIAMVuu10AA+3bsSvEYRzH8c8NFoO62cllko6LwaL4/XCOpHTZ3PIb7mKi3126UvolCqsudRPj
rRgwXDE5kiizP+AWpCgGjzw33HgGGd6vp6fn+3zr6dPzB3y7cz3nne/34bNp7VeHq0MdfiG1rYXk
5uPJ8+ladsPRj5FADTLKalG9WpYnX3n1acV0PFM1xykmx/deDt3S213/w1Ni57Ll4jMSv5mpvK5G
SwfpKyeo54ca3vlaMitvMnMmO6OCqQeazAYAAAAAAAAAAAAAAAAAAAAAAAAAAAAA4L9ITExFZ93U
nBRS2tzL67HB775n5+3rU/dd9nRsv/Yxdrwba5/cOmq7bq2Vw67tB3bfzkdG/+oP+L0vmeSr/ABC
AAA=
"""


def _spec_163(**extra: object) -> GptSpec:
    return parse_gpt(
        {"guid": DISK_UUID},
        [
            (
                "0",
                {
                    "block-offset": "64",
                    "block-count": "32768",
                    "type": EFI_TYPE,
                    "guid": "5278721d-0089-4768-85df-b8f1b97e6684",
                    "name": "efi-part.vfat",
                },
            ),
            (
                "1",
                {
                    "block-offset": "32832",
                    "block-count": "65536",
                    "type": LINUX_TYPE,
                    "guid": "fcc205c8-2f1c-4dcd-bef4-7b209aa15cca",
                    "name": "rootfs.ext2",
                    **extra,
                },
            ),
        ],
    )


def _image(writes: tuple[tuple[int, bytes], ...], size: int) -> bytearray:
    image = bytearray(size)
    for offset, data in writes:
        assert offset + len(data) <= size
        image[offset : offset + len(data)] = data
    return image


def test_matches_fwup_163_gpt_test_byte_for_byte() -> None:
    primary = gzip.decompress(base64.b64decode(FWUP_163_PRIMARY))
    secondary = gzip.decompress(base64.b64decode(FWUP_163_SECONDARY))
    expected = bytearray(50381824)
    expected[: len(primary)] = primary
    expected[98369 * 512 : 98369 * 512 + len(secondary)] = secondary

    # fwup's target there is a new, empty file: size unknown, so just big enough.
    writes = build_gpt(_spec_163(), 0)
    assert [(off, len(data)) for off, data in writes] == [(0, 34 * 512), (98369 * 512, 33 * 512)]
    assert _image(writes, len(expected)) == expected


def test_mixed_endian_guid() -> None:
    assert uuid_mixed_endian(EFI_TYPE) == bytes.fromhex("28732ac11ff8d211ba4b00a0c93ec93b")
    assert uuid_mixed_endian(EFI_TYPE.upper() + "trailing") == uuid_mixed_endian(EFI_TYPE)
    assert uuid_mixed_endian("c12a7328f81f-11d2-ba4b-00a0c93ec93b") is None
    assert uuid_mixed_endian("g12a7328-f81f-11d2-ba4b-00a0c93ec93b") is None
    assert uuid_mixed_endian("c12a7328-f81f-11d2-ba4b-00a0c93ec93") is None


def _check_crcs(image: bytes, header_lba: int) -> tuple[Any, ...]:
    header = image[header_lba * 512 : header_lba * 512 + 92]
    fields = struct.unpack("<8sIIIIQQQQ16sQIII", header)
    assert fields[0] == b"EFI PART"
    assert zlib.crc32(header[:16] + b"\0\0\0\0" + header[20:]) == fields[3]
    table_lba, count, size, table_crc = fields[10:14]
    table = image[table_lba * 512 : table_lba * 512 + count * size]
    assert zlib.crc32(table) == table_crc
    return fields


def test_layout_on_a_known_device_with_expand_and_flags() -> None:
    blocks = 131072  # a 64 MiB target
    spec = _spec_163(expand="true", flags="0x8000000000000004")
    image = bytes(_image(build_gpt(spec, blocks), blocks * 512))

    mbr = image[:512]
    assert mbr[:446] == bytes(446)
    assert mbr[446:462] == bytes.fromhex("00000200eeffffff01000000ffff0100")
    assert mbr[462:510] == bytes(48) and mbr[510:] == b"\x55\xaa"

    primary = _check_crcs(image, 1)
    backup = _check_crcs(image, blocks - 1)
    assert primary[5:9] == (1, blocks - 1, 34, blocks - 34)
    assert primary[9] == uuid_mixed_endian(DISK_UUID)
    assert backup[5:9] == (blocks - 1, 1, 34, blocks - 34)
    assert (primary[10], backup[10]) == (2, blocks - 33)
    assert image[2 * 512 : 34 * 512] == image[(blocks - 33) * 512 : (blocks - 1) * 512]

    entry = image[2 * 512 + 128 : 2 * 512 + 256]
    first, last, flags = struct.unpack_from("<QQQ", entry, 32)
    # gpt.c create_partition grows to num_blocks - 34 - 1 blocks: one short of the last usable LBA
    assert (first, last, flags) == (32832, blocks - 35, 0x8000000000000004)
    assert entry[56:78] == "rootfs.ext2".encode("utf-16-le")
    assert image[2 * 512 + 256 : 34 * 512] == bytes(32 * 512 - 256)


def test_sfdisk_and_sgdisk_accept_it(tmp_path: Path) -> None:
    blocks = 131072
    path = tmp_path / "disk.img"
    path.write_bytes(_image(build_gpt(_spec_163(expand=True), blocks), blocks * 512))
    sfdisk = shutil.which("sfdisk", path="/usr/sbin:/sbin:/usr/bin")
    assert sfdisk is not None
    dump = subprocess.run(
        [sfdisk, "--dump", str(path)], check=True, capture_output=True, text=True
    ).stdout
    assert f"label-id: {DISK_UUID.upper()}" in dump
    assert "first-lba: 34" in dump and f"last-lba: {blocks - 34}" in dump
    assert (
        f"{path}1 : start=          64, size=       32768, type={EFI_TYPE.upper()}, "
        'uuid=5278721D-0089-4768-85DF-B8F1B97E6684, name="efi-part.vfat"'
    ) in dump
    assert f"{path}2 : start=       32832, size=       98206, type={LINUX_TYPE.upper()}" in dump
    sgdisk = shutil.which("sgdisk", path="/usr/sbin:/sbin:/usr/bin")
    assert sgdisk is not None, "sgdisk missing: run make setup (Debian package gdisk)"
    verify = subprocess.run([sgdisk, "-v", str(path)], check=False, capture_output=True)
    assert b"No problems found" in verify.stdout


def test_name_is_36_bytes_widened() -> None:
    spec = parse_gpt(
        {"guid": DISK_UUID},
        [("0", {"block-offset": 64, "block-count": 8, "type": EFI_TYPE, "guid": DISK_UUID,
                "name": "x" * 40})],
    )  # fmt: skip
    assert spec.partitions[0].name == b"x\0" * 36


def test_block_count_default_and_offsets_as_c_parses_them() -> None:
    part = {"type": EFI_TYPE, "guid": DISK_UUID, "block-offset": "0x40", "block-count": "010"}
    spec = parse_gpt({"guid": DISK_UUID}, [("0x2", part)])
    p = spec.partitions[0]
    assert (p.index, p.block_offset, p.block_count) == (2, 64, 8)  # strtoul base 0: octal


@pytest.mark.parametrize(
    ("options", "partitions", "message"),
    [
        ({}, [], "GPT must have a valid disk guid"),
        ({"guid": "nope"}, [], "GPT must have a valid disk guid"),
        ({"guid": DISK_UUID}, [("16", {})], "partition must be numbered 0 through 15"),
        (
            {"guid": DISK_UUID},
            [("0", {"guid": DISK_UUID})],
            "partition 0's type must set to a UUID",
        ),
        ({"guid": DISK_UUID}, [("0", {"type": EFI_TYPE})], "partition 0 must have a valid guid"),
        (
            {"guid": DISK_UUID},
            [("1", {"type": EFI_TYPE, "guid": DISK_UUID, "block-count": 1})],
            "partition 1's block_offset is required",
        ),
        (
            {"guid": DISK_UUID},
            [("0", {"type": EFI_TYPE, "guid": DISK_UUID, "block-offset": "4294967295",
                    "block-count": 1})],
            "partition 0's block_offset must be positive and less than 2^32 - 1: '4294967295'",
        ),
        (
            {"guid": DISK_UUID},
            [("0", {"type": EFI_TYPE, "guid": DISK_UUID, "block-offset": "1", "flags": "3x",
                    "block-count": 1})],
            "error parsing partition 0's block offset",  # sic: fwup checks the flags' end
        ),
        (
            {"guid": DISK_UUID},
            [("0", {"type": EFI_TYPE, "guid": DISK_UUID, "block-offset": "1"})],
            "partition 0's block-count must be specified and less than 2^31 - 1",
        ),
        (
            {"guid": DISK_UUID},
            [("0", {"type": EFI_TYPE, "guid": DISK_UUID, "block-offset": 1, "block-count": 1}),
             ("0", {"type": EFI_TYPE, "guid": DISK_UUID, "block-offset": 9, "block-count": 1})],
            "invalid or duplicate partition number found for 0",
        ),
    ],
)  # fmt: skip
def test_parse_errors_carry_fwup_text(
    options: Mapping[str, object],
    partitions: list[tuple[str, Mapping[str, object]]],
    message: str,
) -> None:
    with pytest.raises(FirmwareError) as err:
        parse_gpt(options, partitions)
    assert str(err.value) == message


def _part(
    index: int, offset: int, count: int, expand: bool = False
) -> tuple[str, dict[str, object]]:
    return (str(index), {"type": EFI_TYPE, "guid": DISK_UUID, "block-offset": offset,
                         "block-count": count, "expand": expand})  # fmt: skip


def test_verify_like_fwup_create() -> None:
    _spec_163().verify()
    overlap = parse_gpt({"guid": DISK_UUID}, [_part(0, 64, 100), _part(1, 100, 10)])
    with pytest.raises(FirmwareError) as err:
        overlap.verify()
    # fwup's test only sees the overlap from the contained partition's side
    assert str(err.value) == "partitions 1 (blocks 100 to 110) and 0 (blocks 64 to 164) overlap"
    after = parse_gpt({"guid": DISK_UUID}, [_part(0, 64, 10, expand=True), _part(1, 100, 10)])
    with pytest.raises(FirmwareError, match='after the one with "expand = true"'):
        after.verify()
    with pytest.raises(FirmwareError, match="empty partition table"):
        parse_gpt({"guid": DISK_UUID}, []).verify()


_values = st.one_of(st.text(max_size=40), st.integers(-(2**40), 2**40), st.booleans())
_keys = st.sampled_from(["block-offset", "block-count", "type", "guid", "name", "flags", "expand"])


@given(
    disk=st.one_of(st.just(DISK_UUID), st.text(max_size=40)),
    parts=st.lists(
        st.tuples(
            st.one_of(st.integers(0, 20).map(str), st.text(max_size=4)),
            st.dictionaries(_keys, _values, max_size=7),
        ),
        max_size=4,
    ),
    blocks=st.integers(0, 2**33),
)
def test_parse_gives_a_value_or_firmware_error(
    disk: str, parts: list[tuple[str, dict[str, object]]], blocks: int
) -> None:
    try:
        spec = parse_gpt({"guid": disk}, parts)
    except FirmwareError:
        return
    writes = build_gpt(spec, blocks)
    assert [len(data) for _, data in writes] == [34 * 512, 33 * 512]
    first, second = writes[0][1], writes[1][1]
    assert first[2 * 512 :] == second[: 32 * 512]
    for header in (first[512:1024], second[32 * 512 :]):
        assert zlib.crc32(header[:16] + b"\0\0\0\0" + header[20:92]) == int.from_bytes(
            header[16:20], "little"
        )
