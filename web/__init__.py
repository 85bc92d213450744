"""web subsystem (built in later issues)."""
