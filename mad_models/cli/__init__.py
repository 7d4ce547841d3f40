"""Command line: ``mad-models`` / ``python -m mad_models``.

Subcommands: ``mad train|eval``, ``hybrid build|pretrain-projectors|search|prune``,
``more train|search|eval``, and those of installed plugins (hub_tools' ``push``, ``pull``,
``space push``, through the ``mad_models.commands`` entry point). Every one has ``--help`` with
examples. Training commands resume from ``<out>/checkpoints`` when run again with the same ``--out``
(``--no-resume`` starts over).

The package, one module per command group:
- ``common``: what every group shares (argument types, training options, output checks, the JSON
  printer, loading a saved model or tokenizer); plugins use its public names;
- ``mad``, ``hybrid``, ``more``: each group's commands and its ``add_commands(groups)``;
- this module: the parser (the groups, then the plugins' commands) and ``main``.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from mad_models.cli import hybrid, mad, more
from mad_models.cli.common import HELP_FORMAT, CLIError, check_out

# every command's --help examples, by "group command" (tests check that each one parses)
EXAMPLES = {**mad.EXAMPLES, **hybrid.EXAMPLES, **more.EXAMPLES}

PLUGIN_GROUP = "mad_models.commands"


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
    """The ``mad-models`` parser: the ``mad``, ``hybrid`` and ``more`` groups, then the plugins' commands."""
    root = argparse.ArgumentParser(
        prog="mad-models",
        description="MAD tasks, Manticore hybrids and MoRe adapters: train, search, prune, push.",
        epilog="run 'mad-models <command> --help' for examples",
        formatter_class=HELP_FORMAT,
    )
    groups = root.add_subparsers(dest="group", required=True)

    mad.add_commands(groups)
    hybrid.add_commands(groups)
    more.add_commands(groups)

    # commands other packages add (hub_tools: push, pull, space push)
    add_plugin_commands(groups)
    return root


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mad-models``; returns the exit code (0 ok, 2 usage error, 1 failure)."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def fail(code: int, err: BaseException) -> None:  # one line, whatever the message holds
        parser.exit(code, f"mad-models: error: {' '.join(str(err).split()) or type(err).__name__}\n")

    try:
        if getattr(args, "out", None):
            check_out(args.out)
        args.func(args)
    except CLIError as err:
        fail(2, err)
    # bad input surfaces as these: unreadable or unwritable paths (OSError: missing, pickle-only, read-only,
    # a file where a dir belongs), ids outside a vocabulary (IndexError), the wrong kind of model
    # (AttributeError), a diverged run (ArithmeticError)
    except (ValueError, TypeError, OSError, IndexError, AttributeError, KeyError, ArithmeticError) as err:
        fail(1, err)
    except Exception as err:
        if isinstance(err, getattr(args, "user_errors", ())):  # a plugin command's own user errors
            fail(1, err)
        raise
    return 0
