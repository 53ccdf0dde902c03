"""GeoClue2 and NetworkManager stand-ins on a private system bus (python-dbusmock).

* :class:`GeoClueMock`: our own template (``geoclue2_template.py``; dbusmock has
  none for GeoClue2) with a fixed position.
* :class:`NetworkManagerMock`: dbusmock's ``networkmanager`` template; devices are
  added with its ``AddWiFiDevice`` / ``AddEthernetDevice``.

Each mock runs as its own process, like :class:`~tests.harness.logind.LogindMock`;
its start drops a policy file that lets root own and everyone call the service
(the private bus denies both by default, as a distribution's does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nhlink_dbus import names
from tests.harness.bus import _DOCTYPE, PrivateSystemBus, busctl
from tests.harness.logind import DBUSMOCK_PYTHON
from tests.harness.mock_process import MockProcess

GEOCLUE_TEMPLATE = Path(__file__).with_name("geoclue2_template.py")


def _policy(bus_name: str) -> str:
    return (
        _DOCTYPE
        + f"""<busconfig>
  <policy user="root">
    <allow own="{bus_name}"/>
  </policy>
  <policy context="default">
    <allow send_destination="{bus_name}"/>
  </policy>
</busconfig>
"""
    )


class TemplateMock(MockProcess):
    """``python -m dbusmock --system --template T`` owning ``bus_name``."""

    def __init__(
        self,
        bus: PrivateSystemBus,
        template: str,
        bus_name: str,
        probe: tuple[str, str, str],  # (path, interface, property) answered once it is up
        parameters: dict[str, Any] | None = None,
    ) -> None:
        self.bus_name = bus_name
        bus.add_policy(f"test-{bus_name}.conf", _policy(bus_name))
        argv = ["--template", template]
        if parameters:
            argv += ["--parameters", json.dumps(parameters)]
        super().__init__(
            bus,
            DBUSMOCK_PYTHON,
            argv,
            f"{bus_name}-mock.log",
            lambda: busctl(bus, "get-property", bus_name, *probe, check=False).returncode == 0,
        )

    def call(self, path: str, interface: str, method: str, *signature_and_args: str) -> str:
        done = busctl(self.bus, "call", self.bus_name, path, interface, method, *signature_and_args)
        return done.stdout


class GeoClueMock(TemplateMock):
    def __init__(self, bus: PrivateSystemBus, **parameters: Any) -> None:
        super().__init__(
            bus,
            str(GEOCLUE_TEMPLATE),
            names.GEOCLUE_BUS_NAME,
            (names.GEOCLUE_MANAGER_PATH, names.GEOCLUE_MANAGER_INTERFACE, "InUse"),
            parameters,
        )


class NetworkManagerMock(TemplateMock):
    def __init__(self, bus: PrivateSystemBus) -> None:
        super().__init__(
            bus,
            "networkmanager",
            names.NM_BUS_NAME,
            (names.NM_PATH, names.NM_INTERFACE, "Version"),
        )

    def add_wifi(self, device: str, interface: str, state: int = 100) -> None:
        self.call(
            names.NM_PATH, "org.freedesktop.DBus.Mock", "AddWiFiDevice", "ssu",
            device, interface, str(state),
        )  # fmt: skip

    def add_ethernet(self, device: str, interface: str, state: int = 100) -> None:
        self.call(
            names.NM_PATH, "org.freedesktop.DBus.Mock", "AddEthernetDevice", "ssu",
            device, interface, str(state),
        )  # fmt: skip
