"""Checking a firmware download against the hub's ``size``, ``checksum`` and
``partials_checksums`` as it streams (sans-I/O).

nerves_hub_web sends, with an update, the file's size, the SHA-256 of the whole
file and the SHA-256 of every 1 MiB part (``firmwares.ex``:
``@firmware_partial_chunk_size 1024 * 1024``, ``Base.encode16``: upper-case hex;
read at 0bb6b5cc5). nerves_hub_link's ``PartsUpdater`` (388b391) checks each
part as it arrives, fetches a part that fails again from its offset, and fails
the update after 3 failures of one part. Rules here:

* With part checksums, bytes reach the applier only a whole verified part at a
  time (at most 1 MiB is held); a part that does not match is dropped and
  :class:`PartMismatch` names the offset to fetch again from (the parts before
  it stay verified and applied). The ``max_attempts``-th failure of one part is
  :class:`VerifyError`.
* Part checksums that cannot describe a file of ``size`` bytes (the wrong
  count) are not used, as nerves_hub_link falls back to the whole-file check.
* Without part checksums bytes pass at once; :meth:`PartVerifier.finish` checks
  the size and the whole-file checksum (the applier verifies every resource of
  a ``.fw`` anyway). With them, every byte is covered by its part's SHA-256 from
  the same message, so the whole-file hash (a second pass over every byte) adds
  nothing and is not computed; the size is checked all the same.
* ``restart`` (the server ignored Range and sends from byte 0): everything
  starts over.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

from nhlink_dbus.errors import DownloadError

PART_SIZE: Final = 1024 * 1024
MAX_PART_ATTEMPTS: Final = 3


class PartMismatch(Exception):
    """A part did not match its checksum: fetch again from ``offset``."""

    def __init__(self, index: int, offset: int, attempt: int) -> None:
        super().__init__(f"part {index + 1} failed its checksum (attempt {attempt})")
        self.index = index
        self.offset = offset
        self.attempt = attempt


class VerifyError(DownloadError):
    """The download does not match what the hub said it is (fatal)."""


class PartVerifier:
    """One download's checks; see the module docstring."""

    def __init__(
        self,
        size: int | None = None,
        checksum: str | None = None,
        partials: Sequence[str] = (),
        *,
        part_size: int = PART_SIZE,
        max_attempts: int = MAX_PART_ATTEMPTS,
    ) -> None:
        self.size = size
        self.checksum = checksum.lower() if checksum else None
        parts = [p.lower() for p in partials]
        if parts and size is not None and -(-size // part_size) != len(parts):
            parts = []  # they cannot be of this file: whole-file check only
        self.partials = parts
        self.part_size = part_size
        self.max_attempts = max_attempts
        self.failures: dict[int, int] = {}
        self.refetched = 0
        self._reset()

    def _reset(self) -> None:
        self.verified = 0  # bytes handed on
        # The part being received: its pieces as they came (no copy but at a part's
        # boundaries) and its hash, kept up to date piece by piece.
        self._held: list[bytes] = []
        self._held_len = 0
        self._part_hash = hashlib.sha256()
        # The whole-file hash only where it is checked: without part checksums, and with
        # a checksum to compare it with (nothing to hash for a hub that sends neither).
        self._whole = hashlib.sha256() if self.checksum and not self.partials else None

    @property
    def checks_parts(self) -> bool:
        return bool(self.partials)

    @property
    def received(self) -> int:
        """Bytes taken so far (handed on or held)."""
        return self.verified + self._held_len

    def feed(self, chunk: bytes) -> list[bytes]:
        """Take ``chunk`` (the next bytes); return what may go to the applier now."""
        if self.size is not None and self.received + len(chunk) > self.size:
            raise VerifyError(f"the download is longer than the {self.size} bytes announced")
        if not self.partials:
            self.verified += len(chunk)
            if self._whole is not None:
                self._whole.update(chunk)
            return [chunk]
        out: list[bytes] = []
        while chunk:
            room = self._part_end() - self.received
            if len(chunk) <= room:
                take, chunk = chunk, b""
            else:
                take, chunk = chunk[:room], chunk[room:]
            self._held.append(take)
            self._held_len += len(take)
            self._part_hash.update(take)
            if self.received == self._part_end():
                out += self._seal()
        return out

    def finish(self) -> list[bytes]:
        """The body ended cleanly: the last part, then the size and whole-file checks."""
        out: list[bytes] = []
        if self._held_len:
            if self.size is None and self.partials:
                out += self._seal()  # the last part is shorter
            else:
                raise VerifyError(f"the download ended at byte {self.received}, short")
        if self.size is not None and self.verified != self.size:
            raise VerifyError(f"{self.verified} bytes received, {self.size} announced")
        if self.partials and self.verified < (len(self.partials) - 1) * self.part_size + 1:
            raise VerifyError(f"{self.verified} bytes cannot hold {len(self.partials)} parts")
        if self._whole is not None and self._whole.hexdigest() != self.checksum:
            raise VerifyError("the download does not match its checksum")
        return out

    def restart(self) -> None:
        """The server sent the file from its start again."""
        self._reset()

    # -- internals ---------------------------------------------------------------------

    def _part_end(self) -> int:
        index = self.verified // self.part_size
        end = (index + 1) * self.part_size
        return end if self.size is None else min(end, self.size)

    def _seal(self) -> list[bytes]:
        """The part just completed, once its checksum matched."""
        index = self.verified // self.part_size
        if index >= len(self.partials):
            raise VerifyError(f"the download has more than the {len(self.partials)} parts known")
        pieces, size, digest = self._held, self._held_len, self._part_hash.hexdigest()
        self._held, self._held_len, self._part_hash = [], 0, hashlib.sha256()
        if digest != self.partials[index]:
            attempt = self.failures.get(index, 0) + 1
            self.failures[index] = attempt
            if attempt >= self.max_attempts:
                raise VerifyError(
                    f"part {index + 1} of {len(self.partials)} failed its checksum {attempt} times"
                )
            self.refetched += 1
            raise PartMismatch(index, self.verified, attempt)
        self.verified += size
        return pieces  # as received: no copy
