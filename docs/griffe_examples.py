"""A griffe extension for the API pages: a docstring's ``Example:`` section is read as ``Examples:``.

The project's docstrings head their doctests ``Example:`` (singular). griffe's Google-style parser reads
only ``Examples:`` as doctests (``>>>`` lines become Python code blocks); ``Example:`` would otherwise
render as a note whose ``>>>`` lines Markdown takes for nested quotes. Listed under ``extensions`` in
``mkdocs.yml``; never shipped with the library.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename every ``Example:`` section heading to ``Examples:`` before the docstring is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE_HEADING.sub(r"\1Examples:", obj.docstring.value)
