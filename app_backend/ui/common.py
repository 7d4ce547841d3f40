"""What every tab shares: the service it calls, the concurrency settings, and the error wrapper."""

from __future__ import annotations

import functools
import html
import inspect
import logging
import traceback
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from app_backend.registry import AppInputError, Registry
from app_backend.service import AppService

log = logging.getLogger("mad-models-app")


@dataclass
class TabContext:
    """Handed to each tab builder: the service, its registry, and the queue settings of model events."""

    svc: AppService
    on_models: dict[str, Any] = field(default_factory=dict)  # concurrency of every event that runs a model

    @property
    def registry(self) -> Registry:
        return self.svc.registry


def error_text(e: Exception, where: str) -> str:
    """The one line a user sees for an exception raised in handler ``where``, never a trace.

    Bad input (``AppInputError``, ``gr.Error``) shows its own message; anything else is logged with its
    trace and shown as one line naming the handler.
    """
    if isinstance(e, gr.Error):
        return str(e.message)
    if isinstance(e, AppInputError):
        return str(e)
    log.error("unexpected error in %s:\n%s", where, traceback.format_exc())
    return f"Something went wrong in {where}: {type(e).__name__}: {str(e)[:300]}"


def ui_errors(fn):
    """Show bad input as a message in the UI; log anything unexpected and show one line, never a trace."""

    def convert(e: Exception) -> gr.Error:
        if isinstance(e, gr.Error):
            return e
        return gr.Error(error_text(e, fn.__name__))

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:
                raise convert(e) from None

        return gen

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise convert(e) from None

    return wrapper


def error_md(message: str) -> str:
    """A tab's status line for a failure (markdown; the ``tab-error`` class is what tests look for)."""
    return (
        "<div class='tab-error' role='alert' style='color:#b91c1c;background:#fef2f2;"
        "border:1px solid #fecaca;border-radius:6px;padding:6px 10px'>"
        f"⚠ <b>Error:</b> {html.escape(message, quote=False)}</div>"
    )


def status_md(message: str) -> str:
    """A tab's status line for a success: replaces any earlier error in the same place."""
    return f"<div class='tab-ok'>{html.escape(message, quote=False)}</div>" if message else ""


def errors_in_place(*cleared: Any):
    """Decorate a tab handler that returns ``(status, *outputs)`` so a failure stays in its tab.

    On success the handler's own status line (a string, rendered by ``status_md``) replaces any old
    error. On failure the status line shows the message (``error_md``) and the outputs are set to
    ``cleared`` (one value per output; ``gr.skip()`` leaves one as it is), so no stale result sits
    under the error. The event itself succeeds: Gradio draws no toast and no red "Error" pill over
    the outputs or over controls of other tabs.

    Example:
        >>> @errors_in_place(None, "")
        ... def sizes():
        ...     return "3 adapters", table, chart_html
    """

    def wrap(fn):
        def fail(e: Exception) -> tuple:
            return (error_md(error_text(e, fn.__name__)), *cleared)

        def ok(result: tuple) -> tuple:
            status, *rest = result
            return (status_md(status), *rest)

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen(*args, **kwargs):
                try:
                    for result in fn(*args, **kwargs):
                        yield ok(result)
                except Exception as e:
                    yield fail(e)

            return gen

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return ok(fn(*args, **kwargs))
            except Exception as e:
                return fail(e)

        return wrapper

    return wrap


def status_line(elem_id: str) -> gr.Markdown:
    """The place a tab shows its progress, its last result's summary, or its error."""
    return gr.Markdown("", elem_id=elem_id, elem_classes=["tab-status"])
