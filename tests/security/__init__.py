"""Issue 14: who may do what, and secrets that never leave the daemon."""
