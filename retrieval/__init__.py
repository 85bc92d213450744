"""retrieval subsystem (built in later issues)."""
