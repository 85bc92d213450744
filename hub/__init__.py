"""loradex: a registry, retrieval and merging service for LoRA adapters."""

__version__ = "0.1.0"
