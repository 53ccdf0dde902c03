"""The service: the composition root (``root``), its face requests (``faces``), and
the typed fan-out to its listeners (``listeners``)."""

from nhlink_dbus.service.root import NhlinkService

__all__ = ["NhlinkService"]
