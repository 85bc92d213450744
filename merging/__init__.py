"""Merging subsystem: a registry of merge methods and an engine that runs them in factor space.

Public API (used by ``hub.services`` for ``loradex merge`` / ``revert`` / ``methods``):

- ``merge(adapters, weights, method, params, *, device, seed, progress, names) -> MergeResult``
- ``revert(artifact, member) -> LoraAdapter`` for revertible merges (RMM)
- ``merging.resident``: ``stage(adapters, device=)`` once, then ``merge_staged(staged, weights,
  method, params)`` any number of times, on device-resident factors (no host copies)
- ``get_method(name)``, ``list_methods()``, ``param_rows(spec)``, ``methods_table()``
- ``MERGE_CODES``: every error code the engine raises, with its meaning
- ``check_weights(weights, n, allow_negative=, method=)``: the engine's weight checks
- ``plan(shapes, method, params, weights, labels) -> MergeLayout``: every check of ``merge`` that
  shapes decide (catalog rows, no weights), and what it would produce (modules, output ranks,
  parameter counts): merge jobs' submit-time validation and ``merge --dry-run``

Layering: imports ``hub.core`` and third-party libraries only.
"""

from merging.engine import MergeArtifact, MergeResult, merge, revert
from merging.planning import MergeLayout, plan
from merging.registry import MethodSpec, get_method, list_methods, methods_table, param_rows
from merging.validation import MERGE_CODES, check_weights

__all__ = [
    "MERGE_CODES",
    "MergeArtifact",
    "MergeLayout",
    "MergeResult",
    "MethodSpec",
    "check_weights",
    "get_method",
    "list_methods",
    "merge",
    "methods_table",
    "param_rows",
    "plan",
    "revert",
]
