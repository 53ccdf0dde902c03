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
import base64
import binascii
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO, NoReturn

from nhlink_dbus.core.fwup_framing import (
    InputDeframer,
    PacketType,
    encode_packet,
)
from nhlink_dbus.errors import NhlinkError
from nhlink_dbus.fwup.pipes import widen_pipe
from nhlink_dbus.fwup.session import READ_SIZE, ApplySession, error_text

FWUP_COMPAT_VERSION = "1.16.0"
BULK_READ = 1 << 20


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's, sized as shutil.get_terminal_size would size it, without importing
    shutil (and bz2 and lzma with it) at every start: argparse makes a formatter for
    each option it adds."""

    def __init__(self, prog: str) -> None:
        try:
            columns = int(os.environ["COLUMNS"])
        except (KeyError, ValueError):
            try:
                columns = os.get_terminal_size(1).columns
            except OSError:
                columns = 80
        super().__init__(prog, width=columns - 2)


class _Key(argparse.Action):
    """-p FILE and --public-key B64 share one ordered list, as in fwup."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        namespace.keys.append((self.const, str(values)))
        if self.const == "file":
            namespace.easy = False


class _NotEasy(argparse.Action):
    """An option after which a lone argument is no longer fwup's "easy mode" file."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        namespace.easy = False


def _c_int(text: str) -> int:
    """strtol(text, 0, 0): decimal, 0x hex or 0 octal; what does not parse is 0."""
    text = text.strip()
    try:
        return int(text, 0)
    except ValueError:
        try:
            return int(text, 8) if text.startswith("0") else int(text)
        except ValueError:
            return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="nhlink-fwup",
        description="Verify and apply fwup firmware archives (.fw); fwup-compatible subset.",
        add_help=True,
        formatter_class=_HelpFormatter,
    )
    p.set_defaults(keys=[], easy=True, command=None)
    for short, long, name, text in (
        ("-a", "--apply", "apply", "apply the firmware"),
        ("-V", "--verify", "verify", "verify the archive"),
        ("-m", "--metadata", "metadata", "print the metadata"),
        ("-l", "--list", "list", "list the tasks"),
    ):
        p.add_argument(short, long, nargs=0, const=name, dest="command", action=_NotEasy, help=text)
    p.add_argument("--version", action="store_true", help="print the fwup version emulated")
    p.add_argument("--metadata-key", metavar="KEY", help="with -m: print just this value")
    p.add_argument("-d", dest="device", metavar="DEV", help="destination device or image file")
    p.add_argument("-t", "--task", help="task to apply (a prefix, as in fwup)")
    p.add_argument(
        "-i", dest="input", metavar="FILE", action=_NotEasy, help="input .fw file ('-' = stdin)"
    )
    p.add_argument(
        "-p", "--public-key-file", action=_Key, const="file", metavar="FILE", help="a key file"
    )
    p.add_argument("--public-key", action=_Key, const="text", metavar="BASE64", help="a key")
    p.add_argument(
        "-F", "--framing", nargs=0, const=True, default=False, action=_NotEasy,
        help="framed stdin and stdout",
    )  # fmt: skip
    p.add_argument(
        "--exit-handshake",
        action="store_true",
        help="write 0x1A and the exit status, then wait for stdin to close",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("-n", dest="numeric", action="store_true", help="numeric progress")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--progress-low", type=_c_int, default=0, metavar="N", help="first percent")
    p.add_argument("--progress-high", type=_c_int, default=100, metavar="N", help="last percent")
    p.add_argument(
        "--verify-writes",
        dest="verify_writes",
        action="store_const",
        const=True,
        default=None,
        help="read every write back (the default on block devices)",
    )
    p.add_argument("--no-verify-writes", dest="verify_writes", action="store_const", const=False)
    p.add_argument(
        "--reboot-param-path", metavar="FILE", help="where reboot_param() writes its text"
    )
    p.add_argument("--minimize-writes", action="store_true", help="accepted for compatibility")
    p.add_argument("--no-minimize-writes", action="store_true", help="accepted")
    p.add_argument("--enable-trim", action="store_true", help="accepted (ignored on files)")
    p.add_argument("-y", dest="yes", action="store_true", help="accepted for compatibility")
    p.add_argument("-E", "--eject", action="store_true", help="accepted (nothing is ejected)")
    p.add_argument("--no-eject", action="store_true", help="accepted for compatibility")
    p.add_argument("-U", "--no-unmount", action="store_true", help="accepted (nothing is mounted)")
    p.add_argument("-u", "--unmount", action="store_true", help="accepted for compatibility")
    p.add_argument(
        "--max-size",
        type=_c_int,
        metavar="BLOCKS",
        help="hard limit on the destination size, in 512-byte blocks",
    )
    p.add_argument(
        "--unsafe",
        action="store_true",
        help="allow path_write, pipe_write and execute (they touch the host)",
    )
    p.add_argument("rest", nargs="*", metavar="FILE", help="fwup's easy mode: apply FILE")
    return p


class Output:
    """Where fwup's messages go: framed packets, or text lines on stdout.

    ``bar`` is fwup's normal progress mode (apply without -q, -n or --framing):
    a redrawn bar, messages on a cleared line, ``Success!`` and the time.
    """

    def __init__(self, stream: BinaryIO, framing: bool, quiet: bool, numeric: bool) -> None:
        self.stream = stream
        self.framing = framing
        self.quiet = quiet
        self.numeric = numeric
        self.bar = False  # set by start_apply(): fwup picks its progress mode there
        self.units: Callable[[], tuple[int, int, int]] | None = None  # (in, done, total)
        self.started: float | None = None

    def start_apply(self) -> None:
        """The apply begins: without -q, -n or --framing, fwup's bar from here on."""
        self.bar = not (self.framing or self.quiet or self.numeric)

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
        elif self.bar:
            self._write(self._bar(percent).encode())

    def _bar(self, percent: int) -> str:
        bar = f"\r{percent:3d}% [{'=' * (percent * 36 // 100):<36}]"
        read, done, total = self.units() if self.units is not None else (0, 0, 0)
        if total <= 0:
            return bar
        if self.started is None:
            self.started = time.monotonic()
        return f"{bar} {_pretty(read)} in / {_pretty(done)} out     \b\b\b\b\b"

    def _text(self, text: str) -> None:
        prefix = b"\r\x1b[K" if self.bar else b""
        self._write(prefix + f"fwup: {text}\n".encode())

    def warning(self, text: str) -> None:
        if self.framing:
            self._write(encode_packet(PacketType.WN, 0, text))
        else:
            self._text(text)

    def error(self, text: str) -> None:
        if self.framing:
            self._write(encode_packet(PacketType.ER, 0, text))
        else:
            self._text(text)

    def success(self) -> None:
        """After the last progress report of a successful apply."""
        if self.framing:
            self._write(encode_packet(PacketType.OK, 0, ""))
        elif self.bar:
            lines = "\nSuccess!\n"
            if self.started is not None:
                ms = int((time.monotonic() - self.started) * 1000)
                if ms > 60000:
                    lines += f"Elapsed time: {ms // 60000} min {ms // 1000 % 60:02d} s\n"
                else:
                    lines += f"Elapsed time: {ms // 1000}.{ms % 1000:03d} s\n"
            self._write(lines.encode())

    def ok(self, text: str = "") -> None:
        if self.framing:
            self._write(encode_packet(PacketType.OK, 0, text))
        elif text:
            self._write(text.encode())

    def raw(self, data: bytes) -> None:
        self._write(data)


def _pretty(amount: int) -> str:
    """fwup's "natural units" (decimal KB/MB/GB/TB above 1000) with two decimals."""
    for unit, name in ((10**12, "TB"), (10**9, "GB"), (10**6, "MB"), (10**3, "KB")):
        if amount >= unit:
            return f"{amount / unit:.2f} {name}"
    return f"{amount:.2f} bytes"


class _Input:
    """How reading the archive ended: ``error`` is the text of fwup's failed read when
    framed stdin stops without its zero-length frame (src/archive_open.c)."""

    error: str | None = None


def _chunks(
    source: BinaryIO, framed: bool, ended: _Input, bulk: bool = False
) -> Iterator[memoryview | bytes]:
    """The archive as fwup's reader sees it: pieces of at most 16 KiB, or with ``bulk``
    runs of them for the reader to cut into 16 KiB reads again (one Python call per
    run instead of one per read): a regular file's whole reads, a frame's whole reads,
    and what a pipe holds."""
    fd = source.fileno()
    if framed:
        deframer = InputDeframer(READ_SIZE, runs=bulk)
        if bulk:
            widen_pipe(fd, BULK_READ)  # from `cat |` 128 MiB: 0.81 -> 1.03 of fwup
        for got in _reads(fd):
            yield from deframer.feed(got)  # copies what it keeps
            if deframer.ended:
                return
        cut = deframer.in_frame
        yield from deframer.finish()
        # fwup's framed_stdin_read: a frame cut short, or no length to read.
        ended.error = (
            "Received EOF even though framing indicated more bytes"
            if cut
            else "Error reading stdin"
        )
        return
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        # A pipe: each of fwup's read(16 KiB) returns what is there (the archive
        # reader's pieces, and with them the progress packets, follow them). With
        # ``bulk``, what the pipe holds is read at once and cut into 16 KiB reads,
        # which is what fwup's reads return while the writer is ahead of it.
        if not bulk:
            while data := os.read(fd, READ_SIZE):
                yield data
            return
        widen_pipe(fd, BULK_READ)
        for got in _reads(fd):
            yield bytes(got)
        return
    while True:
        data = os.read(fd, BULK_READ)
        if not data:
            return
        if bulk:
            yield data
            continue
        view = memoryview(data)
        for start in range(0, len(view), READ_SIZE):
            yield view[start : start + READ_SIZE]


def _reads(fd: int) -> Iterator[memoryview]:
    """What each read of ``fd`` (up to 1 MiB) returns, until its end, in one buffer that
    the next read overwrites: os.read(fd, 1 MiB) would map and unmap a megabyte for
    every read of a pipe's 64 KiB."""
    buffer = bytearray(BULK_READ)
    view = memoryview(buffer)
    while size := os.readv(fd, [buffer]):
        yield view[:size]


MAX_PUBLIC_KEYS = 10  # fwup's FWUP_MAX_PUBLIC_KEYS


def _decode_key(buffer: bytes) -> bytes | None:
    """fwup's rule: 32 raw bytes, or base64 (padded or not) of 32 bytes."""
    if len(buffer) == 32:
        return buffer
    text = buffer.strip()
    try:
        raw = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def _load_keys(args: argparse.Namespace, out: Output) -> list[bytes]:
    keys: list[bytes] = []
    for kind, value in args.keys:
        if len(keys) >= MAX_PUBLIC_KEYS:
            out.warning(f"Ignoring public key since only {MAX_PUBLIC_KEYS} supported")
            continue
        if kind == "file":
            try:
                with open(value, "rb") as fh:
                    buffer = fh.read(44)  # base64 of 32 bytes; fwup reads no more
            except OSError as exc:
                raise NhlinkError(
                    f"Error opening public key file '{value}': {exc.strerror}"
                ) from None
            key = _decode_key(buffer)
            if key is None:
                raise NhlinkError(f"Error reading or decoding public key from file '{value}'")
        else:
            key = _decode_key(value.encode("utf-8", "surrogateescape"))
            if key is None:
                raise NhlinkError("Error decoding public key")
        keys.append(key)
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
    if not args.task:
        raise NhlinkError("specify a task (-t)")
    if not args.device:
        raise NhlinkError("specify a device (-d): nhlink-fwup does not look for memory cards")
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
            verify_writes=args.verify_writes,
            progress_range=(args.progress_low, args.progress_high),
            reboot_param_path=args.reboot_param_path,
            archive_name="(null)" if from_stdin else args.input,
        ) as session:
            out.units = lambda: (session.consumed, *session.units)
            if args.enable_trim and not session.target.is_block_device:
                out.warning("ignoring --enable-trim since operating on a regular file")
            ended = _Input()
            for chunk in _chunks(source, from_stdin and args.framing, ended, bulk=True):
                if session.feed(chunk, READ_SIZE):
                    break
            session.finish(ended.error)
    except BaseException:
        out.units = None
        raise
    finally:
        # On success the units stay: fwup's bar shows them at 100% too.
        if not from_stdin:
            source.close()


def _inspect(args: argparse.Namespace, out: Output, keys: list[bytes]) -> None:
    from nhlink_dbus.core.fwup_meta import ArchiveInspector  # noqa: PLC0415  (not needed to apply)
    from nhlink_dbus.fwup.signature import check_signature  # noqa: PLC0415

    if args.command == "verify" and args.input in (None, "-"):
        raise NhlinkError("Specify an input firmware file")  # fwup_verify.c: no stdin
    source, from_stdin = _open_input(args)
    inspector = ArchiveInspector(
        keys,
        check_signature,
        verify=args.command == "verify",
        archive_name="(null)" if from_stdin else args.input,
    )
    try:
        for chunk in _chunks(source, from_stdin and args.framing, _Input()):
            inspector.feed(chunk)
            if inspector.complete:
                break
        inspector.finish()
    finally:
        if not from_stdin:
            source.close()
    info = inspector.info
    assert info is not None
    if args.command == "verify":
        out.ok(inspector.verify_text())
    elif args.command == "list":
        out.ok(info.task_list_text())
    elif args.metadata_key is not None:
        # fwup prints what libconfuse gives for the name: "(null)" for an unset or unknown one.
        value = info.metadata().get(args.metadata_key)
        out.ok(("(null)" if value is None else value) + "\n")
    else:
        out.ok(info.metadata_text())


def _drain_stdin() -> None:
    try:
        while os.read(0, BULK_READ):
            pass
    except OSError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 success, 1 failure). As the program
    (``argv`` None), a success ends the process at once (:func:`_leave`)."""
    status = _main(argv)
    if argv is None and status == 0:
        _leave()
    return status


def _leave() -> None:
    """End the process without the interpreter's teardown once all is done: no other
    thread alive, stdout and stderr flushed. Tearing down the modules and objects of an
    apply takes about 5 ms, an eighth of nhlink-fwup's start-up and exit (37 ms against
    fwup's 4.5 ms for a small archive), which is what a 128 MiB apply spends beyond
    fwup's. Only after a success: a failure may have left objects whose finalizers
    clean up (temporary files). If anything is left to do, this returns and the normal
    exit does it."""
    import threading  # noqa: PLC0415  (loaded by now)

    if threading.active_count() != 1:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return  # the normal exit reports it
    os._exit(0)


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as exc:
        sys.stderr.write(f"nhlink-fwup: {exc}\nTry 'nhlink-fwup --help'.\n")
        return 1
    if args.version:
        sys.stdout.write(FWUP_COMPAT_VERSION + "\n")
        return 0
    if args.easy and args.command is None and len(args.rest) == 1:
        # fwup's easy mode: a lone .fw file means "apply it" (task "complete" by default).
        args.command, args.input = "apply", args.rest.pop()
        args.task = args.task or "complete"
    applying = args.command == "apply"
    out = Output(sys.stdout.buffer, args.framing, args.quiet, args.numeric)
    status = 0
    try:
        if args.quiet and args.numeric:
            raise NhlinkError("pick either -n or -q, but not both")
        keys = _load_keys(args, out)
        if args.rest:
            raise NhlinkError(f"unexpected parameter: {args.rest[0]}")
        if applying:
            out.start_apply()
            out.progress(args.progress_low)  # fwup reports "low" before it opens the archive
            try:
                _apply(args, out, keys)
            except Exception:
                if not args.quiet:
                    sys.stderr.write("\n")  # fwup ends the progress line on stderr first
                    sys.stderr.flush()
                raise
            out.progress(args.progress_high)
            out.success()
        elif args.command in ("verify", "metadata", "list"):
            _inspect(args, out, keys)
        else:
            raise NhlinkError("specify one of -a, -l, -m or -V (see --help)")
    except Exception as exc:  # never a traceback: one ER line, exit 1
        out.error(error_text(exc))
        status = 1
    if args.exit_handshake:
        out.raw(bytes([0x1A, status]))
        _drain_stdin()
    return status


if __name__ == "__main__":
    sys.exit(main())
