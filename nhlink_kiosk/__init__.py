"""Reference kiosk prompts for org.nerveshub.Link: ``nhlink-kiosk-gtk`` and ``nhlink-kiosk-qt``.

They need nothing of nhlink-dbus but its D-Bus API, and nhlink-dbus never
imports them (they are packaged apart from the daemon). They need no session bus
and no window manager: the system bus and a display only; a window takes the
keyboard focus itself when it appears. The modules:

* ``prompt`` — what a prompt shows and asks, without a toolkit or a D-Bus
  library (the rules both prompts share, tested on their own);
* ``driver`` — between a prompt's D-Bus binding and its ``Prompt``;
* ``cli`` — the command line both prompts take;
* ``gtk`` — GTK 3 (PyGObject) with dbus-next on the GLib main loop;
* ``qt`` — Qt through QtDBus only; ``qt_binding`` holds the differences between
  PyQt5 (Debian 12's ``python3-pyqt5``) and PyQt6.
"""

__version__ = "0.1.0"
