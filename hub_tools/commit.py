"""Atomic Hub commits: a whole folder in ONE ``HfApi.create_commit``, or nothing.

The Hub applies a commit whole or not at all, so a failed push leaves the repo as it was. The commit names
the head its file listing was read from (``parent_commit``): if another push landed in between, the Hub
refuses this one instead of mixing the two. When the answer to a commit is lost (5xx, dropped connection,
timeout), the branch head is checked and the error says whether the commit landed.

Nothing follows a link and the token in use never goes out (:mod:`hub_tools.outgoing`): a folder holding a
link or a file holding the token is refused before any traffic, and the commit message is redacted.

Example:
    >>> from hub_tools import commit_folder
    >>> info = commit_folder("runs/final", "me/model", commit_message="v1", private=True)  # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import validate_repo_id

from hub_tools.errors import (
    DEFAULT_TIMEOUT,
    HubError,
    HubPermissionError,
    hub_errors,
    hub_timeout,
    redact,
    resolve_endpoint,
)
from hub_tools.outgoing import refuse_links, refuse_token_files

logger = logging.getLogger(__name__)

# Weight files a new push replaces: stale ones (old shards, old pickles) are deleted in the same commit.
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")


def folder_files(folder: Path) -> list[str]:
    """Every file under ``folder``, as sorted POSIX paths relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _git_blob_oid(path: Path) -> str:
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _commit_outcome(
    api: HfApi, repo_id: str, *, repo_type: str, revision: str | None, parent: str, folder: Path, new, stale
) -> str:
    """After a commit whose answer was lost: did it land? Reads the branch head and compares file hashes."""
    branch = revision or "main"
    try:
        head = api.repo_info(repo_id, repo_type=repo_type, revision=revision).sha
        if head == parent:
            return f"Nothing was changed: '{branch}' is still at {parent[:12]}; retry later."
        remote = {
            e.path: e
            for e in api.list_repo_tree(repo_id, repo_type=repo_type, revision=head, recursive=True)
            if isinstance(e, RepoFile)
        }
    except Exception as err:  # the check failed too: say we do not know, never guess
        logger.info("checking the head of %s after a failed commit failed: %s", repo_id, type(err).__name__)
        return (
            "The commit may or may not have landed (the Hub did not answer the check either): look at the "
            "repo's history before retrying."
        )

    def same(f: str) -> bool:
        entry = remote.get(f)
        if entry is None:
            return False
        if entry.lfs is not None:
            return entry.lfs.sha256 == _sha256(folder / f)
        return entry.blob_id == _git_blob_oid(folder / f)

    if all(same(f) for f in new) and not any(f in remote for f in stale):
        return (
            f"The commit did land anyway: '{branch}' is now at {head[:12]} with this push's files; "
            "no retry needed."
        )
    return (
        f"This push did not land, but '{branch}' moved from {parent[:12]} to {head[:12]} (another push?). "
        "Look at the repo, then retry."
    )


def _make_private(api: HfApi, repo_id: str, repo_type: str, was_private: bool) -> None:
    """private=True was asked for an existing public repo: make it private first, or refuse to publish."""
    if was_private:
        return
    failed = "the Hub refused"
    try:
        api.update_repo_settings(repo_id, private=True, repo_type=repo_type)
        if api.repo_info(repo_id, repo_type=repo_type).private:
            logger.warning("'%s' was public; made it private as private=True asked", repo_id)
            return
        failed = "the Hub accepted the change but the repo is still public"
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        failed = f"the Hub answered {status}"
        raise HubPermissionError(
            f"'{repo_id}' exists and is public, but private=True was asked, and making it private failed "
            f"({failed}). Nothing was uploaded. Make it private in its settings on the Hub (needs admin "
            "rights on the repo), or push with private=None to publish it.",
            repo_id,
        ) from err
    raise HubError(
        f"'{repo_id}' exists and is public, but private=True was asked, and making it private failed "
        f"({failed}). Nothing was uploaded.",
        repo_id,
    )


def commit_folder(
    folder: str | Path,
    repo_id: str,
    *,
    repo_type: str = "model",
    commit_message: str,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    revision: str | None = None,
    delete_patterns: Sequence[str] = WEIGHT_PATTERNS,
    space_sdk: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> CommitInfo:
    """Create the repo if needed and upload every file of `folder` in ONE commit.

    Files on the Hub that match `delete_patterns` and are not in `folder` are deleted in that same
    commit, so an old shard never lingers next to a new single file. The commit is based on the head the
    file listing was read from: if the branch moved meanwhile (a concurrent push), the Hub refuses it and the
    error says to retry. ``private=True`` makes an existing public repo private before uploading, or raises.

    Example:
        >>> info = commit_folder("runs/final", "me/model", commit_message="v1", private=True)
    """
    endpoint = resolve_endpoint(endpoint)
    folder = Path(folder)
    refuse_links(folder, repo_id, repo_type)  # what a link points to would be published as it is
    new = folder_files(folder)
    refuse_token_files(folder, new, repo_id, token, repo_type)
    commit_message = redact(commit_message, token)
    commit_description = redact(commit_description, token) if commit_description else commit_description
    adds = []
    for f in new:  # before any traffic: huggingface_hub refuses some paths (.git/, .cache/, ..)
        try:
            adds.append(CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)))
        except ValueError as err:
            raise HubError(
                f"Could not push to {repo_type} '{repo_id}': the Hub does not accept the file '{f}' "
                f"({err}). Nothing was uploaded. Remove it, or choose the files to upload (push_space "
                "allow=[...], or `git rm --cached` it in a git work tree).",
                repo_id,
            ) from None
    where = dict(endpoint=endpoint, revision=revision, repo_type=repo_type, token=token, timeout=timeout)
    with hub_errors(repo_id, "push to", **where), hub_timeout(timeout):
        validate_repo_id(repo_id)
        api = HfApi(endpoint=endpoint, token=token)
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, space_sdk=space_sdk)
        info = api.repo_info(repo_id, repo_type=repo_type, revision=revision)  # the head and its files
        if private:
            _make_private(api, repo_id, repo_type, bool(info.private))
        parent = info.sha
        remote = [s.rfilename for s in info.siblings or []]
        stale = [f for f in remote if f not in new and any(fnmatch.fnmatch(f, p) for p in delete_patterns)]
        if stale:
            logger.info("push to %s also deletes stale files: %s", repo_id, ", ".join(stale))
        ops = adds + [CommitOperationDelete(path_in_repo=f) for f in stale]
        try:
            commit = api.create_commit(
                repo_id,
                ops,
                commit_message=commit_message,
                commit_description=commit_description,
                repo_type=repo_type,
                revision=revision,
                parent_commit=parent,
            )
        except Exception as err:
            import httpx2

            status = getattr(getattr(err, "response", None), "status_code", None)
            lost = isinstance(err, (httpx2.TransportError, ConnectionError, TimeoutError)) or (
                isinstance(err, HfHubHTTPError) and (status is None or status >= 500)
            )
            if lost:  # the commit was sent; whether it landed is unknown until we look
                err.hub_tools_outcome = redact(
                    _commit_outcome(
                        api,
                        repo_id,
                        repo_type=repo_type,
                        revision=revision,
                        parent=parent,
                        folder=folder,
                        new=new,
                        stale=stale,
                    ),
                    token,
                )
            raise
    return commit
