"""Push the demo app as a Gradio Space, and the rules for which files of a folder may go there.

A Space upload takes the files git tracks (or an explicit allow-list), of the kinds a Space needs
(:data:`SPACE_FILE_PATTERNS`: code, configs, docs, weights, images), and never secrets
(:data:`SECRET_PATTERNS`: ``.env*``, ``*.pem``, ``*.key``, ``id_rsa*``, ``.pypirc``, ``*credentials*``,
``*token*``, ...), hidden files, symlinks, files holding the token in use, pickles, caches or ``.git``.

Example:
    >>> from hub_tools import push_space, space_files
    >>> files, refused = space_files(".")   # what `mad-models space push` would upload from here
    >>> url = push_space(".", "me/mad-models-demo")  # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml
from huggingface_hub import CommitInfo
from huggingface_hub.utils import validate_repo_id

from hub_tools.commit import WEIGHT_PATTERNS, commit_folder, folder_files
from hub_tools.errors import DEFAULT_TIMEOUT, hub_errors, resolve_endpoint
from hub_tools.outgoing import holds_token, token_secrets
from mad_models.cards import space_card

logger = logging.getLogger(__name__)

# What a Space is made of. Anything else in the folder (a database dump, a keystore, a notebook) stays here.
SPACE_FILE_PATTERNS = (
    "*.py", "*.txt", "*.md", "*.json", "*.jsonl", "*.yaml", "*.yml", "*.toml", "*.cfg", "*.csv", "*.tsv",
    "*.css", "*.js", "*.html", "*.jinja", "*.safetensors", "*.gguf", "*.model",
    "*.png", "*.jpg", "*.jpeg", "*.gif", "*.svg", "*.webp", "*.ico",
    "Dockerfile", "LICENSE", "LICENSE.*",
)  # fmt: skip
# Never uploaded to a Space, whatever git or an allow-list says (matched on every path component, any case).
# "*token*" spares tokenizer files (tokenizer.json, ...), which are model files, not secrets.
SECRET_PATTERNS = (
    ".env", ".env*", "*.env", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.kdbx", "*.gpg",
    ".netrc", "_netrc", ".pgpass", ".pypirc", ".npmrc", ".git-credentials",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
    "*credentials*", "*token*", "*secret*", "*password*", "*passwd*", "*service*account*", "kaggle.json",
)  # fmt: skip
# The Space's settings (sdk, app_file, hardware, ...): push_space writes them as the front matter of the
# Space's README.md, so the project's README needs none (GitHub and PyPI render it).
SPACE_CONFIG = "space.yaml"
SPACE_IGNORE = (
    ".git/*", "*/.git/*", "__pycache__/*", "*/__pycache__/*", "*.pyc", ".venv/*", "*.egg-info/*",
    # local caches and run outputs of a checkout, never part of the app
    ".pytest_cache/*", ".ruff_cache/*", "test-artifacts/*", "runs/*",
)  # fmt: skip


def _is_secret(rel: str) -> bool:
    """True if any component of the relative path looks like a credential file (see SECRET_PATTERNS)."""
    for part in rel.lower().split("/"):
        for pattern in SECRET_PATTERNS:
            if fnmatch.fnmatch(part, pattern) and not (pattern == "*token*" and "tokeniz" in part):
                return True
    return False


def _has_symlink(src: Path, rel: str) -> bool:
    parts = rel.split("/")
    return any((src.joinpath(*parts[: i + 1])).is_symlink() for i in range(len(parts)))


def _refusal(src: Path, rel: str, secrets: Sequence[str]) -> str | None:
    """Why ``rel`` (a file of the app folder ``src``) is never uploaded to a Space, or None if it may be."""
    parts = rel.split("/")
    if _has_symlink(src, rel):
        return "symlink"
    if _is_secret(rel):
        return "looks like a secret"
    if any(p.startswith(".") for p in parts):
        return "hidden file"
    if not any(fnmatch.fnmatch(parts[-1], p) for p in SPACE_FILE_PATTERNS):
        return "not a kind of file a Space needs"
    if (src / rel).is_file() and holds_token(src / rel, secrets):
        return "holds the token in use"
    return None


def _git_tracked(src: Path) -> list[str] | None:
    """Files git tracks under `src` (relative to it), or None when `src` is not inside a git work tree.

    A folder that is inside a work tree (a ``.git`` above it) but that git cannot list (git missing,
    "dubious ownership", ...) raises ValueError rather than falling back to uploading every file.
    """
    in_repo = any((d / ".git").exists() for d in (src.resolve(), *src.resolve().parents))
    try:
        inside = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True
        )
        if inside.returncode == 0 and inside.stdout.strip() == "true":
            out = subprocess.run(
                ["git", "-C", str(src), "ls-files", "-z", "--cached", "--", "."],
                capture_output=True,
                check=True,
            )
            return sorted({f for f in out.stdout.decode().split("\0") if f})
        why = inside.stderr.strip().splitlines()[-1] if inside.stderr.strip() else "not a work tree"
    except (OSError, subprocess.CalledProcessError) as err:
        why = type(err).__name__
    if in_repo:
        raise ValueError(
            f"'{src}' is inside a git repository, but git cannot list its tracked files ({why}). Fix git, or "
            "name the files to upload with allow=[...] (--allow in the CLI)."
        )
    return None


# folders never part of a Space, not even walked (a checkout's virtualenv alone holds ~10^5 files)
_NEVER_WALKED = {".git", ".venv", "venv", "__pycache__", "node_modules", ".mypy_cache", ".pytest_cache"}


def _walk(src: Path) -> list[str]:
    """Every file under `src`, without following symlinked folders (their entries are reported as-is)."""
    found = []
    for root, dirs, files in os.walk(src, followlinks=False):
        dirs[:] = [d for d in dirs if d not in _NEVER_WALKED]
        base = Path(root).relative_to(src)
        found += [(base / d).as_posix() for d in dirs if (Path(root) / d).is_symlink()]
        found += [(base / f).as_posix() for f in files]
    return sorted(f.removeprefix("./") for f in found)


def space_files(
    app_dir: str | Path,
    *,
    allow: Sequence[str] | None = None,
    ignore_patterns: Sequence[str] | None = None,
    token: str | bool | None = None,
) -> tuple[list[str], dict[str, str]]:
    """``(files to upload, {refused file: why})`` for a Space upload of `app_dir`.

    The candidates are `allow` (file names or glob patterns, relative to `app_dir`) when given, else the
    files git tracks when `app_dir` is in a git work tree, else every file under it. Only kinds of files a
    Space needs are uploaded (:data:`SPACE_FILE_PATTERNS`), never secrets (:data:`SECRET_PATTERNS`), hidden
    files, symlinks, files holding the token in use (`token`, HF_TOKEN, the login cache), caches, .git or
    pickles: a glob in `allow` that matches one leaves it out, an entry naming one exactly raises ValueError.

    Example:
        >>> files, refused = space_files(".")   # what `mad-models space push` would upload from here
    """
    src = Path(app_dir)
    ignore = (*(SPACE_IGNORE if ignore_patterns is None else ignore_patterns), *WEIGHT_PATTERNS[2:])
    secrets = token_secrets(token)
    tracked = None
    if allow is not None:
        walked = _walk(src)
        candidates = sorted(
            {f for pattern in allow for f in walked if fnmatch.fnmatch(f, pattern.strip("/"))}
        )
        named = {p.strip("/") for p in allow if not any(c in p for c in "*?[")}  # exact names, no globs
        asked_bad = {f: why for f in candidates if f in named and (why := _refusal(src, f, secrets))}
        if asked_bad:
            raise ValueError(
                "allow= names files that are never uploaded to a Space: "
                f"{', '.join(f'{f} ({why})' for f, why in asked_bad.items())}. Remove them from the list; a "
                "Space is public by default."
            )
        missing = [p for p in allow if not any(fnmatch.fnmatch(f, p.strip("/")) for f in walked)]
        if missing:
            raise ValueError(f"allow= entries match no file in '{app_dir}': {missing}")
    else:
        tracked = _git_tracked(src)
        candidates = _walk(src) if tracked is None else [f for f in tracked if os.path.lexists(src / f)]
    upload, refused = [], {}
    for f in candidates:
        if any(fnmatch.fnmatch(f, p) for p in ignore) and not _has_symlink(src, f):
            continue  # caches, .git, pickles: silently left out, as before
        why = _refusal(src, f, secrets)  # links, secrets, hidden files, other kinds, the token
        if why:
            refused[f] = why
        elif (src / f).is_file():
            upload.append(f)
    if tracked is not None:
        logger.info(
            "%s is in a git work tree: only the %d files git tracks are candidates", src, len(tracked)
        )
    return upload, refused


def _card_body(text: str) -> str:
    """A Markdown card without its YAML front matter (``---`` lines at the top), if it has one."""
    m = re.match(r"\A---[ \t]*\r?\n.*?\r?\n---[ \t]*(?:\r?\n|\Z)", text, re.S)
    return text[m.end() :] if m else text


def space_config(app_dir: str | Path, app_file: str = "app.py") -> dict | None:
    """The Space settings in ``<app_dir>/space.yaml`` (a mapping), or None when there is no such file.

    Raises ValueError naming the file when it is not a YAML mapping, names another SDK than gradio, or an
    ``app_file`` other than `app_file`.

    Example:
        >>> space_config(".")["sdk"]   # in a checkout of mad-models
        'gradio'
    """
    path = Path(app_dir) / SPACE_CONFIG
    if not path.is_file():
        return None
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(config, dict) or not config:
        raise ValueError(f"{path} must be a YAML mapping of Space settings (sdk: gradio, app_file: ...)")
    if config.get("sdk", "gradio") != "gradio":
        raise ValueError(f"{path} says sdk: {config['sdk']!r}; push_space uploads Gradio apps (sdk: gradio)")
    if config.get("app_file", app_file) != app_file:
        raise ValueError(f"{path} says app_file: {config['app_file']!r}, but the app to push is {app_file!r}")
    return config


def _write_space_readme(out: Path, config: dict | None, *, title: str, app_file: str, license: str | None):
    """The Space's README.md in `out`: front matter from `config` (space.yaml) over the uploaded README's
    body; without `config`, the uploaded README as it is, or a generated card when there is none."""
    from importlib.metadata import PackageNotFoundError, version

    readme = out / "README.md"
    if config is None and readme.is_file():
        return  # no space.yaml: the app's own card, as before
    try:  # the version the app was written against (importing gradio itself takes seconds)
        sdk_version = version("gradio")
    except PackageNotFoundError:
        sdk_version = None
    card = space_card(title, sdk="gradio", sdk_version=sdk_version, app_file=app_file, license=license)
    if config is None:
        card.save(readme)
        return
    body = _card_body(readme.read_text(encoding="utf-8")) if readme.is_file() else card.text
    # space.yaml as written, plus what a Space cannot start without where it leaves that out
    needed = {"sdk": "gradio", "app_file": app_file, "sdk_version": sdk_version}
    meta = {**config, **{k: v for k, v in needed.items() if k not in config and v is not None}}
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    body = body.lstrip("\r\n")
    readme.write_text(f"---\n{front}---\n\n{body}", encoding="utf-8")
    logger.info("the Space's README.md front matter comes from %s", SPACE_CONFIG)


def push_space(
    app_dir: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
    app_file: str = "app.py",
    title: str | None = None,
    license: str | None = "apache-2.0",
    ignore_patterns: Sequence[str] = SPACE_IGNORE,
    allow: Sequence[str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> CommitInfo:
    """Upload `app_dir` as a Gradio Space (repo_type="space") in one commit.

    What is uploaded (see :func:`space_files`): the files git tracks when `app_dir` is in a git work tree,
    or the files matching `allow` (names or glob patterns), else every file; only kinds of files a Space
    needs, never secrets, hidden files, symlinks, files holding the token, pickles or caches. The list is
    logged (WARNING, so a terminal shows it) before the commit. The Space's README.md gets its front matter
    (the Space settings) from ``<app_dir>/space.yaml`` when there is one, with the uploaded README.md as its
    body; without space.yaml, an uploaded README.md is kept as it is, and one with Space metadata (sdk:
    gradio, sdk_version, app_file) is written when the upload has none.

    Example:
        >>> url = push_space("demo/", "me/mad-models-demo")
        >>> url = push_space(".", "me/demo", allow=["app.py", "requirements.txt", "mad_models/*"])
    """
    src = Path(app_dir)
    if not src.is_dir():
        raise ValueError(f"app_dir '{app_dir}' is not a directory")
    config = space_config(src, app_file)
    endpoint = resolve_endpoint(endpoint)
    with hub_errors(repo_id, "push to", endpoint=endpoint, repo_type="space"):
        validate_repo_id(repo_id)
    upload, refused = space_files(src, allow=allow, ignore_patterns=ignore_patterns, token=token)
    if app_file not in upload:
        raise ValueError(
            f"app_dir '{app_dir}' has no {app_file} to upload"
            + (" (not tracked by git, or not in allow=)" if (src / app_file).is_file() else "")
            + ": a Gradio Space starts from that file"
        )
    if refused:
        logger.warning(
            "push_space never uploads these files of %s: %s",
            src,
            ", ".join(f"{f} ({why})" for f, why in sorted(refused.items())),
        )
    with tempfile.TemporaryDirectory(prefix="hub_tools-") as tmp:
        out = Path(tmp)
        for f in upload:
            (out / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / f, out / f)
        title = title or repo_id.split("/")[-1]
        _write_space_readme(out, config, title=title, app_file=app_file, license=license)
        if not (out / "requirements.txt").is_file():
            logger.warning("%s has no requirements.txt: the Space will only have gradio installed", app_dir)
        visibility = "private" if private else "public unless it already exists as private"
        listing = folder_files(out)
        logger.warning(
            "push_space uploads %d files to Space '%s' (%s): %s",
            len(listing),
            repo_id,
            visibility,
            ", ".join(listing),
        )
        return commit_folder(
            out,
            repo_id,
            repo_type="space",
            space_sdk="gradio",
            commit_message=commit_message or "Upload Gradio app with hub_tools",
            private=private,
            token=token,
            endpoint=endpoint,
            delete_patterns=(),
            timeout=timeout,
        )
