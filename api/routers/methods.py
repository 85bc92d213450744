"""``/methods``: the merge methods and their parameters."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ReadAccess
from api.schemas import ERROR_RESPONSES, MethodList
from hub.services.methods import describe_methods

router = APIRouter(prefix="/methods", tags=["merges"], responses=ERROR_RESPONSES)


@router.get("", dependencies=[ReadAccess])
def list_methods() -> MethodList:
    docs = describe_methods()
    return MethodList.model_validate({"data": docs, "count": len(docs)})
