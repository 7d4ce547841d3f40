"""Who is asking, and how much one visitor may ask at once (the app as a public Space).

A *visitor* is an address, not a browser tab or an API client: one person opening three tabs or three
``gradio_client`` connections is one visitor. Behind the Space's proxy the address is the one the proxy
appended to ``X-Forwarded-For`` (entries a client wrote itself come before it and are ignored); on a
machine without a proxy it is the peer address.

Each visitor runs at most ``max_jobs`` model events at a time. A request beyond that is refused at once
when the queue reaches it, so a visitor who queues 70 jobs takes one worker and the other visitors' jobs
pass the rest of the queue in milliseconds instead of waiting for all 70.

Example:
    >>> limits = VisitorLimits(max_jobs=1, trusted_proxies=1)
    >>> guard_events(demo, limits, ("models", "load"))  # every event of those queues, after demo is built
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from app_backend.registry import AppInputError

MAX_JOBS_PER_VISITOR = int(os.environ.get("MAD_MODELS_MAX_JOBS_PER_VISITOR", "1"))
JOB_EXPIRY_S = 15 * 60  # a job whose end was never seen (a dropped stream) stops counting after this

# the visitor the event being served belongs to (set by guard_events around each call); None elsewhere
_VISITOR: ContextVar[str | None] = ContextVar("app_visitor", default=None)


def current_visitor() -> str | None:
    """The visitor of the event this thread serves (inside a guarded plain event, such as Load), else None
    (streamed events are guarded too, but do not set it)."""
    return _VISITOR.get()


def trusted_proxies_default() -> int:
    """Proxies in front of the app whose ``X-Forwarded-For`` entries are trusted: one on a Space."""
    value = os.environ.get("MAD_MODELS_TRUSTED_PROXIES")
    if value is not None:
        return int(value)
    return 1 if os.environ.get("SPACE_ID") else 0


def visitor_of(request: Any, trusted_proxies: int = 0) -> str:
    """The address ``request`` comes from: the ``trusted_proxies``-th ``X-Forwarded-For`` entry from the
    right when there are proxies, else the peer address (``"unknown"`` when neither is known)."""
    if request is None:
        return "unknown"
    if trusted_proxies > 0:
        headers = {k.lower(): v for k, v in dict(getattr(request, "headers", {}) or {}).items()}
        hops = [h.strip() for h in headers.get("x-forwarded-for", "").split(",") if h.strip()]
        if len(hops) >= trusted_proxies:
            return hops[-trusted_proxies]
    client = getattr(request, "client", None)
    return str(getattr(client, "host", None) or "unknown")


class VisitorLimits:
    """Counts each visitor's running jobs; :meth:`acquire` refuses one more than ``max_jobs``."""

    def __init__(self, max_jobs: int = MAX_JOBS_PER_VISITOR, trusted_proxies: int | None = None):
        self.max_jobs = max_jobs
        self.trusted_proxies = trusted_proxies_default() if trusted_proxies is None else trusted_proxies
        self._running: dict[str, dict[int, float]] = {}  # visitor -> {job id: start time}
        self._ids = iter(range(1 << 62))
        self._lock = threading.Lock()
        self.refused = 0

    def running(self, visitor: str) -> int:
        with self._lock:
            return len(self._live(visitor))

    def _live(self, visitor: str) -> dict[int, float]:
        jobs = self._running.setdefault(visitor, {})
        now = time.monotonic()
        for jid in [j for j, t in jobs.items() if now - t > JOB_EXPIRY_S]:
            del jobs[jid]
        return jobs

    def acquire(self, visitor: str) -> int:
        """Take one of ``visitor``'s job slots (its id); AppInputError if all are in use."""
        with self._lock:
            jobs = self._live(visitor)
            if len(jobs) >= self.max_jobs:
                self.refused += 1
                raise AppInputError(
                    f"You already have {len(jobs)} request{'s' if len(jobs) > 1 else ''} running; this "
                    f"public app runs at most {self.max_jobs} per visitor at a time, so that everyone gets "
                    "a turn. Wait for it to finish, then try again."
                )
            jid = next(self._ids)
            jobs[jid] = time.monotonic()
            return jid

    def release(self, visitor: str, jid: int) -> None:
        with self._lock:
            self._running.get(visitor, {}).pop(jid, None)


def _guarded(fn: Callable, limits: VisitorLimits) -> Callable:
    """``fn`` run inside one of its visitor's job slots (the visitor read from Gradio's request); a
    visitor with no free slot gets the refusal as the event's error, and nothing runs."""
    import gradio as gr

    def take_slot() -> tuple[str, int]:
        """(visitor, job id) of the request being served; its refusal becomes the event's error."""
        from gradio.context import LocalContext

        who = visitor_of(LocalContext.request.get(None), limits.trusted_proxies)
        try:
            return who, limits.acquire(who)
        except AppInputError as e:
            raise gr.Error(str(e)) from None

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen(*args, **kwargs):
            who, jid = take_slot()
            try:
                yield from fn(*args, **kwargs)
            finally:  # also when the stream is dropped: the generator is closed
                limits.release(who, jid)

        return gen

    @functools.wraps(fn)
    def call(*args, **kwargs):
        who, jid = take_slot()
        token = _VISITOR.set(who)  # what service code reads through current_visitor()
        try:
            return fn(*args, **kwargs)
        finally:
            _VISITOR.reset(token)
            limits.release(who, jid)

    return call


def guard_events(demo: Any, limits: VisitorLimits, concurrency_ids: tuple[str, ...]) -> int:
    """Wrap every event of ``demo`` in the queues ``concurrency_ids`` so each runs in one of its visitor's
    job slots (see :class:`VisitorLimits`). Call once the whole page is built; returns how many were
    wrapped. The wrapper keeps the handler's signature, so Gradio still passes it its request."""
    n = 0
    for block_fn in demo.fns.values():
        if block_fn.fn is not None and block_fn.concurrency_id in concurrency_ids:
            block_fn.fn = _guarded(block_fn.fn, limits)
            n += 1
    return n
