"""What a face (the D-Bus object) may ask of the service: ``service_api.LinkService``.

Requests go into the core with the caller and the time; its answer is performed
by the root (:meth:`NhlinkService.perform`). Refusals are the core's
``RequestError``s (UnknownRequest, InvalidDecision, InvalidArgument, NotPossible).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import nhlink_dbus
from nhlink_dbus.config import Config
from nhlink_dbus.core import hub_messages as hm
from nhlink_dbus.core import link
from nhlink_dbus.core.backoff import delay_list
from nhlink_dbus.core.redact import redact_url
from nhlink_dbus.core.update_manager import Offer
from nhlink_dbus.errors import InvalidArgument
from nhlink_dbus.service.listeners import Listeners
from nhlink_dbus.service_api import Caller, Info, LinkListener, PendingRequest, ReadyArchive

if TYPE_CHECKING:
    from nhlink_dbus.aio.hub_client import HubClient, NoHub


class FaceRequests:
    """The LinkService half of :class:`~nhlink_dbus.service.root.NhlinkService`."""

    config: Config
    core: link.LinkCore
    hub: HubClient | NoHub
    identifier: str
    listeners: Listeners
    local_fds: dict[str, int]
    backoff_override: list[int] | None
    clock: Callable[[], float]

    def perform(self, effects: Sequence[link.Effect]) -> None:
        raise NotImplementedError

    def add_listener(self, listener: LinkListener, decides: bool = False) -> None:
        self.listeners.items.append(listener)
        if decides:
            self.core.set_deciders(self.core.engine.deciders + 1)

    def decide(self, request_id: str, decision: str, delay_ms: int, caller: Caller) -> None:
        self.perform(
            self.core.decide(request_id, decision, delay_ms, caller.describe(), self.clock())
        )

    def pending_requests(self) -> Sequence[PendingRequest]:
        return [PendingRequest(*request) for request in self.core.pending_requests()]

    async def check_for_update(self) -> Info:
        update = await self.hub.check_update_available()
        if update is None:
            return {"update_available": 0}
        self.perform(self.core.hub_event(update, self.clock()))
        meta = update.firmware_meta
        out: dict[str, str | int] = {"update_available": 1}
        for key in ("uuid", "version", "product"):
            value = getattr(meta, key)
            if value is not None:
                out[key] = value
        return out

    async def install_file(self, fd: int, options: Mapping[str, object], caller: Caller) -> str:
        """Install a local ``.fw`` given as an open fd (owned by us from here on).

        Verified first (signature with the firmware keys, every resource's hash),
        then applied the same way as a hub update, decided by the caller.
        """
        try:
            if options:
                raise InvalidArgument(
                    f"unknown InstallFile option(s): {', '.join(sorted(options))}"
                )
            keys = self.core.install_keys()
            # The archive reader is loaded by the first InstallFile, not at start-up.
            from nhlink_dbus.fwup.local_firmware import (  # noqa: PLC0415
                LocalFirmwareError,
                inspect_fd,
            )

            try:
                meta = await asyncio.to_thread(inspect_fd, fd, keys)
            except LocalFirmwareError as exc:
                raise InvalidArgument(f"the file is not valid firmware: {exc}") from None
            offer = Offer(hm.UpdateInfo("file:", hm.FirmwareMetadata(**meta)), keys, "file")
            request_id, effects = self.core.offer_file(offer, caller.describe(), self.clock())
            self.local_fds[request_id] = fd
            fd = -1  # owned by the request now
            self.perform(effects)
            return request_id
        finally:
            if fd >= 0:
                os.close(fd)

    def reconnect(self) -> None:
        self.hub.reconnect()

    def ready_archives(self) -> Sequence[ReadyArchive]:
        # An application may delete an archive it has used: list only what is still there.
        return [
            ReadyArchive(path, info)
            for path, info in self.core.ready_archives()
            if os.path.isfile(path)
        ]

    def set_reconnect_backoff(self, delays_ms: Sequence[int]) -> None:
        if any(d <= 0 for d in delays_ms):
            raise InvalidArgument("reconnect delays must be positive milliseconds")
        self.backoff_override = list(delays_ms) or None
        self.hub.set_backoff(self.backoff_override)
        self.listeners.properties_changed({"ReconnectBackoff": self.reconnect_backoff})

    # -- properties (DESIGN §2) ---------------------------------------------------------

    @property
    def state(self) -> str:
        return self.core.state

    @property
    def connected(self) -> bool:
        return self.core.connected

    @property
    def progress(self) -> int:
        return self.core.progress

    @property
    def current_firmware(self) -> Mapping[str, str]:
        return {k.removeprefix("nerves_fw_"): v for k, v in self.core.slot.items()}

    @property
    def device_identifier(self) -> str:
        return self.identifier

    @property
    def server_url(self) -> str:
        return redact_url(self.hub.url)

    @property
    def last_error(self) -> str:
        return self.core.last_error

    @property
    def reconnect_backoff(self) -> Sequence[int]:
        return list(self.backoff_override or delay_list(1000, 60000, 0))

    @property
    def decision_timeout_ms(self) -> int:
        return int(self.config.decisions.timeout_ms)

    @property
    def default_decision(self) -> str:
        return str(self.config.decisions.default_update)

    @property
    def version(self) -> str:
        return nhlink_dbus.__version__
