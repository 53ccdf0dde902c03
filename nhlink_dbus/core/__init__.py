"""Sans-I/O core: protocol state machines and parsers. Imports only the standard library."""
