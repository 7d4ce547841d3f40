"""What every tab shares: the service it calls, the concurrency settings, and the error wrapper."""

from __future__ import annotations

import functools
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


def ui_errors(fn):
    """Show bad input as a message in the UI; log anything unexpected and show one line, never a trace."""

    def convert(e: Exception) -> gr.Error:
        if isinstance(e, gr.Error):
            return e
        if isinstance(e, AppInputError):
            return gr.Error(str(e))
        log.error("unexpected error in %s:\n%s", fn.__name__, traceback.format_exc())
        return gr.Error(f"Something went wrong in {fn.__name__}: {type(e).__name__}: {str(e)[:300]}")

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
