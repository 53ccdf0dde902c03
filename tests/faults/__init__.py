"""Issue 14: network and local faults (hub restarts, TLS, clocks, full disks, logind...)."""
