"""Command line: ``mad-models`` / ``python -m mad_models``.

Subcommands: ``mad train|eval``, ``hybrid build|pretrain-projectors|search|prune|eval``,
``more train|search|eval``, and those of installed plugins (hub_tools' ``push``, ``pull``,
``space push``, through the ``mad_models.commands`` entry point). Every one has ``--help`` with
examples. Training commands resume from ``<out>/checkpoints`` when run again with the same ``--out``
(``--no-resume`` starts over).

The package, one module per command group:
- ``common``: what every group shares (argument types, training options, output checks, the JSON
  printer, loading a saved model or tokenizer); plugins use its public names;
- ``mad``, ``hybrid``, ``more``: each group's commands and its ``add_commands(groups)``;
- this module: the parser (the groups, then the plugins' commands) and ``main``.

Errors: a user error (bad input, a missing file, a Hub error) prints one line; anything else is a bug and
prints one line saying so, with its trace under ``--traceback`` or ``MAD_MODELS_DEBUG=1``. Ctrl-C prints
one line saying what was kept. Building the parser imports no torch: ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from importlib.metadata import entry_points
from pathlib import Path

from mad_models.cli import hybrid, mad, more
from mad_models.cli.common import HELP_FORMAT, CLIError, add_traceback_option, check_out

# every command's --help examples, by "group command" (tests check that each one parses)
EXAMPLES = {**mad.EXAMPLES, **hybrid.EXAMPLES, **more.EXAMPLES}

PLUGIN_GROUP = "mad_models.commands"
DEBUG_ENV = "MAD_MODELS_DEBUG"  # set (to anything but "" or "0"): every error shows its trace
# What a user can cause: our own CLIError, files and folders (OSError), bad values (ValueError, which the
# Hub errors of hub_tools subclass too) and a run that diverged (FloatingPointError). Plugins add theirs
# (``user_errors``). Anything else is a bug: it says so and how to see the trace.
USER_ERRORS = (CLIError, OSError, ValueError, FloatingPointError)
EXIT_USER, EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED = 1, 2, 70, 130  # 70: sysexits' EX_SOFTWARE


def add_plugin_commands(groups) -> None:
    """Add the commands of installed plugins: entry points in the ``mad_models.commands`` group, each a
    function ``add_commands(groups)`` that adds subparsers to ``groups`` (hub_tools registers push, pull and
    space push this way, so the library never imports it). A plugin's subparser may set ``user_errors``
    (a tuple of exception types) as a default: main() reports those on one line, exit code 1."""
    seen = set()
    for ep in entry_points(group=PLUGIN_GROUP):
        if ep.value in seen:  # the same package found twice on sys.path (e.g. an in-tree egg-info)
            continue
        seen.add(ep.value)
        try:
            add_commands = ep.load()
        except Exception as err:  # a broken plugin must not take the library's commands down with it
            print(f"mad-models: warning: commands of plugin {ep.name!r} unavailable: {err}", file=sys.stderr)
            continue
        add_commands(groups)


def build_parser() -> argparse.ArgumentParser:
    """The ``mad-models`` parser: the ``mad``, ``hybrid`` and ``more`` groups, then the plugins' commands.

    Building it imports neither torch nor transformers: each command imports what it needs when it runs.
    """
    root = argparse.ArgumentParser(
        prog="mad-models",
        description="MAD tasks, Manticore hybrids and MoRe adapters: train, search, prune, push.",
        epilog="run 'mad-models <command> --help' for examples",
        formatter_class=HELP_FORMAT,
    )
    add_traceback_option(root, default=False)
    root.set_defaults(func=lambda a: root.print_help())  # no command: the help, not an error
    groups = root.add_subparsers(dest="group")

    mad.add_commands(groups)
    hybrid.add_commands(groups)
    more.add_commands(groups)

    # commands other packages add (hub_tools: push, pull, space push)
    add_plugin_commands(groups)
    return root


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _interrupted(args: argparse.Namespace | None) -> str:
    """What Ctrl-C leaves behind: a training run's checkpoints (a re-run resumes from the last one)."""
    out = getattr(args, "out", None)
    if out and hasattr(args, "save_every") and (Path(out) / "checkpoints").is_dir():
        return (
            f"mad-models: interrupted; the checkpoints in {Path(out) / 'checkpoints'} are kept "
            "(run the same command again to resume from the last one)"
        )
    return "mad-models: interrupted"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mad-models``; returns the exit code.

    0 ok; 1 a user error (bad input, a missing file, a Hub error), 2 a usage error, both one line;
    70 a bug: one line saying so, the trace with ``--traceback`` (or ``MAD_MODELS_DEBUG=1``);
    130 interrupted (Ctrl-C), one line saying what was kept.

    Example:
        >>> main(["mad", "eval", "--model", "runs/missing", "--task", "memorization"])  # doctest: +SKIP
        mad-models: error: --model 'runs/missing' is not a directory saved by save_pretrained
    """
    args = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        debug = args.traceback or os.environ.get(DEBUG_ENV, "") not in ("", "0")
        try:
            if getattr(args, "out", None):
                check_out(args.out)
            args.func(args)
        except CLIError as err:
            return _fail(parser, EXIT_USAGE, _one_line(err), debug)
        except (*USER_ERRORS, *getattr(args, "user_errors", ())) as err:
            return _fail(parser, EXIT_USER, _one_line(err), debug)
        except Exception as err:
            how = "the trace above" if debug else f"the trace (run again with --traceback or {DEBUG_ENV}=1)"
            line = f"a bug in mad-models, please report it with {how}: {type(err).__name__}: {_one_line(err)}"
            return _fail(parser, EXIT_BUG, line, debug)
    except KeyboardInterrupt:
        print(f"\n{_interrupted(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _fail(parser: argparse.ArgumentParser, code: int, line: str, debug: bool) -> int:
    """Print the error (after its trace when debugging) and exit with ``code``."""
    if debug:
        traceback.print_exc()
    parser.exit(code, f"mad-models: error: {line}\n")
    return code
