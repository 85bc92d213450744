"""Process-level primitives every subsystem shares (durable file writes).

It sits beside ``hub.core`` at the bottom of the layers: subsystems may not import each other,
so the one copy lives here; unlike ``hub.core`` it does I/O.
"""
