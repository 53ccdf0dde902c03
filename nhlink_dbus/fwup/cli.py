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

import binascii
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence

from nhlink_dbus.core.fwup_framing import (
    InputDeframer,
    PacketType,
    encode_packet,
)
from nhlink_dbus.errors import NhlinkError
from nhlink_dbus.fwup.pipes import widen_pipe
from nhlink_dbus.fwup.session import READ_SIZE, ApplySession, error_text

TYPE_CHECKING = False  # without importing typing (nhlink_dbus/core/lean.py)
if TYPE_CHECKING:
    from typing import BinaryIO

FWUP_COMPAT_VERSION = "1.16.0"
BULK_READ = 1 << 20


class _UsageError(Exception):
    pass


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


# -- the command line ---------------------------------------------------------------------
#
# Parsed as fwup parses it, with getopt_long's rules: options and arguments in any order,
# short options grouped (-aq) and their values attached (-dIMG) or next (-d IMG), a long
# option's value after "=" or next, a long option abbreviated to any prefix that names only
# it, "--" ending the options. (Not argparse: its import and set-up were 3.6 ms of every
# start, against fwup's whole 4 ms.)


class _Args:
    """The parsed command line (the defaults are the class attributes)."""

    command: str | None = None  # "apply", "verify", "metadata" or "list"
    easy = True  # fwup's "easy mode": no option but a lone FILE to apply
    help = False
    version = False
    metadata_key: str | None = None
    device: str | None = None
    task: str | None = None
    input: str | None = None
    framing = False
    exit_handshake = False
    quiet = False
    numeric = False
    verbose = False
    progress_low = 0
    progress_high = 100
    verify_writes: bool | None = None  # None: fwup's default (on for block devices)
    reboot_param_path: str | None = None
    enable_trim = False
    max_size: int | None = None
    unsafe = False

    def __init__(self) -> None:
        self.keys: list[tuple[str, str]] = []  # ("file", path) or ("text", base64), in order
        self.rest: list[str] = []  # the arguments that are not options


class _Option:
    """One option: what it sets (``dest`` to ``value``, or with ``metavar`` to its
    argument through ``convert``), and whether it ends fwup's easy mode (``hard``)."""

    __slots__ = ("convert", "dest", "hard", "help", "long", "metavar", "short", "value")

    def __init__(
        self,
        short: str,
        long: str,
        dest: str,
        help: str,
        *,
        value: object = True,
        metavar: str = "",
        convert: Callable[[str], object] = str,
        hard: bool = False,
    ) -> None:
        self.short, self.long, self.dest, self.help = short, long, dest, help
        self.value, self.metavar, self.convert, self.hard = value, metavar, convert, hard

    def names(self) -> list[str]:
        return [n for n in (self.short and "-" + self.short, self.long and "--" + self.long) if n]

    def apply(self, args: _Args, argument: str | None) -> None:
        if self.dest == "keys":
            args.keys.append((str(self.value), str(argument)))
        elif self.dest:  # "": accepted, and nothing to remember
            setattr(args, self.dest, self.value if argument is None else self.convert(argument))
        if self.hard:
            args.easy = False


ACCEPTED = "accepted for compatibility"
OPTIONS = (
    _Option("a", "apply", "command", "apply the firmware", value="apply", hard=True),
    _Option("V", "verify", "command", "verify the archive", value="verify", hard=True),
    _Option("m", "metadata", "command", "print the metadata", value="metadata", hard=True),
    _Option("l", "list", "command", "list the tasks", value="list", hard=True),
    _Option("h", "help", "help", "show this help and exit"),
    _Option("", "version", "version", "print the fwup version emulated"),
    _Option("", "metadata-key", "metadata_key", "with -m: print just this value", metavar="KEY"),
    _Option("d", "", "device", "destination device or image file", metavar="DEV"),
    _Option("t", "task", "task", "task to apply (a prefix, as in fwup)", metavar="TASK"),
    _Option("i", "", "input", "input .fw file ('-' = stdin)", metavar="FILE", hard=True),
    _Option("p", "public-key-file", "keys", "a key file", value="file", metavar="FILE", hard=True),
    _Option("", "public-key", "keys", "a key", value="text", metavar="BASE64"),
    _Option("F", "framing", "framing", "framed stdin and stdout", hard=True),
    _Option(
        "",
        "exit-handshake",
        "exit_handshake",
        "write 0x1A and the exit status, then wait for stdin to close",
    ),
    _Option("q", "quiet", "quiet", "no progress output"),
    _Option("n", "", "numeric", "numeric progress"),
    _Option("v", "verbose", "verbose", "more messages"),
    _Option("", "progress-low", "progress_low", "first percent", metavar="N", convert=_c_int),
    _Option("", "progress-high", "progress_high", "last percent", metavar="N", convert=_c_int),
    _Option(
        "", "verify-writes", "verify_writes", "read every write back (the default on block devices)"
    ),
    _Option("", "no-verify-writes", "verify_writes", "do not read writes back", value=False),
    _Option(
        "",
        "reboot-param-path",
        "reboot_param_path",
        "where reboot_param() writes its text",
        metavar="FILE",
    ),
    _Option("", "minimize-writes", "", ACCEPTED),
    _Option("", "no-minimize-writes", "", ACCEPTED),
    _Option("", "enable-trim", "enable_trim", "accepted (ignored on files)"),
    _Option("y", "", "", ACCEPTED),
    _Option("E", "eject", "", "accepted (nothing is ejected)"),
    _Option("", "no-eject", "", ACCEPTED),
    _Option("U", "no-unmount", "", "accepted (nothing is mounted)"),
    _Option("u", "unmount", "", ACCEPTED),
    _Option(
        "",
        "max-size",
        "max_size",
        "hard limit on the destination size, in 512-byte blocks",
        metavar="BLOCKS",
        convert=_c_int,
    ),
    _Option(
        "", "unsafe", "unsafe", "allow path_write, pipe_write and execute (they touch the host)"
    ),
)
_SHORT = {o.short: o for o in OPTIONS if o.short}
_LONG = {o.long: o for o in OPTIONS if o.long}

USAGE = """\
usage: nhlink-fwup -a -d DEV -t TASK -i FILE|- [-p KEYFILE]... [--public-key B64]...
                   [--framing] [--exit-handshake] [-q] [-n] [--max-size BLOCKS]
       nhlink-fwup -V|-m|-l -i FILE|- [-p KEYFILE]... [--framing]
       nhlink-fwup FILE   (fwup's easy mode: apply FILE's task "complete")

Verify and apply fwup firmware archives (.fw); fwup-compatible subset.
"""


def help_text() -> str:
    """``--help``: the usage, then every option."""
    rows = []
    for o in OPTIONS:
        names = ", ".join(n + (" " + o.metavar if o.metavar else "") for n in o.names())
        rows.append((names, o.help))
    width = max(len(names) for names, _help in rows) + 2
    return USAGE + "\noptions:\n" + "".join(f"  {n:<{width}}{h}\n" for n, h in rows)


def _long_option(name: str) -> _Option:
    """The option ``--name`` names: itself, or the only option it is a prefix of."""
    option = _LONG.get(name)
    if option is not None:
        return option
    matches = [o for long, o in _LONG.items() if long.startswith(name)] if name else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise _UsageError(f"unrecognized option '--{name}'")
    names = " ".join(f"'--{o.long}'" for o in matches)
    raise _UsageError(f"option '--{name}' is ambiguous; possibilities: {names}")


def parse_args(argv: Sequence[str]) -> _Args:
    """fwup's command line, read as getopt_long reads it; :class:`_UsageError` with
    getopt's message for an unknown option or a missing value."""
    args = _Args()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            args.rest += argv[i:]
            break
        if arg.startswith("--"):
            name, equals, value = arg[2:].partition("=")
            option = _long_option(name)
            if not option.metavar:
                if equals:
                    raise _UsageError(f"option '--{option.long}' doesn't allow an argument")
                option.apply(args, None)
                if args.help or args.version:
                    return args  # fwup answers these at once, whatever follows
                continue
            if not equals:
                if i == len(argv):
                    raise _UsageError(f"option '--{option.long}' requires an argument")
                value = argv[i]
                i += 1
            option.apply(args, value)
        elif arg.startswith("-") and arg != "-":
            for at in range(1, len(arg)):
                short = _SHORT.get(arg[at])
                if short is None:
                    raise _UsageError(f"invalid option -- '{arg[at]}'")
                if not short.metavar:
                    short.apply(args, None)
                    if args.help:
                        return args
                    continue
                if at + 1 < len(arg):  # -dIMG
                    short.apply(args, arg[at + 1 :])
                elif i < len(argv):  # -d IMG
                    short.apply(args, argv[i])
                    i += 1
                else:
                    raise _UsageError(f"option requires an argument -- '{arg[at]}'")
                break
        else:
            args.rest.append(arg)
    return args


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
        raw = binascii.a2b_base64(text + b"=" * (-len(text) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def _load_keys(args: _Args, out: Output) -> list[bytes]:
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


def _open_input(args: _Args) -> tuple[BinaryIO, bool]:
    """(stream, from_stdin)."""
    if args.input in (None, "-"):
        return sys.stdin.buffer, True
    try:
        return open(args.input, "rb"), False
    except OSError as exc:
        raise NhlinkError(f"{args.input}: {exc.strerror}") from None


def _apply(args: _Args, out: Output, keys: list[bytes]) -> None:
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
            archive_name="(null)" if from_stdin or args.input is None else args.input,
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


def _inspect(args: _Args, out: Output, keys: list[bytes]) -> None:
    from nhlink_dbus.core.fwup_meta import ArchiveInspector  # noqa: PLC0415  (not needed to apply)
    from nhlink_dbus.fwup.signature import check_signature  # noqa: PLC0415

    if args.command == "verify" and args.input in (None, "-"):
        raise NhlinkError("Specify an input firmware file")  # fwup_verify.c: no stdin
    source, from_stdin = _open_input(args)
    inspector = ArchiveInspector(
        keys,
        check_signature,
        verify=args.command == "verify",
        archive_name="(null)" if from_stdin or args.input is None else args.input,
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
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except _UsageError as exc:
        sys.stderr.write(f"nhlink-fwup: {exc}\nTry 'nhlink-fwup --help'.\n")
        return 1
    if args.help:
        sys.stdout.write(help_text())
        return 0
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
