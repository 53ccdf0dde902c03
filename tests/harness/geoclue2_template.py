"""A small GeoClue2 for python-dbusmock (which ships no template for it).

Loaded by ``python -m dbusmock --system --template <this file>`` (never imported by
the tests themselves: it needs dbus-python and GLib, which live in dbusmock's
process). It follows GeoClue2's D-Bus API as far as a client needs:

* ``/org/freedesktop/GeoClue2/Manager`` (``org.freedesktop.GeoClue2.Manager``):
  ``GetClient() -> o``, ``DeleteClient(o)``.
* the client (``org.freedesktop.GeoClue2.Client``): properties ``DesktopId`` (rw),
  ``RequestedAccuracyLevel`` (rw), ``Location`` (``/`` until a fix), ``Active``;
  ``Start()`` refuses a client without ``DesktopId`` (AccessDenied, as GeoClue's
  agent does), then after ``delay_ms`` sets ``Location`` and signals
  ``LocationUpdated(o old, o new)``; ``Stop()``.
* the location (``org.freedesktop.GeoClue2.Location``): ``Latitude``,
  ``Longitude``, ``Accuracy`` (metres), ``Altitude``, ``Speed``, ``Heading``,
  ``Description``, ``Timestamp``.

Parameters (JSON): ``latitude``, ``longitude``, ``accuracy``, ``delay_ms`` (200),
``fix`` (false: never a fix, for timeouts).
"""

# SPDX-License-Identifier: LGPL-3.0-or-later (as the dbusmock templates it is modelled on)

import time

import dbus
import dbusmock
from gi.repository import GLib

BUS_NAME = "org.freedesktop.GeoClue2"
MAIN_OBJ = "/org/freedesktop/GeoClue2/Manager"
MAIN_IFACE = "org.freedesktop.GeoClue2.Manager"
SYSTEM_BUS = True

CLIENT_IFACE = "org.freedesktop.GeoClue2.Client"
LOCATION_IFACE = "org.freedesktop.GeoClue2.Location"
ROOT = dbus.ObjectPath("/")


def load(mock, parameters):
    mock.geo_parameters = dict(parameters or {})
    mock.geo_clients = 0
    mock.AddMethods(
        MAIN_IFACE,
        [
            ("GetClient", "", "o", get_client),
            ("CreateClient", "", "o", get_client),
            ("DeleteClient", "o", "", delete_client),
        ],
    )
    mock.AddProperties(MAIN_IFACE, {"InUse": False, "AvailableAccuracyLevel": dbus.UInt32(8)})


def get_client(self):
    self.geo_clients += 1
    path = f"/org/freedesktop/GeoClue2/Client/{self.geo_clients}"
    self.AddObject(
        path,
        CLIENT_IFACE,
        {
            "DesktopId": "",
            "RequestedAccuracyLevel": dbus.UInt32(0),
            "DistanceThreshold": dbus.UInt32(0),
            "TimeThreshold": dbus.UInt32(0),
            "Location": ROOT,
            "Active": False,
        },
        [],
    )
    client = dbusmock.get_object(path)
    client.geo_manager = self
    client.AddMethods(CLIENT_IFACE, [("Start", "", "", start), ("Stop", "", "", stop)])
    return dbus.ObjectPath(path)


def delete_client(self, path):
    if path in dbusmock.mockobject.objects:
        self.RemoveObject(path)


def start(self):
    if not self.Get(CLIENT_IFACE, "DesktopId"):
        raise dbus.exceptions.DBusException(
            "no DesktopId", name="org.freedesktop.DBus.Error.AccessDenied"
        )
    self.Set(CLIENT_IFACE, "Active", True)
    parameters = self.geo_manager.geo_parameters
    if parameters.get("fix", True):
        GLib.timeout_add(int(parameters.get("delay_ms", 200)), lambda: fix(self) and False)


def fix(client):
    if not client.Get(CLIENT_IFACE, "Active"):
        return
    manager = client.geo_manager
    parameters = manager.geo_parameters
    path = client.__dbus_object_path__.replace("/Client/", "/Location/")
    if path not in dbusmock.mockobject.objects:
        seconds = int(time.time())
        manager.AddObject(
            path,
            LOCATION_IFACE,
            {
                "Latitude": float(parameters.get("latitude", 0.0)),
                "Longitude": float(parameters.get("longitude", 0.0)),
                "Accuracy": float(parameters.get("accuracy", 100.0)),
                "Altitude": -1.7976931348623157e308,
                "Speed": -1.0,
                "Heading": -1.0,
                "Description": "dbusmock GeoClue2",
                "Timestamp": dbus.Struct((dbus.UInt64(seconds), dbus.UInt64(0)), signature="tt"),
            },
            [],
        )
    old = client.Get(CLIENT_IFACE, "Location")
    client.Set(CLIENT_IFACE, "Location", dbus.ObjectPath(path))
    client.EmitSignal(CLIENT_IFACE, "LocationUpdated", "oo", [old, dbus.ObjectPath(path)])


def stop(self):
    self.Set(CLIENT_IFACE, "Active", False)
