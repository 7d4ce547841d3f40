"""A small Hub-compatible HTTP test double, served on 127.0.0.1 for the hub_tools tests.

It answers just the endpoints huggingface_hub 2.x calls for our push/pull paths:

- ``POST /api/repos/create``                               create_repo
- ``POST /api/validate-yaml``                              README.md metadata check before a commit
- ``POST /api/{type}s/{repo}/preupload/{rev}``             always answers the "regular" upload mode
- ``POST /api/{type}s/{repo}/commit/{rev}``                NDJSON: header, base64 files, deletions
- ``GET  /api/{type}s/{repo}[/revision/{rev}]``            repo info (sha, siblings, private, cardData)
- ``GET  /api/{type}s/{repo}/tree/{rev}[/{path}]``         tree listing
- ``HEAD/GET /[{type}s/]{repo}/resolve/{rev}/{path}``      resolve, with ETag, X-Repo-Commit, Content-Length
- ``PUT  /api/{type}s/{repo}/settings``                    update_repo_settings (visibility / private)

Errors carry the same ``X-Error-Code`` / ``X-Error-Message`` headers as the Hub, so the real client raises
its real exception classes (RepositoryNotFoundError, RevisionNotFoundError, ...). A commit is applied in one
step under a lock, so it is all-or-nothing, and ``fail_next_commit`` makes the next one fail with a 500.
A commit whose header names a ``parentCommit`` that is no longer the branch head is refused with 412, as on
the Hub. ``commit_then_fail`` applies the next commit and then answers 500, drops the connection, or stalls
(the client sees a failure although the commit landed); ``before_commit`` runs once when the next commit
request arrives, before it is applied (a concurrent push landing in between).
Since the preupload always answers "regular", every file travels base64 inside the commit: keep test
files small (a few MB at most).

It is a test double of the Hub, not a product feature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import pytest
import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def git_blob_oid(data: bytes) -> str:
    """The git blob sha1, which is what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    files: dict[str, bytes]
    message: str


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    sdk: str | None = None
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            found = [c for oid, c in self.commits.items() if oid.startswith(revision)]
            if len(found) == 1:
                return found[0]
        return None

    def new_commit(self, files: dict[str, bytes], message: str, branch: str = "main") -> Commit:
        digest = hashlib.sha1(f"{self.repo_id}:{len(self.commits)}:{message}".encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_oid(files[path]).encode())
        commit = Commit(digest.hexdigest(), dict(files), message)
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit


@dataclass
class HubState:
    """Everything the server knows; tests read and tweak it directly."""

    # token -> (user name, namespaces it may write to, write access)
    tokens: dict[str, tuple[str, tuple[str, ...], bool]] = field(default_factory=dict)
    repos: dict[tuple[str, str], Repo] = field(default_factory=dict)
    fail_next_commit: bool = False
    commit_then_fail: str | None = None  # "500" | "drop" | "stall": apply the next commit, then fail
    stall_seconds: float = 2.0  # how long a "stall" keeps the client waiting after the commit landed
    before_commit: Callable[[], None] | None = None  # run once, before the next commit is applied
    settings_enabled: bool = True  # False: PUT .../settings answers 403 (a token without admin rights)
    delay: float = 0.0  # seconds to sleep before answering anything (simulates a stalled Hub)
    seen_tokens: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeHub/0.1"
    protocol_version = "HTTP/1.1"
    state: HubState  # set on the subclass made per server

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    # -- plumbing -------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head=False):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict[str, str] | None = None):
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str | None, message: str, head=False):
        headers = {"X-Error-Message": message, "Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _user(self):
        """(user, namespaces, write) for the bearer token; None if anonymous; False if the token is bad."""
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        token = auth[len("Bearer ") :]
        self.state.seen_tokens.append(token)
        return self.state.tokens.get(token, False)

    def _auth_or_error(self, head=False):
        user = self._user()
        if user is False:
            self._error(401, None, "Invalid credentials in Authorization header", head=head)
            return False
        return user

    def _repo_for_read(self, repo_type: str, repo_id: str, user, head=False) -> Repo | None:
        repo = self.state.repos.get((repo_type, repo_id))
        if repo is not None and repo.private and not _may_write(user, repo_id, need_write=False):
            repo = None  # the Hub hides private repos: 401 when anonymous, 404 otherwise
        if repo is None:
            msg = "Repository not found"
            self._error(401 if user is None else 404, "RepoNotFound", msg, head=head)
        return repo

    def _dispatch(self, method: str):
        st = self.state
        st.requests.append(f"{method} {self.path}")
        if st.delay:
            time.sleep(st.delay)
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        head = method == "HEAD"
        user = self._auth_or_error(head=head)
        if user is False:
            return

        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(user)
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml()
        m = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/(.*))?", path)
        if m:
            repo_type, repo_id, rest = TYPES[m.group(1)], m.group(2), m.group(3) or ""
            if method == "POST" and rest.startswith("preupload/"):
                return self._preupload(repo_type, repo_id, user)
            if method == "POST" and rest.startswith("commit/"):
                return self._commit(repo_type, repo_id, rest[len("commit/") :], user)
            if method == "GET" and (rest == "" or rest.startswith("revision/")):
                return self._info(repo_type, repo_id, rest[len("revision/") :] or "main", user)
            if method == "PUT" and rest == "settings":
                return self._settings(repo_type, repo_id, user)
            if method == "GET" and rest.startswith("tree/"):
                rev, _, sub = rest[len("tree/") :].partition("/")
                return self._tree(repo_type, repo_id, rev, sub, user, query)
        m = re.fullmatch(r"/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m and method in ("GET", "HEAD"):
            repo_type = TYPES[m.group(1)] if m.group(1) else "model"
            return self._resolve(repo_type, m.group(2), m.group(3), m.group(4), user, head)
        self._error(404, None, f"FakeHub does not serve {method} {path}", head=head)

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    # -- endpoints ------------------------------------------------------------------------------------
    def _create_repo(self, user):
        payload = json.loads(self._body() or b"{}")
        name, org = payload["name"], payload.get("organization")
        if user is None:
            return self._error(401, None, "You must be authenticated to create a repo")
        namespace = org or user[0]
        repo_id = f"{namespace}/{name}"
        repo_type = payload.get("type") or "model"
        if not _may_write(user, repo_id):
            return self._error(
                403, None, f"You don't have the rights to create a {repo_type} under {namespace}"
            )
        url = f"http://{self.headers['Host']}/" + ("" if repo_type == "model" else f"{repo_type}s/") + repo_id
        with self.state.lock:
            if (repo_type, repo_id) in self.state.repos:
                return self._json(409, {"error": "You already created this repo", "url": url})
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            repo = Repo(repo_id, repo_type, private, sdk=payload.get("sdk"))
            repo.new_commit({".gitattributes": GITATTRIBUTES}, "initial commit")
            self.state.repos[(repo_type, repo_id)] = repo
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self):
        payload = json.loads(self._body() or b"{}")
        content = payload.get("content", "")
        m = re.match(r"^---\n(.*?)\n---", content, re.S)
        try:
            if m:
                yaml.safe_load(m.group(1))
        except yaml.YAMLError as err:
            return self._json(400, {"errors": [{"message": str(err)}]})
        self._json(200, {"errors": [], "warnings": []})

    def _writable_repo(self, repo_type: str, repo_id: str, user) -> Repo | None:
        if user is None:
            self._error(401, None, "You must be authenticated to write to a repo")
            return None
        repo = self._repo_for_read(repo_type, repo_id, user)
        if repo is None:
            return None
        if not _may_write(user, repo_id):
            self._error(403, None, f"You don't have write access to {repo_id}")
            return None
        return repo

    def _preupload(self, repo_type, repo_id, user):
        payload = json.loads(self._body() or b"{}")
        repo = self._writable_repo(repo_type, repo_id, user)
        if repo is None:
            return
        head = repo.commits[repo.branches["main"]]
        files = [
            {
                "path": f["path"],
                "uploadMode": "regular",  # never LFS / xet: the whole file travels in the commit
                "shouldIgnore": False,
                "oid": git_blob_oid(head.files[f["path"]]) if f["path"] in head.files else None,
            }
            for f in payload["files"]
        ]
        self._json(200, {"files": files, "commitOid": head.oid})

    def _settings(self, repo_type, repo_id, user):
        payload = json.loads(self._body() or b"{}")
        repo = self._writable_repo(repo_type, repo_id, user)
        if repo is None:
            return
        if not self.state.settings_enabled:
            return self._error(403, None, f"You don't have the rights to change the settings of {repo_id}")
        visibility = payload.get("visibility")
        if "private" in payload:
            visibility = "private" if payload["private"] else "public"
        if visibility not in (None, "public", "private"):
            return self._error(400, None, f"Invalid visibility: {visibility}")
        with self.state.lock:
            if visibility is not None:
                repo.private = visibility == "private"
        self._json(200, {})

    def _commit(self, repo_type, repo_id, revision, user):
        body = self._body()
        repo = self._writable_repo(repo_type, repo_id, user)
        if repo is None:
            return
        hook, self.state.before_commit = self.state.before_commit, None
        if hook is not None:
            hook()
        then_fail, self.state.commit_then_fail = self.state.commit_then_fail, None
        with self.state.lock:
            if self.state.fail_next_commit:
                self.state.fail_next_commit = False
                return self._error(500, None, "Internal Error - injected commit failure")
            if revision not in repo.branches:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            files = dict(repo.commits[repo.branches[revision]].files)
            message = ""
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    message = value["summary"]
                    parent = value.get("parentCommit")
                    if parent and not repo.branches[revision].startswith(parent):
                        return self._error(
                            412, None, "A commit has happened since. Please refresh and try again."
                        )
                elif key == "file":
                    if value.get("encoding") != "base64":
                        return self._error(400, None, "FakeHub only accepts base64 files")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: d for p, d in files.items() if not p.startswith(prefix)}
                else:
                    return self._error(400, None, f"FakeHub does not support '{key}' operations")
            commit = repo.new_commit(files, message, branch=revision)
        if then_fail == "500":
            return self._error(500, None, "Internal Error - the commit was applied, then the answer failed")
        if then_fail == "drop":  # the connection dies before any answer: the client cannot know the outcome
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if then_fail == "stall":
            time.sleep(self.state.stall_seconds)
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"http://{self.headers['Host']}/{prefix}{repo_id}/commit/{commit.oid}"
        self._json(200, {"commitUrl": url, "commitOid": commit.oid, "pullRequestUrl": None})

    def _commit_for_read(self, repo_type, repo_id, revision, user, head=False) -> tuple[Repo, Commit] | None:
        """The repo and the commit `revision` names, or None after answering the error."""
        repo = self._repo_for_read(repo_type, repo_id, user, head=head)
        if repo is None:
            return None
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
            return None
        return repo, commit

    def _info(self, repo_type, repo_id, revision, user):
        found = self._commit_for_read(repo_type, repo_id, revision, user)
        if found is None:
            return
        repo, commit = found
        info = {
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit.oid,
            "private": repo.private,
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
            "tags": [],
        }
        readme = commit.files.get("README.md", b"").decode()
        m = re.match(r"^---\n(.*?)\n---", readme, re.S)
        if m:
            info["cardData"] = yaml.safe_load(m.group(1)) or {}
        if repo_type == "space":
            info["sdk"] = repo.sdk
        self._json(200, info)

    def _tree(self, repo_type, repo_id, revision, sub, user, query):
        found = self._commit_for_read(repo_type, repo_id, revision, user)
        if found is None:
            return
        commit = found[1]
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        prefix = sub.rstrip("/") + "/" if sub else ""
        entries, folders = [], set()
        for p in sorted(commit.files):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix) :]
            parts = rest.split("/")
            for i in range(1, len(parts)):  # folders on the way down
                if recursive or i == 1:
                    folders.add(prefix + "/".join(parts[:i]))
            if recursive or len(parts) == 1:
                data = commit.files[p]
                entries.append({"type": "file", "path": p, "size": len(data), "oid": git_blob_oid(data)})
        entries += [
            {"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()} for f in folders
        ]
        self._json(200, entries)

    def _resolve(self, repo_type, repo_id, revision, path, user, head):
        found = self._commit_for_read(repo_type, repo_id, revision, user, head=head)
        if found is None:
            return
        commit = found[1]
        if path not in commit.files:
            self.send_response(404)
            for k, v in {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit.oid}.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = commit.files[path]
        headers = {
            "ETag": f'"{git_blob_oid(data)}"',
            "X-Repo-Commit": commit.oid,
            "Content-Type": "application/octet-stream",
        }
        self._send(200, data, headers, head=head)


def _may_write(user, repo_id: str, need_write: bool = True) -> bool:
    if not user:
        return False
    name, namespaces, write = user
    return repo_id.split("/")[0] in (name, *namespaces) and (write or not need_write)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # a client that gave up (timeout tests) closes its socket while we sleep: not an error here
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class FakeHub:
    """Runs the handler on 127.0.0.1 and a free port in a daemon thread."""

    def __init__(self):
        self.state = HubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_token(self, token: str, user: str, namespaces: tuple[str, ...] = (), write: bool = True) -> str:
        self.state.tokens[token] = (user, tuple(namespaces), write)
        return token

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.state.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        return self.repo(repo_id, repo_type).resolve(revision).files


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a Hub that is down)."""
    import socket

    with socket.socket() as s:  # bind, learn the port, close: nothing listens there afterwards
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


WRITE_TOKEN = "hf_fakehub_write_0123456789abcdef"
READ_TOKEN = "hf_fakehub_read_0123456789abcdef"


@pytest.fixture(name="hub")
def hub_fixture(monkeypatch, tmp_path_factory):
    """A FakeHub with a write token for user "me" (also member of "org") and a read-only token.

    The real client is pointed at it through HF_ENDPOINT (read at call time by hub_tools). Offline mode,
    which the test suite turns on globally, is turned off for huggingface_hub; the cache and the token
    file are private to the test, and no token is set: each test chooses how it authenticates.
    """
    from huggingface_hub import constants

    root = tmp_path_factory.mktemp("hfhome")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(root / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(root / "stored_tokens"))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with FakeHub() as server:
        server.add_token(WRITE_TOKEN, "me", ("org",), write=True)
        server.add_token(READ_TOKEN, "reader", (), write=False)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server
