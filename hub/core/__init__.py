"""Value objects, errors, ids — no I/O."""

from hub.core.errors import HubError
from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule
from hub.core.names import AdapterRef, validate_name

__all__ = ["AdapterRef", "BaseModelRef", "HubError", "LoraAdapter", "LoraModule", "validate_name"]
