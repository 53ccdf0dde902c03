"""``nhlink-fwup``: fwup's command line for the subset this applier implements.

Programs that run ``fwup`` (nerves_hub_link, nhlink-dbus's external applier
path, scripts) can run this instead::

    nhlink-fwup -a -d DEV -t TASK -i FILE|- [-p KEYFILE]... [--public-key B64]...
                [--framing] [--exit-handshake] [-q] [-n] [--max-size BLOCKS]
    nhlink-fwup -V|-m|-l -i FILE|- [-p KEYFILE]... [--framing]

Output, exit status and error texts follow fwup 1.16 (fixtures/fwup/EXPECT.md):
with ``--framing`` every message is a framed packet on stdout and stdin is
framed too; without it, progress numbers (``-n``), ``fwup: <info>`` and
``fwup: <error>`` lines go to stdout. Exit status 0 on success, 1 on failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from typing import BinaryIO, NoReturn

from nhlink_dbus.core.fwup_framing import (
    InputDeframer,
    PacketType,
    encode_packet,
)
from nhlink_dbus.core.fwup_meta import ArchiveInspector
from nhlink_dbus.errors import NhlinkError
from nhlink_dbus.fwup.session import READ_SIZE, ApplySession, error_text
from nhlink_dbus.fwup.signature import check_signature, parse_public_key

FWUP_COMPAT_VERSION = "1.16.0"
BULK_READ = 1 << 20


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="nhlink-fwup",
        description="Verify and apply fwup firmware archives (.fw); fwup-compatible subset.",
        add_help=True,
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("-a", "--apply", action="store_true", help="apply the firmware")
    mode.add_argument("-V", "--verify", action="store_true", help="verify the archive")
    mode.add_argument("-m", "--metadata", action="store_true", help="print the metadata")
    mode.add_argument("-l", "--list", action="store_true", help="list the tasks")
    mode.add_argument("--version", action="store_true", help="print the fwup version emulated")
    p.add_argument("--metadata-key", metavar="KEY", help="with -m: print just this value")
    p.add_argument("-d", dest="device", metavar="DEV", help="destination device or image file")
    p.add_argument("-t", "--task", help="task to apply (a prefix, as in fwup)")
    p.add_argument("-i", dest="input", metavar="FILE", help="input .fw file ('-' = stdin)")
    p.add_argument("-p", "--public-key-file", action="append", default=[], metavar="FILE")
    p.add_argument("--public-key", action="append", default=[], metavar="BASE64")
    p.add_argument("--framing", action="store_true", help="framed stdin and stdout")
    p.add_argument(
        "--exit-handshake",
        action="store_true",
        help="write 0x1A and the exit status, then wait for stdin to close",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("-n", dest="numeric", action="store_true", help="numeric progress")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-y", dest="yes", action="store_true", help="accepted for compatibility")
    p.add_argument("-U", "--no-unmount", action="store_true", help="accepted (nothing is mounted)")
    p.add_argument("--unmount", action="store_true", help="accepted for compatibility")
    p.add_argument(
        "--max-size",
        type=int,
        metavar="BLOCKS",
        help="hard limit on the destination size, in 512-byte blocks",
    )
    p.add_argument(
        "--unsafe",
        action="store_true",
        help="allow path_write, pipe_write and execute (they touch the host)",
    )
    return p


class Output:
    """Where fwup's messages go: framed packets, or text lines on stdout."""

    def __init__(self, stream: BinaryIO, framing: bool, quiet: bool, numeric: bool) -> None:
        self.stream = stream
        self.framing = framing
        self.quiet = quiet
        self.numeric = numeric
        self.tty = stream.isatty() if hasattr(stream, "isatty") else False

    def _write(self, data: bytes) -> None:
        try:
            self.stream.write(data)
            self.stream.flush()
        except BrokenPipeError:
            pass

    def progress(self, percent: int) -> None:
        if self.quiet:
            return
        if self.framing:
            self._write(encode_packet(PacketType.PR, percent))
        elif self.numeric:
            self._write(f"{percent}\n".encode())
        elif self.tty:
            bar = "=" * (percent // 2)
            self._write(f"\r{percent:3d}% [{bar:<50}]".encode())
            if percent == 100:
                self._write(b"\n")

    def warning(self, text: str) -> None:
        if self.framing:
            self._write(encode_packet(PacketType.WN, 0, text))
        else:
            self._write(f"fwup: {text}\n".encode())

    def error(self, text: str) -> None:
        if self.framing:
            self._write(encode_packet(PacketType.ER, 0, text))
        else:
            self._write(f"fwup: {text}\n".encode())
        if not self.quiet:
            # fwup also writes a lone newline to stderr on failure.
            sys.stderr.write("\n")
            sys.stderr.flush()

    def ok(self, text: str = "") -> None:
        if self.framing:
            self._write(encode_packet(PacketType.OK, 0, text))
        elif text:
            self._write(text.encode())

    def raw(self, data: bytes) -> None:
        self._write(data)


def _chunks(source: BinaryIO, framed: bool) -> Iterator[memoryview | bytes]:
    """The archive as fwup's reader sees it: pieces of at most 16 KiB."""
    fd = source.fileno()
    if framed:
        deframer = InputDeframer(READ_SIZE)
        while not deframer.ended:
            data = os.read(fd, BULK_READ)
            if not data:
                yield from deframer.finish()
                return
            yield from deframer.feed(data)
        return
    while True:
        data = os.read(fd, BULK_READ)
        if not data:
            return
        view = memoryview(data)
        for start in range(0, len(view), READ_SIZE):
            yield view[start : start + READ_SIZE]


def _load_keys(args: argparse.Namespace) -> list[bytes]:
    keys = []
    for path in args.public_key_file:
        try:
            with open(path, encoding="ascii") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise NhlinkError(f"Error reading public key file '{path}': {exc}") from None
        keys.append(parse_public_key(text, f"public key file '{path}'"))
    for text in args.public_key:
        keys.append(parse_public_key(text, "--public-key"))
    return keys


def _open_input(args: argparse.Namespace) -> tuple[BinaryIO, bool]:
    """(stream, from_stdin)."""
    if args.input in (None, "-"):
        return sys.stdin.buffer, True
    try:
        return open(args.input, "rb"), False
    except OSError as exc:
        raise NhlinkError(f"{args.input}: {exc.strerror}") from None


def _apply(args: argparse.Namespace, out: Output, keys: list[bytes]) -> None:
    if not args.device:
        raise NhlinkError("Specify a destination with -d")
    if not args.task:
        raise NhlinkError("Specify a task to run with -t")
    source, from_stdin = _open_input(args)
    try:
        with ApplySession(
            args.device,
            args.task,
            keys,
            out,
            os.environ,
            max_size_blocks=args.max_size,
            unsafe=args.unsafe,
            verbose=args.verbose,
        ) as session:
            for chunk in _chunks(source, framed=from_stdin and args.framing):
                if session.feed(chunk):
                    break
            session.finish()
    finally:
        if not from_stdin:
            source.close()


def _inspect(args: argparse.Namespace, out: Output, keys: list[bytes]) -> None:
    source, from_stdin = _open_input(args)
    inspector = ArchiveInspector(keys, check_signature, verify=args.verify)
    try:
        for chunk in _chunks(source, framed=from_stdin and args.framing):
            inspector.feed(chunk)
            if inspector.complete:
                break
        inspector.finish()
    finally:
        if not from_stdin:
            source.close()
    info = inspector.info
    assert info is not None
    if args.verify:
        out.ok(inspector.verify_text())
    elif args.list:
        out.ok(info.task_list_text())
    elif args.metadata_key:
        value = info.metadata().get(args.metadata_key)
        if value is None:
            raise NhlinkError(f"Metadata key '{args.metadata_key}' not found")
        out.ok(value + "\n")
    else:
        out.ok(info.metadata_text())


def _drain_stdin() -> None:
    try:
        while os.read(0, BULK_READ):
            pass
    except OSError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 success, 1 failure)."""
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as exc:
        sys.stderr.write(f"nhlink-fwup: {exc}\nTry 'nhlink-fwup --help'.\n")
        return 1
    if args.version:
        sys.stdout.write(FWUP_COMPAT_VERSION + "\n")
        return 0
    out = Output(sys.stdout.buffer, args.framing, args.quiet, args.numeric)
    status = 0
    try:
        keys = _load_keys(args)
        if args.apply:
            out.progress(0)  # fwup sends PR 0 before it opens the archive
            _apply(args, out, keys)
            out.progress(100)
            out.ok()
            if not args.framing and not args.numeric and not args.quiet:
                out.raw(b"Success!\n")
        elif args.verify or args.metadata or args.list:
            _inspect(args, out, keys)
        else:
            raise NhlinkError("Specify one of -a, -V, -m, -l (see --help)")
    except Exception as exc:  # never a traceback: one ER line, exit 1
        out.error(error_text(exc))
        status = 1
    if args.exit_handshake:
        out.raw(bytes([0x1A, status]))
        _drain_stdin()
    return status


if __name__ == "__main__":
    sys.exit(main())
