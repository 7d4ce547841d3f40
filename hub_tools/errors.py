"""Turn huggingface_hub / transport errors into messages that name the repo and say what to do.

Every Hub call in hub_tools runs inside :func:`hub_errors`, which converts the library's exceptions into the
:class:`HubError` family below. Messages never contain the token: whatever text we build or copy from a
server answer goes through :func:`redact` first.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import httpx2
from huggingface_hub import constants
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_token

LOGIN_HINT = "log in with `hf auth login` or set the HF_TOKEN environment variable (or pass token=...)"


class HubError(RuntimeError):
    """Base class: a Hub operation on `repo_id` failed; the message says what to do."""

    def __init__(self, message: str, repo_id: str | None = None):
        super().__init__(redact(message))
        self.repo_id = repo_id


class InvalidRepoIdError(HubError, ValueError):
    """The repo id is not of the form ``namespace/name`` with allowed characters."""


class HubAuthError(HubError):
    """401: no token, or the token was rejected."""


class HubPermissionError(HubError, PermissionError):
    """403: the token is valid but may not do this."""


class HubNotFoundError(HubError):
    """404: the repo (or a file in it) does not exist or is not visible to this token."""


class HubRevisionNotFoundError(HubError):
    """The branch, tag or commit does not exist in the repo."""


class HubUnreachableError(HubError, ConnectionError):
    """The Hub is down, refused the connection, timed out, or offline mode is on without a cached copy."""


class UnsafeWeightsError(HubError, ValueError):
    """The repo only has pickle weights (*.bin, *.pt, ...), which we never load."""


class RepoContentError(HubError, ValueError):
    """The files in the repo do not match its config (missing shard, wrong shapes, unknown format...)."""


def _secrets(extra: str | bool | None = None) -> list[str]:
    found = [extra] if isinstance(extra, str) else []
    try:
        found.append(get_token())
    except Exception:  # a broken token source must not hide the real error
        pass
    found += [os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")]
    return [s for s in found if s and len(s) >= 4]


def redact(text: str, token: str | bool | None = None) -> str:
    """Replace any known token (the given one, HF_TOKEN, the login cache) in `text` by ``***``."""
    for secret in _secrets(token):
        text = text.replace(secret, "***")
    return text


def resolve_endpoint(endpoint: str | None = None) -> str:
    """The Hub URL to use: the argument, else HF_ENDPOINT read now, else huggingface_hub's default.

    huggingface_hub reads HF_ENDPOINT once at import; reading it again here lets a process (or a test)
    point at another Hub after import.
    """
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _server_says(err: HfHubHTTPError) -> str:
    msg = getattr(err, "server_message", None) or ""
    msg = msg.strip()
    if msg and msg[-1] not in ".!?":
        msg += "."
    return f" The Hub said: {msg}" if msg else ""


def _scrub_chain(err: BaseException | None, token: str | bool | None) -> None:
    """Redact the token from the exceptions chained below ours (``__cause__`` / ``__context__``).

    A traceback prints every chained exception; their messages (a URL with a pasted token, a server answer)
    are rewritten in place so the chain stays useful for debugging without showing the secret.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        err.args = tuple(redact(a, token) if isinstance(a, str) else a for a in err.args)
        for attr in ("server_message", "_message"):
            value = getattr(err, attr, None)
            if isinstance(value, str):
                with contextlib.suppress(AttributeError):
                    setattr(err, attr, redact(value, token))
        err = err.__cause__ or err.__context__


_HTTP_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2")


class _RedactingFilter(logging.Filter):
    """Rewrites huggingface_hub's log records (debug lines carry request URLs) with the token redacted."""

    def __init__(self, token: str | bool | None):
        super().__init__()
        self.secrets = _secrets(token)  # read once: get_token() may read a file

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is huggingface_hub's problem, not a reason to drop it
            return True
        clean = message
        for secret in self.secrets:
            clean = clean.replace(secret, "***")
        if clean != message:
            record.msg, record.args = clean, ()
        return True


@contextlib.contextmanager
def redacted_hub_logs(token: str | bool | None = None) -> Iterator[None]:
    """While the block runs, huggingface_hub's loggers and those of the HTTP stack below it (which log
    request URLs and response headers at DEBUG / INFO) redact the token from their records."""
    families = ("huggingface_hub", *_HTTP_LOGGERS)
    names = dict.fromkeys(
        [*families, *(n for n in logging.root.manager.loggerDict if n.split(".")[0] in families)]
    )
    loggers = [logging.getLogger(n) for n in names]
    filt = _RedactingFilter(token)
    for lg in loggers:
        lg.addFilter(filt)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(filt)


@contextlib.contextmanager
def hub_errors(
    repo_id: str,
    action: str,
    *,
    endpoint: str,
    revision: str | None = None,
    repo_type: str = "model",
    token: str | bool | None = None,
    timeout: float | None = None,
) -> Iterator[None]:
    """Run a block of Hub calls; convert whatever huggingface_hub or httpx raise into a :class:`HubError`.

    `action` reads like "push to" / "pull" and starts every message: ``Could not push to 'me/x' ...``.
    The token is redacted from our message, from the chained exceptions and from huggingface_hub's log
    records emitted inside the block. A push that failed after sending its commit attaches what it found
    out about the outcome as ``err.hub_tools_outcome`` (see push.commit_folder); that replaces the generic
    advice, so the message never claims "nothing was changed" when the commit may have landed.
    """
    try:
        with redacted_hub_logs(token):
            yield
    except HubError as err:
        _scrub_chain(err.__cause__, token)
        raise
    except Exception as err:
        _scrub_chain(err, token)
        where = dict(endpoint=endpoint, revision=revision, repo_type=repo_type, token=token, timeout=timeout)
        _convert(err, repo_id, action, **where)
        raise


def _convert(err, repo_id, action, *, endpoint, revision, repo_type, token, timeout) -> None:
    """Raise the HubError for `err`; return (the caller re-raises it unchanged) if it is not a Hub error."""
    what = f"Could not {action} {repo_type} '{repo_id}'" + (f" at revision '{revision}'" if revision else "")
    pushing = action != "pull"
    outcome = getattr(err, "hub_tools_outcome", None)
    if isinstance(err, HFValidationError):
        raise InvalidRepoIdError(
            f"'{repo_id}' is not a valid repo id ({redact(str(err), token).splitlines()[0]}). Use the form "
            "'namespace/name' (letters, digits, '-', '_', '.'; at most 96 characters), e.g. 'me/my-model'.",
            repo_id,
        ) from None
    if isinstance(err, RevisionNotFoundError):
        raise HubRevisionNotFoundError(
            f"{what}: revision '{revision or 'main'}' does not exist in '{repo_id}'. "
            "Check the branch, tag or commit hash (list them with `HfApi().list_repo_refs(repo_id)`), "
            "or leave revision unset.",
            repo_id,
        ) from err
    if isinstance(err, RepositoryNotFoundError):
        status = err.response.status_code if err.response is not None else 404
        if status == 401:
            raise HubAuthError(
                f"{what}: {repo_type} not found or private, and the request carried no valid token. If the "
                f"repo exists and is private, {LOGIN_HINT}; otherwise check the repo id and repo type.",
                repo_id,
            ) from err
        raise HubNotFoundError(
            f"{what}: no such {repo_type} on {endpoint}, or your token cannot see it. Check the repo id and "
            f"repo type; for a private repo, use a token of an account that can read it.",
            repo_id,
        ) from err
    if isinstance(err, RemoteEntryNotFoundError):
        raise HubNotFoundError(
            f"{what}: a file is missing from the repo ({err.response.url.path if err.response else ''}). "
            "Push the repo again with hub_tools so it holds every file.",
            repo_id,
        ) from err
    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code if err.response is not None else None
        says = redact(_server_says(err), token)
        if status == 401:
            raise HubAuthError(
                f"{what}: the Hub rejected the token (401).{says} To fix it, {LOGIN_HINT} "
                "with a valid token.",
                repo_id,
            ) from err
        if status == 403:
            raise HubPermissionError(
                f"{what}: permission denied (403).{says} Use a token with write access to this namespace "
                "(a 'write' token, or a fine-grained token allowed on this repo), or push under your own "
                "namespace.",
                repo_id,
            ) from err
        if status == 404:
            raise HubNotFoundError(
                f"{what}: not found (404).{says} Check the repo id and type.", repo_id
            ) from err
        if pushing and status in (409, 412):
            raise HubError(
                f"{what}: the repo changed while this push was being prepared (another push landed first; "
                f"the Hub answered {status}).{says} Nothing from this push was committed, so the two pushes "
                "are not mixed. Retry the push (check first that you still want to overwrite what landed).",
                repo_id,
            ) from err
        if status is not None and status >= 500:
            after = outcome or (
                "Nothing was changed by this call; retry later." if not pushing else "Retry later."
            )
            raise HubError(f"{what}: the Hub failed with {status}.{says} {after}", repo_id) from err
        raise HubError(f"{what}: the Hub answered {status}.{says}", repo_id) from err
    if isinstance(err, (httpx2.TimeoutException, TimeoutError)):
        if pushing:
            advice = outcome or "Retry later, or pass a larger timeout=."
            raise HubUnreachableError(
                f"{what}: {endpoint} did not answer within {timeout} s. {advice}", repo_id
            ) from err
        raise HubUnreachableError(
            f"{what}: {endpoint} did not answer within {timeout} s. The Hub may be overloaded or down: retry "
            "later, pass a larger timeout=, or set HF_HUB_OFFLINE=1 to use a cached copy.",
            repo_id,
        ) from err
    if isinstance(err, OfflineModeIsEnabled):
        raise HubUnreachableError(
            f"{what}: offline mode is on (HF_HUB_OFFLINE=1) and this needs the Hub. Unset HF_HUB_OFFLINE to "
            "reach the Hub.",
            repo_id,
        ) from err
    if isinstance(err, LocalEntryNotFoundError):
        raise HubUnreachableError(
            f"{what}: it is not in the local cache and the Hub at {endpoint} cannot be used "
            f"({type(err.__cause__ or err).__name__}). Connect once (unset HF_HUB_OFFLINE, check the network "
            "and HF_ENDPOINT) to download it, then offline loading works.",
            repo_id,
        ) from err
    if isinstance(err, (httpx2.TransportError, ConnectionError)):
        if pushing:
            advice = outcome or "Retry later."
            raise HubUnreachableError(
                f"{what}: cannot connect to {endpoint}, or the connection dropped ({type(err).__name__}). "
                f"Check your network and HF_ENDPOINT. {advice}",
                repo_id,
            ) from err
        raise HubUnreachableError(
            f"{what}: cannot connect to {endpoint} ({type(err).__name__}). Check your network and "
            "HF_ENDPOINT, retry later, or set HF_HUB_OFFLINE=1 to load a cached copy.",
            repo_id,
        ) from err


# Seconds any one Hub request of a push or pull may take (connect, read, write), unless the caller says.
DEFAULT_TIMEOUT = 60.0


@contextlib.contextmanager
def hub_timeout(seconds: float | None) -> Iterator[None]:
    """Cap every huggingface_hub request made inside the block at `seconds` (connect, read, write, pool).

    huggingface_hub's shared client has no timeout, and several of its calls (create_repo, the tree listing
    inside snapshot_download) pass none, so a stalled Hub would hang forever. A request hook on the shared
    client lowers the per-request timeout; it is removed on exit.
    """
    if seconds is None:
        yield
        return
    from huggingface_hub.utils import get_session

    client = get_session()

    def _cap(request: httpx2.Request) -> None:
        current = request.extensions.get("timeout") or {}
        capped = {
            k: (current.get(k) if current.get(k) is not None and current[k] < seconds else seconds)
            for k in ("connect", "read", "write", "pool")
        }
        request.extensions = {**request.extensions, "timeout": capped}

    hooks = client.event_hooks
    client.event_hooks = {**hooks, "request": [*hooks["request"], _cap]}
    try:
        yield
    finally:
        hooks = client.event_hooks
        client.event_hooks = {**hooks, "request": [h for h in hooks["request"] if h is not _cap]}
