"""generation subsystem (built in later issues)."""
