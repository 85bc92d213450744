"""Storage subsystem: catalog, content-addressed blobs, PEFT format I/O."""
