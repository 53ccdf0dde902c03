"""Development tools of nhlink-dbus: the hub simulator and firmware builders.

They serve the tests, the demo and the benchmarks. The daemon never imports
this package (a test checks it), so a Debian package can ship the daemon
without it.
"""
