"""api subsystem (built in later issues)."""
