"""Use cases: register, show, export, gc, import the zoo (more as subsystems land)."""
