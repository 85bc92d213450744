"""File names of a saved weight encoder, apart from the encoder (which imports torch): a search
service compares their identity at every catalog check, a text-only search included."""

WEIGHTS_FILE = "encoder.safetensors"
CONFIG_FILE = "encoder.json"
