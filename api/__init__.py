"""REST delivery layer: FastAPI app factory, one router per resource, one error mapping.

Handlers parse the request, call a ``hub.services`` use case and render a schema; they never
touch storage, merging, torch or faiss (import-linter contracts in pyproject.toml).
"""

from api.app import create_app

__all__ = ["create_app"]
