"""The one choke point that turns Hugging Face Hub failures into the HubError tree.

Every call into ``huggingface_hub`` runs inside :func:`hub_errors`. Where the client retries
by itself (listing pages and file downloads: 429 honouring ``Retry-After``, 5xx, a dropped
connection resumed with ``Range``) what reaches us is final; single metadata calls (model info)
fail at once. Either way each case gets a specific code and a message that names the repository,
the revision and what to do about it.

``hf_hub_download`` reports some failures wrapped in ``LocalEntryNotFoundError`` ("cannot find
the file in the local cache"): the real reason is in the exception chain, which is searched
cause-first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from huggingface_hub.errors import (
    DisabledRepoError,
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hub.core.errors import (
    HfAuthError,
    HfHubError,
    HfNotFoundError,
    HfRateLimitedError,
    HfUnreachableError,
    HubError,
)

try:  # huggingface_hub 2.x ships its HTTP stack as ``httpx2``; 1.x used ``httpx``
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    import httpx  # type: ignore[no-redef]


@dataclass(frozen=True)
class Call:
    """What was being done, for messages: ``action`` on ``repo_id`` at ``revision``."""

    action: str
    repo_id: str | None = None
    revision: str | None = None
    endpoint: str = ""

    @property
    def where(self) -> str:
        repo = self.repo_id or "the Hub"
        at = f"@{self.revision}" if self.revision else ""
        host = f" ({self.endpoint})" if self.endpoint else ""
        return f"{repo}{at}{host}"


@contextmanager
def hub_errors(call: Call) -> Iterator[None]:
    """Run a huggingface_hub call; any failure leaves as a HubError subclass."""
    try:
        yield
    except HubError:
        raise
    except Exception as exc:  # noqa: BLE001 - the choke point: every failure gets mapped
        raise map_hub_exception(exc, call) from exc


def map_hub_exception(exc: BaseException, call: Call) -> HubError:
    for cause in _chain(exc):
        for kinds, build in _RULES:
            if isinstance(cause, kinds):
                mapped = build(cause, call)
                if mapped is not None:
                    return mapped
    return HfHubError(
        f"{call.action} failed for {call.where}: {type(exc).__name__}: {exc}",
        code="hf_error",
        repo=call.repo_id,
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then its causes (explicit ``from`` first, then implicit context)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _status(exc: HfHubHTTPError) -> int:
    return int(exc.response.status_code) if exc.response is not None else 0


def _retry_after(exc: HfHubHTTPError) -> int | None:
    value = exc.response.headers.get("Retry-After") if exc.response is not None else None
    return int(value) if value is not None and value.strip().isdigit() else None


def _gated(exc: BaseException, call: Call) -> HubError:
    return HfAuthError(
        f"{call.where} is gated: accept its conditions on the Hub with the account of the "
        "token (hf_token / HF_TOKEN), then retry",
        code="hf_gated",
        repo=call.repo_id,
    )


def _revision(exc: BaseException, call: Call) -> HubError:
    return HfNotFoundError(
        f"revision {call.revision!r} of {call.repo_id} does not exist on the Hub (a branch, "
        "tag or full 40-character commit sha is expected)",
        code="hf_revision_not_found",
        repo=call.repo_id,
        revision=call.revision,
    )


def _entry(exc: BaseException, call: Call) -> HubError:
    return HfNotFoundError(
        f"{call.action}: the file does not exist in {call.where}",
        code="hf_file_not_found",
        repo=call.repo_id,
        revision=call.revision,
    )


def _repo(exc: BaseException, call: Call) -> HubError:
    return HfNotFoundError(
        f"repository {call.repo_id} was not found on the Hub{_host(call)}; check the id, or, "
        "if it is private, that the token (hf_token / HF_TOKEN) can read it",
        code="hf_repo_not_found",
        repo=call.repo_id,
    )


def _disabled(exc: BaseException, call: Call) -> HubError:
    return HfNotFoundError(
        f"repository {call.repo_id} is disabled on the Hub", code="hf_repo_disabled"
    )


def _http(exc: BaseException, call: Call) -> HubError | None:
    assert isinstance(exc, HfHubHTTPError)
    status = _status(exc)
    builder = _BY_STATUS.get(status)
    if builder is not None:
        return builder(exc, call, status)
    return HfHubError(
        f"the Hub answered HTTP {status} to {call.action} for {call.where}"
        + (f": {exc.server_message}" if exc.server_message else ""),
        code="hf_server_error" if status >= 500 else "hf_error",
        status=status,
        repo=call.repo_id,
    )


def _unauthorized(exc: HfHubHTTPError, call: Call, status: int) -> HubError:
    return HfAuthError(
        f"the Hub refused {call.action} on {call.where} (HTTP 401: token missing or invalid); "
        "set a valid token with LORADEX_HF_TOKEN or HF_TOKEN",
        code="hf_unauthorized",
        status=status,
        repo=call.repo_id,
    )


def _forbidden(exc: HfHubHTTPError, call: Call, status: int) -> HubError:
    return HfAuthError(
        f"the token may not {call.action} on {call.where} (HTTP 403); it needs "
        "the matching read/write permission",
        code="hf_forbidden",
        status=status,
        repo=call.repo_id,
    )


def _not_found(exc: HfHubHTTPError, call: Call, status: int) -> HubError:
    return HfNotFoundError(
        f"{call.action}: {call.where} not found on the Hub (HTTP 404)",
        code="hf_not_found",
        repo=call.repo_id,
    )


def _rate_limited(exc: HfHubHTTPError, call: Call, status: int) -> HubError:
    wait = _retry_after(exc)
    hint = f"retry after {wait} s" if wait is not None else "retry later"
    return HfRateLimitedError(
        f"the Hub rate-limited {call.action} on {call.where} (HTTP 429); {hint}",
        code="hf_rate_limited",
        retry_after=wait,
        repo=call.repo_id,
    )


_BY_STATUS: dict[int, Callable[[HfHubHTTPError, Call, int], HubError]] = {
    401: _unauthorized,
    403: _forbidden,
    404: _not_found,
    429: _rate_limited,
}


def _timeout(exc: BaseException, call: Call) -> HubError:
    return HfUnreachableError(
        f"the Hub did not answer in time: {call.action} on {call.where} timed out",
        code="hf_timeout",
        repo=call.repo_id,
    )


def _refused(exc: BaseException, call: Call) -> HubError:
    return HfUnreachableError(
        f"cannot connect to the Hub{_host(call)} for {call.action}: {exc}; check hf_endpoint / "
        "HF_ENDPOINT and the network",
        code="hf_connection_refused",
        repo=call.repo_id,
    )


def _dropped(exc: BaseException, call: Call) -> HubError:
    return HfUnreachableError(
        f"the connection to the Hub dropped during {call.action} on {call.where} (the client "
        f"retried and resumed; it kept failing): {exc}",
        code="hf_connection_dropped",
        repo=call.repo_id,
    )


def _incomplete(exc: BaseException, call: Call) -> HubError | None:
    if "Consistency check failed" not in str(exc):
        return None  # some other OSError: let a later rule (or the fallback) describe it
    return _dropped(exc, call)


def _offline(exc: BaseException, call: Call) -> HubError:
    return HfUnreachableError(
        f"{call.action}: HF_HUB_OFFLINE is set, so the Hub cannot be reached",
        code="hf_offline",
    )


def _bad_reply(exc: BaseException, call: Call) -> HubError:
    return HfHubError(
        f"{call.action}: the server at hf_endpoint does not answer like a Hugging Face Hub ({exc})",
        code="hf_bad_reply",
        repo=call.repo_id,
    )


def _host(call: Call) -> str:
    return f" at {call.endpoint}" if call.endpoint else ""


Rule = tuple[
    type[BaseException] | tuple[type[BaseException], ...],
    Callable[[BaseException, Call], HubError | None],
]
# Most specific first: GatedRepoError is a RepositoryNotFoundError, which is an HfHubHTTPError.
_RULES: list[Rule] = [
    (GatedRepoError, _gated),
    (RevisionNotFoundError, _revision),
    (RemoteEntryNotFoundError, _entry),
    (RepositoryNotFoundError, _repo),
    (DisabledRepoError, _disabled),
    (HfHubHTTPError, _http),
    (OfflineModeIsEnabled, _offline),
    (httpx.TimeoutException, _timeout),
    (httpx.ConnectError, _refused),
    ((httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError), _dropped),
    (httpx.TransportError, _dropped),
    (FileMetadataError, _bad_reply),
    (OSError, _incomplete),
]
