"""Issue 14 fuzzing: ``make fuzz`` (10^5 inputs per parser) and a small budget in ``make test``."""
