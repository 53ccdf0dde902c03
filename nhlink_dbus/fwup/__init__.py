"""The built-in fwup-compatible applier (`nhlink-fwup`): drivers and CLI around core.fwup_*."""
