"""nhlink-dbus: a NervesHub device client exposed as a D-Bus system service."""

__version__ = "0.1.0"
