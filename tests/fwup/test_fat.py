"""fwup's fat_* actions through mtools, checked against real fwup 1.16.0 (fixtures/fwup/fat.*)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nhlink_dbus.errors import FirmwareError, TargetError
from nhlink_dbus.fwup.fat import FatFilesystem, fatfs_geometry, volume_serial

_REPO_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fwup"
_SHARED_FIXTURES = Path("/work/shared/fixtures/fwup")
FIXTURES = _REPO_FIXTURES if _REPO_FIXTURES.is_dir() else _SHARED_FIXTURES
CONF = FIXTURES / "conf"


# fat.conf: BOOT_PART_OFFSET / BOOT_PART_COUNT on a 64 MiB target
BOOT_OFFSET = 2048
BOOT_COUNT = 16384
IMAGE_SIZE = 64 * 1024 * 1024
FAT_START = BOOT_OFFSET * 512
FAT_END = FAT_START + BOOT_COUNT * 512
TOOLS_ENV = {"MTOOLSRC": "/dev/null", "MTOOLS_SKIP_CHECK": "1", "PATH": os.defpath, "LC_ALL": "C"}


def _recorded_listing(step: str) -> str:
    """The mtools listing fat.expect.md records after ``step`` (complete, upgrade.b, ...)."""
    text = (FIXTURES / "fat.expect.md").read_text()
    m = re.search(rf"FAT partition after {re.escape(step)} \(.*?\n\n```\n(.*?)```", text, re.S)
    assert m is not None, step
    return m.group(1)


def _listing(image: Path) -> str:
    """What the recorder printed: ``mlabel -s`` then ``mdir -/`` on the partition."""
    target = f"{image}@@{FAT_START}"
    label = subprocess.run(
        ["mlabel", "-s", "-i", target, "::"],
        check=False,
        env=TOOLS_ENV,
        capture_output=True,
        text=True,
    )
    tree = subprocess.run(
        ["mdir", "-/", "-i", target, "::"],
        check=False,
        env=TOOLS_ENV,
        capture_output=True,
        text=True,
    )
    assert label.returncode == 0 and tree.returncode == 0, label.stderr + tree.stderr
    return (label.stdout + tree.stdout).rstrip(
        "\n"
    ) + "\n"  # the record drops mdir's last blank line


def _label(image: Path) -> str:
    result = subprocess.run(
        ["mlabel", "-s", "-i", f"{image}@@{FAT_START}", "::"],
        env=TOOLS_ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def _outside_digest(image: Path) -> str:
    data = image.read_bytes()
    return hashlib.sha256(data[:FAT_START] + data[FAT_END:]).hexdigest()


def _fsck(image: Path, tmp_path: Path) -> str:
    part = tmp_path / "part.img"
    part.write_bytes(image.read_bytes()[FAT_START:FAT_END])
    fsck = shutil.which("fsck.vfat", path=f"{os.defpath}:/usr/sbin:/sbin")
    assert fsck is not None, "fsck.vfat missing: run `make setup` (Debian package dosfstools)"
    result = subprocess.run(
        [fsck, "-n", str(part)], check=False, capture_output=True, text=True, env=TOOLS_ENV
    )
    return result.stdout + result.stderr


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "target.img"
    with path.open("wb") as f:
        f.truncate(IMAGE_SIZE)
    return path


@pytest.fixture
def fs(image: Path) -> Iterator[FatFilesystem]:
    fat = FatFilesystem(str(image), BOOT_OFFSET)
    fat.mkfs(BOOT_COUNT)
    yield fat
    assert image.stat().st_size == IMAGE_SIZE


def _complete(fat: FatFilesystem) -> None:
    """fat.conf task complete, FAT actions in fwup's order (on-init, resources, on-finish)."""
    fat.mkfs(BOOT_COUNT)
    fat.setlabel("NHBOOT")
    fat.mkdir("EFI")
    fat.mkdir("EFI/BOOT")
    fat.write("EFI/BOOT/grub.cfg", str(CONF / "grub.cfg"))
    fat.write("EFI/BOOT/grubenv_a", str(CONF / "grubenv_a"))
    fat.write("EFI/BOOT/grubenv_b", str(CONF / "grubenv_b"))
    fat.mv("EFI/BOOT/grubenv_a", "EFI/BOOT/grubenv", force=False)
    fat.rm("EFI/BOOT/grubenv_b", must_exist=False)


def _upgrade(fat: FatFilesystem, env: str, label: str) -> None:
    """fat.conf tasks upgrade.b / upgrade.a."""
    fat.write("EFI/BOOT/grubenv.new", str(CONF / env))
    fat.mv("EFI/BOOT/grubenv", "EFI/BOOT/grubenv.old", force=False)
    fat.mv("EFI/BOOT/grubenv.new", "EFI/BOOT/grubenv", force=False)
    fat.rm("EFI/BOOT/grubenv.old", must_exist=False)
    fat.setlabel(label)


def test_fat_fw_chain_matches_fwup_file_by_file(image: Path, tmp_path: Path) -> None:
    outside = _outside_digest(image)
    fat = FatFilesystem(str(image), BOOT_OFFSET)
    assert fat.read("EFI/BOOT/grubenv") is None  # blank: require-fat-file-match is false
    assert not fat.exists("EFI/BOOT/grubenv")

    _complete(fat)
    assert _listing(image) == _recorded_listing("complete")
    grubenv = fat.read("EFI/BOOT/grubenv")
    assert grubenv == (CONF / "grubenv_a").read_bytes()
    assert grubenv.startswith(b"# GRUB Environment Block\nboot=0\nvalidate")
    assert fat.read("EFI/BOOT/grub.cfg") == (CONF / "grub.cfg").read_bytes()

    assert b"boot=0" in grubenv  # upgrade.b's requirement holds
    _upgrade(fat, "grubenv_b", "NHBOOT-B")
    assert _listing(image) == _recorded_listing("upgrade.b")
    assert fat.read("EFI/BOOT/grubenv") == (CONF / "grubenv_b").read_bytes()

    _upgrade(fat, "grubenv_a", "NHBOOT-A")
    assert _listing(image) == _recorded_listing("upgrade.a")
    assert fat.read("EFI/BOOT/grubenv") == (CONF / "grubenv_a").read_bytes()

    assert image.stat().st_size == IMAGE_SIZE
    assert _outside_digest(image) == outside
    report = _fsck(image, tmp_path)
    # The label is kept in the boot sector too, so the file system checks clean.
    lines = [line for line in report.splitlines() if line.strip()]
    assert lines[1:] == [f"{tmp_path / 'part.img'}: 5 files, 5/16221 clusters"]


def test_mkfs_boot_sector_is_fatfs(fs: FatFilesystem, image: Path) -> None:
    # EXPECT.md: FAT16, 1 sector per cluster, 2 FATs, 512 root entries, OEM MSDOS5.0,
    # serial 0021-4000; ff.c f_mkfs for the rest.
    boot = image.read_bytes()[FAT_START : FAT_START + 512]
    assert boot[0:11] == b"\xeb\xfe\x90MSDOS5.0"
    assert int.from_bytes(boot[11:13], "little") == 512
    assert boot[13] == 1  # sectors per cluster
    assert int.from_bytes(boot[14:16], "little") == 1  # reserved
    assert boot[16] == 2  # FATs
    assert int.from_bytes(boot[17:19], "little") == 512  # root entries
    assert int.from_bytes(boot[19:21], "little") == BOOT_COUNT
    assert boot[21] == 0xF8
    assert int.from_bytes(boot[22:24], "little") == 65  # sectors per FAT
    assert (int.from_bytes(boot[24:26], "little"), int.from_bytes(boot[26:28], "little")) == (
        63,
        255,
    )
    assert int.from_bytes(boot[28:32], "little") == 0  # hidden sectors (FM_SFD)
    assert boot[36] == 0x80 and boot[38] == 0x29
    assert int.from_bytes(boot[39:43], "little") == 0x00214000
    assert boot[43:62] == b"NO NAME    FAT16   "
    assert boot[510:512] == b"\x55\xaa"


def test_geometry_follows_f_mkfs() -> None:
    g = fatfs_geometry(16384)
    assert g is not None
    assert (g.fat_bits, g.reserved_sectors, g.fat_sectors, g.root_entries, g.clusters) == (
        16,
        1,
        65,
        512,
        16221,
    )
    small = fatfs_geometry(2048)
    assert small is not None and small.fat_bits == 12
    big = fatfs_geometry(131072)
    assert big is not None and (big.fat_bits, big.reserved_sectors) == (32, 32)
    assert fatfs_geometry(127) is None  # f_mkfs: volume < 128 sectors
    assert fatfs_geometry(4096) is None  # too many clusters for FAT12, too few for FAT16
    assert volume_serial(16384) == 0x00214000


@pytest.mark.parametrize(("count", "bits"), [(2048, 12), (131072, 32)])
def test_mkfs_other_fat_types(tmp_path: Path, count: int, bits: int) -> None:
    path = tmp_path / "t.img"
    with path.open("wb") as f:
        f.truncate((BOOT_OFFSET + count) * 512)
    fat = FatFilesystem(str(path), BOOT_OFFSET)
    fat.mkfs(count)
    boot = path.read_bytes()[FAT_START : FAT_START + 512]
    assert boot[3:11] == b"MSDOS5.0"
    serial_at = 67 if bits == 32 else 39
    assert int.from_bytes(boot[serial_at : serial_at + 4], "little") == volume_serial(count)
    fat.write("dir.txt", str(CONF / "grub.cfg"))
    assert fat.read("DIR.TXT") == (CONF / "grub.cfg").read_bytes()
    assert path.stat().st_size == (BOOT_OFFSET + count) * 512


def test_mkfs_errors(image: Path, tmp_path: Path) -> None:
    fat = FatFilesystem(str(image), BOOT_OFFSET)
    with pytest.raises(FirmwareError) as err:
        fat.mkfs(4096)
    assert str(err.value) == (
        "fat_mkfs(): FATFS: f_mkfs() aborted due to a parameter error. "
        "Try adjusting the partition size."
    )
    assert image.read_bytes() == bytes(IMAGE_SIZE)  # nothing written when f_mkfs aborts
    with pytest.raises(TargetError, match="cannot write"):
        FatFilesystem(str(tmp_path / "missing.img"), 0).mkfs(BOOT_COUNT)


def test_no_filesystem(image: Path) -> None:
    fat = FatFilesystem(str(image), BOOT_OFFSET)
    with pytest.raises(FirmwareError) as err:
        fat.mkdir("EFI")
    assert str(err.value) == "fat_mkdir(EFI): FATFS: There is no valid FAT volume"
    with pytest.raises(FirmwareError, match=r"^fat_setlabel\(X\): FATFS: There is no valid"):
        fat.setlabel("X")
    assert fat.read("x") is None
    assert image.read_bytes() == bytes(IMAGE_SIZE)


def test_mv_semantics(fs: FatFilesystem) -> None:
    fs.write("a.txt", str(CONF / "grub.cfg"))
    fs.write("b.txt", str(CONF / "grubenv_a"))
    with pytest.raises(FirmwareError) as err:
        fs.mv("a.txt", "b.txt", force=False)
    assert str(err.value) == "fat_mv(a.txt): FATFS: Destination file already exists"
    fs.mv("a.txt", "b.txt", force=True)
    assert fs.read("b.txt") == (CONF / "grub.cfg").read_bytes()
    assert not fs.exists("a.txt")
    with pytest.raises(FirmwareError) as err:
        fs.mv("a.txt", "c.txt", force=False)
    assert str(err.value) == "fat_mv(a.txt): FATFS: Could not find the file"
    with pytest.raises(FirmwareError) as err:
        fs.mv("b.txt", "nodir/c.txt", force=True)
    assert str(err.value) == "fat_mv!(b.txt): FATFS: Could not find the path"
    fs.attrib("b.txt", "H")
    fs.mv("B.TXT", "Mixed.Txt", force=False)  # names match case-insensitively
    assert fs.read("mixed.txt") == (CONF / "grub.cfg").read_bytes()
    assert "Mixed.Txt" in _names(fs, "")
    assert fs._attributes("Mixed.Txt") == {"A", "H"}  # f_rename keeps attributes, adds A


def _names(fs: FatFilesystem, directory: str) -> list[str]:
    return [e.name for e in fs._list(directory)]


def test_rm_semantics(fs: FatFilesystem) -> None:
    fs.rm("missing", must_exist=False)
    fs.rm("nodir/missing", must_exist=False)
    with pytest.raises(FirmwareError) as err:
        fs.rm("missing", must_exist=True)
    assert str(err.value) == "fat_rm!(missing): FATFS: Could not find the file"
    fs.mkdir("d")
    fs.touch("d/f")
    with pytest.raises(FirmwareError, match=r"^fat_rm\(d\): FATFS: Access denied"):
        fs.rm("d", must_exist=False)  # f_unlink refuses a directory that is not empty
    fs.attrib("d/f", "R")
    with pytest.raises(FirmwareError, match=r"^fat_rm!\(d/f\): FATFS: Access denied"):
        fs.rm("d/f", must_exist=True)
    fs.attrib("d/f", "")
    fs.rm("D/F", must_exist=True)
    fs.rm("d", must_exist=True)  # an empty directory goes
    assert _names(fs, "") == []


def test_mkdir_semantics(fs: FatFilesystem) -> None:
    fs.mkdir("EFI")
    fs.mkdir("efi")  # exists already (case-insensitive): fine
    fs.mkdir("/EFI/BOOT/")
    assert _names(fs, "EFI") == ["BOOT"]
    fs.touch("EFI/file")
    with pytest.raises(FirmwareError) as err:
        fs.mkdir("EFI/file")
    assert str(err.value) == "fat_mkdir(EFI/file): FATFS: Destination file already exists"
    with pytest.raises(FirmwareError) as err:
        fs.mkdir("nope/sub")
    assert str(err.value) == "fat_mkdir(nope/sub): FATFS: Could not find the path"
    with pytest.raises(FirmwareError, match="The path name format is invalid"):
        fs.mkdir("bad?name")


def test_write_semantics(fs: FatFilesystem, tmp_path: Path) -> None:
    with pytest.raises(FirmwareError) as err:
        fs.write("nodir/x", str(CONF / "grub.cfg"))
    assert str(err.value) == (
        "Can't open file on FAT partition(nodir/x): FATFS: Could not find the path"
    )
    fs.write("GRUB.CFG", str(CONF / "grubenv_a"))
    fs.attrib("GRUB.CFG", "HS")
    fs.write("grub.cfg", str(CONF / "grub.cfg"))  # truncates; the entry keeps its name
    assert fs.read("grub.cfg") == (CONF / "grub.cfg").read_bytes()
    assert _names(fs, "") == ["GRUB.CFG"]
    assert fs._attributes("GRUB.CFG") == {"A"}  # FA_CREATE_ALWAYS resets attributes
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    fs.write("GRUB.CFG", str(empty))
    assert fs.read("grub.cfg") == b""
    fs.attrib("grub.cfg", "r")
    with pytest.raises(FirmwareError, match=r"^Can't open file on FAT partition\(grub.cfg\): "):
        fs.write("grub.cfg", str(CONF / "grub.cfg"))
    fs.mkdir("dir")
    with pytest.raises(FirmwareError, match="Access denied"):
        fs.write("dir", str(CONF / "grub.cfg"))


def test_cp_touch_attrib(fs: FatFilesystem) -> None:
    fs.write("src.bin", str(CONF / "grubenv_b"))
    fs.cp("src.bin", "copy.bin")
    assert fs.read("copy.bin") == (CONF / "grubenv_b").read_bytes()
    with pytest.raises(FirmwareError) as err:
        fs.cp("none", "x")
    assert str(err.value) == "fatfs_cp can't open file(none): FATFS: Could not find the file"

    fs.touch("t")
    assert fs.read("t") == b""
    fs.touch("src.bin")  # an existing file is left alone
    assert fs.read("src.bin") == (CONF / "grubenv_b").read_bytes()
    fs.attrib("t", "rhs")
    assert fs._attributes("t") == {"A", "R", "H", "S"}
    with pytest.raises(FirmwareError, match=r"^fat_touch\(t\): FATFS: Access denied"):
        fs.touch("t")
    fs.attrib("t", "S")
    assert fs._attributes("t") == {"A", "S"}
    with pytest.raises(FirmwareError, match="only supports R, H, and S"):
        fs.attrib("t", "A")
    with pytest.raises(FirmwareError) as err:
        fs.attrib("none", "R")
    assert str(err.value) == "fat_attrib(none): FATFS: Could not find the file"
    assert fs.exists("t") and not fs.exists("none")
    fs.mkdir("d")
    assert not fs.exists("d")  # FA_OPEN_EXISTING on a directory: FR_NO_FILE
    assert fs.read("d") is None


def test_setlabel_rules(fs: FatFilesystem, image: Path) -> None:
    fs.setlabel("boot me")
    assert _label(image) == " Volume label is BOOT ME    \n"
    boot = image.read_bytes()[FAT_START : FAT_START + 512]
    assert boot[43:54] == b"BOOT ME    "  # kept equal to the directory label (fsck-clean)
    for bad in ("TOO-LONG-LABEL", "A.B", "x*"):
        with pytest.raises(FirmwareError) as err:
            fs.setlabel(bad)
        assert str(err.value) == f"fat_setlabel({bad}): FATFS: The path name format is invalid"
    fs.setlabel("")
    assert _label(image) == " Volume has no label\n"


def test_mtools_missing_names_the_package(image: Path, tmp_path: Path) -> None:
    fat = FatFilesystem(str(image), BOOT_OFFSET, mtools_dir=str(tmp_path))
    with pytest.raises(TargetError, match=r"m[a-z]+ not found.*Debian package 'mtools'"):
        fat.mkdir("EFI")
