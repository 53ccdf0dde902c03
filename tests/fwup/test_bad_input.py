"""Bad input of any kind gives one clear error, exit 1, and changes nothing it
should not: malformed ZIP, meta.conf, signature, task, target."""

from __future__ import annotations

import contextlib
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nhlink_dbus.core import confuse
from nhlink_dbus.core.fwup_conf import load_meta_conf
from nhlink_dbus.errors import FirmwareError, NhlinkError
from nhlink_devtools.fw_builder import create_fw, load_private_key
from tests.fwup.expect_records import FIXTURES
from tests.fwup.test_stream_chunking import apply

KEY = str(FIXTURES / "fwup-key.pub")
PRIV = load_private_key((FIXTURES / "test-only-fwup-key.priv").read_text())
SIMPLE = (FIXTURES / "simple.fw").read_bytes()


def run(args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "nhlink_dbus.fwup.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def framed_errors(out: bytes) -> list[bytes]:
    errors, pos = [], 0
    while pos + 8 <= len(out):
        n = int.from_bytes(out[pos : pos + 4], "big")
        if out[pos + 4 : pos + 6] == b"ER":
            errors.append(out[pos + 8 : pos + 4 + n])
        pos += 4 + n
    return errors


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_archive_is_value_or_documented_error(data: st.DataObject) -> None:
    fw = bytearray(SIMPLE)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(fw) - 1))
        fw[pos] = data.draw(st.integers(0, 255))
    # apply() lets only NhlinkError through as an outcome; anything else fails here.
    outcome, _sha, _warnings = apply(bytes(fw), "upgrade", [])
    assert isinstance(outcome, str) and outcome


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_meta_conf_parser_value_or_error(text: str) -> None:
    with contextlib.suppress(FirmwareError):
        load_meta_conf(text.encode())


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab={},\"'\\$#\n /*-01x")), max_size=200))
def test_confuse_grammar_value_or_error(text: str) -> None:
    with contextlib.suppress(confuse.ConfuseError):
        confuse.parse(text)


# The texts the real fwup 1.16.0 (libarchive 3.6.2) prints for these, checked side by side.
@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "Unrecognized archive format"),
        (b"not a zip file at all", "Unrecognized archive format"),
        (SIMPLE[:5000], "ZIP decompression failed (-5)"),
        (b"PK\x03\x04" + b"\0" * 40, "Expecting meta.conf to be at the beginning of (null)"),
        (b"PK\x03\x04" + b"\0" * 10, "Truncated ZIP file header"),
    ],
)
def test_malformed_zip_from_stdin(tmp_path: Path, payload: bytes, message: str) -> None:
    target = tmp_path / "t.img"
    target.write_bytes(bytes(1 << 20))
    result = run(
        ["-a", "-d", str(target), "-t", "upgrade", "-p", KEY, "-i", "-", "--framing"],
        len(payload).to_bytes(4, "big") + payload + b"\0\0\0\0" if payload else b"\0\0\0\0",
    )
    assert result.returncode == 1
    assert b"Traceback" not in result.stderr
    errors = framed_errors(result.stdout)
    assert errors == [message.encode()]
    assert target.read_bytes() == bytes(1 << 20)


def _fw_with_conf(tmp_path: Path, body: str, signed: bool = True) -> Path:
    out = tmp_path / "x.fw"
    create_fw(
        out, {"meta-product": "p"}, {"rootfs.img": b"x" * 1024}, body, PRIV if signed else None
    )
    return out


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'task "upgrade" {\non-resource "rootfs.img" {\nfunlist={2,frobnicate,0}\n}\n}\n',
            "Unsupported function 'frobnicate' in task 'upgrade' on-resource 'rootfs.img'",
        ),
        (
            'task "upgrade" {\nreqlist={2,"require-moon-phase",full}\n}\n',
            "Unsupported requirement 'require-moon-phase' in task 'upgrade'",
        ),
        (
            'task "upgrade" {\non-init {\nmystery = 1\n}\n}\n',
            "Unsupported option 'mystery' in task 'upgrade' on-init",
        ),
        (
            'task "upgrade" {\non-init {\nfunlist={2,mbr_write,nope}\n}\n}\n',
            "mbr_write can't find mbr reference",
        ),
        (
            'task "upgrade" {\non-init {\nfunlist={2,execute,"touch /tmp/x"}\n}\n}\n',
            "execute requires --unsafe",
        ),
        (
            'task "upgrade" {\non-resource "rootfs.img" {\nfunlist={2,raw_write,0}\n}\n',
            "Error parsing meta.conf",
        ),
    ],
)
def test_unsupported_meta_conf_refused_before_writing(
    tmp_path: Path, body: str, message: str
) -> None:
    fw = _fw_with_conf(tmp_path, body)
    target = tmp_path / "t.img"
    target.write_bytes(bytes(1 << 20))
    result = run(["-a", "-d", str(target), "-t", "upgrade", "-p", KEY, "-i", str(fw)])
    assert result.returncode == 1
    # fwup's normal mode: the bar at 0 %, then the error on a cleared line (\r ESC [K).
    bar, error = result.stdout.decode().rsplit("\r\x1b[K", 1)
    assert bar == "\r  0% [" + " " * 36 + "]"
    assert error.startswith(f"fwup: {message}")
    assert target.read_bytes() == bytes(1 << 20)


def test_names_fwup_does_not_know_are_skipped_as_fwup_skips_them(tmp_path: Path) -> None:
    """A newer fwup's option or section (fwup 1.16 ignores what it does not know): applied."""
    body = (
        'meta-new-thing = "x"\nmystery-section "x" {\nanything = 1\n}\n'
        'task "upgrade" {\nnew-task-option = 2\n'
        'on-resource "rootfs.img" {\nfunlist={2,raw_write,1}\n}\n}\n'
    )
    fw = _fw_with_conf(tmp_path, body)
    target = tmp_path / "t.img"
    result = run(["-a", "-q", "-d", str(target), "-t", "upgrade", "-p", KEY, "-i", str(fw)])
    assert (result.returncode, result.stdout) == (0, b"")
    assert target.read_bytes()[512 : 512 + 1024] == b"x" * 1024


def test_bad_public_keys_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_text("not base64!!")
    result = run(
        [
            "-a",
            "-d",
            str(tmp_path / "t.img"),
            "-t",
            "upgrade",
            "-p",
            str(bad),
            "-i",
            str(FIXTURES / "simple.fw"),
        ]
    )
    # fwup's texts, before anything else is written (keys are read with the options).
    assert result.returncode == 1
    expected = f"fwup: Error reading or decoding public key from file '{bad}'\n"
    assert result.stdout == expected.encode()
    result = run(["-V", "--public-key", "AAAA", "-i", str(FIXTURES / "simple.fw")])
    assert (result.returncode, result.stdout) == (1, b"fwup: Error decoding public key\n")
    result = run(["-V", "-p", str(tmp_path / "none.pub"), "-i", str(FIXTURES / "simple.fw")])
    assert result.returncode == 1
    assert result.stdout.startswith(b"fwup: Error opening public key file '")


def test_unwritable_target_is_clear(tmp_path: Path) -> None:
    result = run(
        [
            "-a",
            "-d",
            str(tmp_path / "no" / "such" / "dir.img"),
            "-t",
            "upgrade",
            "-p",
            KEY,
            "-i",
            str(FIXTURES / "simple.fw"),
        ]
    )
    assert result.returncode == 1
    assert b"Cannot create '" in result.stdout and b"Traceback" not in result.stderr


def test_usage_errors_exit_1_without_traceback() -> None:
    for args in (["--bogus"], [], ["-a", "-a", "-V"]):
        result = run(args)
        assert result.returncode == 1
        assert b"Traceback" not in result.stderr


def _corrupt_ab(tmp_path: Path) -> Path:
    """ab.fw with one byte of rootfs.img flipped and a consistent ZIP CRC, so that
    only the signed blake2b-256 catches it (the signature stays valid)."""
    src = zipfile.ZipFile(FIXTURES / "ab.fw")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "data/rootfs.img":
                data = data[:300000] + bytes([data[300000] ^ 0xFF]) + data[300001:]
            dst.writestr(
                info.filename,
                data,
                zipfile.ZIP_STORED
                if info.filename == "meta.conf.ed25519"
                else zipfile.ZIP_DEFLATED,
            )
    path = tmp_path / "corrupt-ab.fw"
    path.write_bytes(out.getvalue())
    return path


def test_corrupt_upgrade_never_touches_the_running_slot(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    with image.open("wb") as fh:
        fh.truncate(64 << 20)
    assert (
        run(
            [
                "-a",
                "-q",
                "-d",
                str(image),
                "-t",
                "complete",
                "-p",
                KEY,
                "-i",
                str(FIXTURES / "ab.fw"),
            ]
        ).returncode
        == 0
    )
    before = image.read_bytes()
    result = run(
        [
            "-a",
            "--framing",
            "-d",
            str(image),
            "-t",
            "upgrade",
            "-p",
            KEY,
            "-i",
            str(_corrupt_ab(tmp_path)),
        ]
    )
    assert result.returncode == 1
    assert framed_errors(result.stdout) == [b"raw_write detected blake2b mismatch on 'rootfs.img'"]
    after = image.read_bytes()
    # Declared region of upgrade.b's data: rootfs B (blocks 45056..86015). Everything
    # else -- MBR, bootloader, U-Boot env (still saying "a"), rootfs A -- is unchanged.
    b_start, b_end = 45056 * 512, 86016 * 512
    assert after[:b_start] == before[:b_start]
    assert after[b_end:] == before[b_end:]
    assert hashlib.sha256(after).hexdigest() != hashlib.sha256(bytes(64 << 20)).hexdigest()


def test_errors_are_nhlink_errors_only() -> None:
    # The core raises only the documented tree; str() is fwup's ER text.
    outcome, _, _ = apply(SIMPLE, "nosuchtask", [])
    assert outcome.startswith("Couldn't find applicable task 'nosuchtask'")
    assert issubclass(FirmwareError, NhlinkError)
