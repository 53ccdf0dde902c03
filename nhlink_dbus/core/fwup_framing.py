"""fwup's ``--framing`` protocol, both directions (protocol.md §6.5, fixtures/fwup/EXPECT.md).

Every packet is a 4-byte big-endian length followed by that many bytes.

* Input (the ``.fw`` on fwup's stdin): any slicing of the archive bytes, one
  slice per packet; a zero-length packet ends the input (it may be left out:
  fwup stops at the ZIP central directory by itself).
* Output (fwup's stdout): payload = 2 ASCII type letters + u16 BE code + text.
  ``PR``'s code is the percentage and it has no text; ``OK``/``ER``/``WN``
  carry code 0 in every recorded case.
* ``--exit-handshake``: after the final ``OK``/``ER`` fwup writes two raw,
  unframed bytes, ``0x1A`` and the exit status, then drains stdin until EOF.

Both decoders here are sans-I/O: feed bytes, collect values.
"""

from __future__ import annotations

import struct

from nhlink_dbus.core.records import dataclass
from nhlink_dbus.errors import FirmwareError, ProtocolError

HANDSHAKE_MARK = 0x1A
MAX_OUTPUT_PACKET = 1 << 20  # fwup's messages are short; refuse absurd lengths


class PacketType:
    """The four packet types fwup writes: ``PacketType.OK``, ``.ER``, ``.WN`` and
    ``.PR``, one instance each (compare with ``is``), with ``name`` and ``value`` (the
    two bytes) as an enum member has them. Not an :class:`enum.Enum`: importing enum is
    a millisecond of nhlink-fwup's start."""

    __slots__ = ("name", "value")
    OK: PacketType
    ER: PacketType
    WN: PacketType
    PR: PacketType
    _by_value: dict[bytes, PacketType]

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = name.encode()

    def __repr__(self) -> str:
        return f"<PacketType.{self.name}>"

    @classmethod
    def of(cls, value: bytes) -> PacketType:
        """The type whose two bytes are ``value``; ValueError for any other bytes."""
        try:
            return cls._by_value[value]
        except KeyError:
            raise ValueError(f"{value!r} is not a fwup packet type") from None


PacketType.OK, PacketType.ER, PacketType.WN, PacketType.PR = (
    PacketType(name) for name in ("OK", "ER", "WN", "PR")
)
PacketType._by_value = {
    t.value: t for t in (PacketType.OK, PacketType.ER, PacketType.WN, PacketType.PR)
}


@dataclass(frozen=True, slots=True)
class Packet:
    """One decoded output packet."""

    type: PacketType
    code: int
    text: str = ""


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """The ``0x1A <status>`` trailer of ``--exit-handshake``."""

    status: int


def encode_packet(ptype: PacketType, code: int = 0, text: str | bytes = b"") -> bytes:
    """Encode one output packet."""
    body = text.encode() if isinstance(text, str) else text
    return struct.pack(">I2sH", 4 + len(body), ptype.value, code) + body


def encode_progress(percent: int) -> bytes:
    return encode_packet(PacketType.PR, percent)


def encode_input_frame(data: bytes) -> bytes:
    """Wrap a slice of the archive as one input packet (empty = end of input)."""
    return frame_header(len(data)) + data


def frame_header(size: int) -> bytes:
    """The 4 bytes before an input packet of ``size`` bytes (its data follows as it is)."""
    return struct.pack(">I", size)


class OutputDecoder:
    """Parse fwup's framed stdout: packets, then possibly the handshake trailer.

    After the first ``OK`` or ``ER`` the next two bytes, if they start with
    ``0x1A``, are the exit-handshake trailer, not a packet length.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._finished = False
        self._done = False

    def feed(self, data: bytes) -> list[Packet | ExitStatus]:
        """Feed stdout bytes; return the packets completed by them.

        Raises :class:`ProtocolError` on a malformed stream.
        """
        self._buf += data
        out: list[Packet | ExitStatus] = []
        while self._buf and not self._done:
            if self._finished and self._buf[0] == HANDSHAKE_MARK:
                if len(self._buf) < 2:
                    break
                out.append(ExitStatus(self._buf[1]))
                del self._buf[:2]
                self._done = True
                break
            if len(self._buf) < 4:
                break
            (length,) = struct.unpack_from(">I", self._buf)
            if length < 4 or length > MAX_OUTPUT_PACKET:
                raise ProtocolError(f"bad fwup packet length {length}")
            if len(self._buf) < 4 + length:
                break
            raw = bytes(self._buf[4 : 4 + length])
            del self._buf[: 4 + length]
            try:
                ptype = PacketType.of(raw[:2])
            except ValueError as exc:
                raise ProtocolError(f"unknown fwup packet type {raw[:2]!r}") from exc
            (code,) = struct.unpack_from(">H", raw, 2)
            packet = Packet(ptype, code, raw[4:].decode("utf-8", "replace"))
            if ptype is PacketType.PR and not 0 <= code <= 100:
                raise ProtocolError(f"fwup progress out of range: {code}")
            if ptype in (PacketType.OK, PacketType.ER):
                self._finished = True
            out.append(packet)
        return out


class InputDeframer:
    """Undo ``--framing`` on fwup's stdin, as fwup reads it.

    ``feed`` returns the payload slices; fwup reads at most ``max_read`` bytes
    at a time (16 KiB), so a large frame comes out in pieces of that size.
    With ``runs``, consecutive pieces of one frame come out joined instead (a
    whole number of ``max_read`` pieces, or the rest of the frame), for a reader
    that cuts them into reads of ``max_read`` again: the same reads, one call
    for many. ``ended`` turns true at the zero-length frame.
    """

    def __init__(self, max_read: int = 16384, *, runs: bool = False) -> None:
        self._buf = bytearray()
        self._remaining = 0  # bytes left in the current frame
        self._max_read = max_read
        self._runs = runs
        self.ended = False

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        """Feed stdin bytes (copied: ``data`` may be reused); return the archive
        slices completed by them."""
        if self.ended:
            return []
        self._buf += data
        return self._drain(at_eof=False)

    def finish(self) -> list[bytes]:
        """End of stdin: hand out what is left of a cut-off frame."""
        return [] if self.ended else self._drain(at_eof=True)

    def _drain(self, at_eof: bool) -> list[bytes]:
        out: list[bytes] = []
        while self._buf:
            if self._remaining == 0:
                if len(self._buf) < 4:
                    break
                (self._remaining,) = struct.unpack_from(">I", self._buf)
                del self._buf[:4]
                if self._remaining == 0:
                    self.ended = True
                    self._buf.clear()
                    break
                continue
            # fwup hands each read (a whole small frame, or 16 KiB of a large one)
            # to the archive reader as one piece; keep the same slicing.
            want = min(self._remaining, self._max_read)
            if len(self._buf) < want and not at_eof:
                break
            n = min(want, len(self._buf))
            if self._runs and n == want:
                # As many whole reads as are here, and the frame's end if it is.
                have = min(self._remaining, len(self._buf))
                n = have if have == self._remaining else have - have % self._max_read
            with memoryview(self._buf) as view:
                out.append(bytes(view[:n]))  # one copy, not a bytearray's and a bytes'
            del self._buf[:n]
            self._remaining -= n
        return out

    @property
    def in_frame(self) -> bool:
        """True if input stopped inside a frame's data (its length was read)."""
        return self._remaining > 0

    @property
    def mid_frame(self) -> bool:
        """True if input stopped inside a frame or its length."""
        return self._remaining > 0 or bool(self._buf)


def require_not_mid_frame(deframer: InputDeframer) -> None:
    if deframer.mid_frame:
        raise FirmwareError("Truncated ZIP file body")
