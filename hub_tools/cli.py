"""The Hub commands of ``mad-models``: ``push``, ``pull`` and ``space push``.

The library's CLI (``mad_models.cli``) does not know hub_tools: it finds these commands through the
``mad_models.commands`` entry point that pyproject.toml registers (``hub = "hub_tools.cli:add_commands"``).
Hub errors (:class:`hub_tools.HubError`) are reported on one line with exit code 1, like the library's
own user errors: each command lists them under ``user_errors``, which ``mad_models.cli.main`` reads.

Example:
    $ mad-models pull me/smollm2-more-arith --base-model smollm2 --base-revision v1 --out local/adapter
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mad_models.cli.common import CLIError, add_command, add_group, print_json, require_saved

EXAMPLES = {
    "push": """examples:
  mad-models push runs/more-arith/final me/smollm2-more-arith --base-model smollm2 --private
  mad-models push runs/search/final me/neox-mamba-manticore --message "searched on MAD\"""",
    "pull": """examples:
  mad-models pull me/neox-mamba-manticore --revision main --out local/hybrid
  mad-models pull me/smollm2-more-arith --base-model smollm2 --out local/adapter""",
    "space push": """examples:
  mad-models space push me/mad-models-demo                 # this checkout's app.py, assets and package
  mad-models space push me/mad-models-demo --dir path/to/app --private""",
}


def _hub_base(a):
    """The adapter base for push / pull: a loaded SmolLM2 for 'smollm2', else the dir or id as given."""
    if a.base_model and a.base_model.lower() == "smollm2":
        from mad_models.loading import load_base

        return load_base(a.base_model)[0]
    return a.base_model


def cmd_push(a) -> None:
    from hub_tools import push

    base = _hub_base(a)
    kwargs = dict(private=a.private or None, commit_message=a.message, revision=a.revision)
    url = push(a.dir, a.repo_id, base_model=base, endpoint=a.endpoint, **kwargs)
    print_json({"url": str(url), "commit": getattr(url, "oid", None)})


def cmd_pull(a) -> None:
    from hub_tools import pull
    from mad_models.loading import save_pretrained

    out = Path(a.out)
    if out.is_dir() and any(out.iterdir()) and not a.force:  # before any download: nothing is overwritten
        raise CLIError(
            f"--out {a.out} is not empty; pulling would overwrite files in it (a config.json of yours, say). "
            "Give an empty or new folder, or pass --force to write into it anyway."
        )
    base = _hub_base(a)
    model = pull(a.repo_id, a.revision, base_model=base, endpoint=a.endpoint, base_revision=a.base_revision)
    save_pretrained(model, a.out)
    require_saved(a.out)
    print_json({"loaded": type(model).__name__, "saved": a.out})


def cmd_space_push(a) -> None:
    from hub_tools import push_space, space_files

    if not Path(a.dir).is_dir():
        raise NotADirectoryError(f"--dir '{a.dir}' is not a directory")
    # show what leaves the machine before the commit (git-tracked files or --allow; never secrets)
    upload, refused = space_files(a.dir, allow=a.allow)
    print(f"uploading {len(upload)} files from {a.dir}: {', '.join(upload)}", file=sys.stderr)
    if refused:
        never = ", ".join(f"{f} ({why})" for f, why in sorted(refused.items()))
        print(f"never uploaded: {never}", file=sys.stderr)
    url = push_space(
        a.dir,
        a.repo_id,
        private=a.private or None,
        commit_message=a.message,
        endpoint=a.endpoint,
        allow=a.allow,
    )
    print_json({"url": str(url), "commit": getattr(url, "oid", None)})


def _add_hub_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-model", help="for adapters: the base ('smollm2', a dir or a hub id)")
    p.add_argument("--revision", help="branch (push) or branch / tag / commit (pull)")
    p.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or huggingface.co)")


def add_commands(groups) -> None:
    """Add ``push``, ``pull`` and ``space push`` to the ``mad-models`` subcommands ``groups``
    (the ``mad_models.commands`` entry point)."""

    from hub_tools.errors import HubError  # light: huggingface_hub, no torch

    def sub(parent, name, help_, key, func):
        p = add_command(parent, name, help_, EXAMPLES[key], func)
        p.set_defaults(user_errors=(HubError,))  # Hub errors name the repo and what to do
        return p

    p = sub(groups, "push", "push a saved adapter or hybrid to the Hub (one commit)", "push", cmd_push)
    p.add_argument("dir", help="a directory written by save_pretrained")
    p.add_argument("repo_id")
    _add_hub_common(p)
    p.add_argument("--private", action="store_true")
    p.add_argument("--message", help="commit message")

    p = sub(groups, "pull", "download an adapter or hybrid (safetensors only)", "pull", cmd_pull)
    p.add_argument("repo_id", help="repo id or local directory")
    _add_hub_common(p)
    p.add_argument(
        "--base-revision", help="for adapters: pin the base model's branch / tag / commit (default: its main)"
    )
    p.add_argument("--out", required=True, help="where to save the loaded model (a new or empty folder)")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out, overwriting its files")

    space = add_group(groups, "space", "the demo app as a Hugging Face Space")
    p = sub(space, "push", "upload the Gradio app as a Space (one commit)", "space push", cmd_space_push)
    p.add_argument("repo_id", help="the Space's repo id, e.g. me/mad-models-demo")
    p.add_argument(
        "--dir",
        default=".",
        help="the folder holding app.py (default: the current one); in a git work tree only tracked files "
        "are uploaded, only kinds a Space needs (code, configs, docs, weights, images), and never secrets "
        "(.env*, *.pem, *.key, id_rsa*, *credentials*, *token*, ...), hidden files, symlinks or files "
        "holding your token",
    )
    p.add_argument(
        "--allow",
        nargs="+",
        metavar="PATTERN",
        help="upload only files matching these names / glob patterns (relative to --dir)",
    )
    p.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or huggingface.co)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--message", help="commit message")
