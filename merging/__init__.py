"""merging subsystem (built in later issues)."""
