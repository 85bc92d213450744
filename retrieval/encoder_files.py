"""File names of a saved weight encoder, apart from the encoder (which imports torch): a search
service compares their identity at every catalog check, a text-only search included."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_FILE = "encoder.safetensors"
CONFIG_FILE = "encoder.json"


def saved_encoder_stamp(directory: Path) -> tuple[tuple[int, int, int] | None, ...] | None:
    """Identity of the encoder files in ``directory`` (None: none saved). Saves are atomic
    renames, so a new encoder, from this process or the CLI beside a server, changes it."""
    stamps: list[tuple[int, int, int] | None] = []
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        try:
            st = (directory / name).stat()
        except OSError:
            stamps.append(None)
            continue
        stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return None if stamps == [None, None] else tuple(stamps)
