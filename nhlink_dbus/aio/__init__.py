"""asyncio adapters around the core: sockets, HTTP, processes, logind, udev."""
