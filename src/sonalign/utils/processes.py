"""Worker process pools that never outlive the process that started them.

``spawn_pool(n, initializer, initargs)`` is a ``spawn`` :class:`ProcessPoolExecutor` whose workers
first tie their life to the parent's: on Linux the kernel sends them SIGKILL when the parent dies
(``PR_SET_PDEATHSIG``, even after ``kill -9`` of the parent), and everywhere a watchdog thread
exits the worker once its parent process is gone (re-parented workers would otherwise live on,
each holding its models). ``stop_pool(pool)`` ends a pool at once (on SIGTERM or Ctrl-C) instead of
waiting for the tasks in flight.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

_PR_SET_PDEATHSIG = 1
WATCHDOG_SECONDS = 1.0


def _exit_when_orphaned(parent: int) -> None:
    while True:
        time.sleep(WATCHDOG_SECONDS)
        if os.getppid() != parent:
            os._exit(1)


def die_with_parent(parent: int) -> None:
    """Make this (worker) process end when process ``parent`` ends."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True, name="parent-watchdog").start()


def _start_worker(parent: int, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    die_with_parent(parent)
    # SIGINT goes to the whole process group on Ctrl-C: the parent decides what stops, not the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)


def spawn_pool(workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> ProcessPoolExecutor:
    """A spawned process pool whose workers die with this process (see the module docstring)."""
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start_worker, initargs=(os.getpid(), initializer, initargs))


def stop_pool(pool: ProcessPoolExecutor | None, *, wait: bool = True) -> None:
    """Shut ``pool`` down; with ``wait=False`` its workers are killed instead of finishing their tasks."""
    if pool is None:
        return
    if not wait:
        processes: dict[Any, Any] = dict(getattr(pool, "_processes", None) or {})
        for process in processes.values():
            with contextlib.suppress(Exception):
                process.kill()
    pool.shutdown(wait=wait, cancel_futures=True)
    if not wait:
        for process in processes.values():
            with contextlib.suppress(Exception):
                process.join(5)


class PooledRun:
    """``fn(item)`` for every item in a worker pool, results in the items' order, at most
    ``in_flight`` items submitted at a time (the first ones at construction, so the work starts
    while the caller does something else). The one fall-back policy of sonalign's pools:

    * the pool breaks (or cannot start) before any result came back: processes are not available
      here, so every item goes to ``local(items)``, which yields their results in this process;
    * a worker dies later: each item in flight goes to ``lost(item, exc)`` when given (indexing
      reports those files as failed: the file may be what killed the worker), else back to
      ``local`` with the rest.

    ``on_broken(exc)`` is called once when the pool breaks (e.g. to stop using it).
    """

    BROKEN = (BrokenProcessPool, OSError, RuntimeError)

    def __init__(self, pool: ProcessPoolExecutor | None, fn: Callable[[Any], Any], items: list[Any], *, in_flight: int,
                 local: Callable[[list[Any]], Iterator[Any]], lost: Callable[[Any, BaseException], Any] | None = None,
                 on_broken: Callable[[BaseException], None] | None = None):
        self.pool, self.fn, self.local, self.lost, self.on_broken = pool, fn, local, lost, on_broken
        self.in_flight = max(1, in_flight)
        self.todo: deque[Any] = deque(items)
        self.pending: deque[tuple[Any, Future]] = deque()
        self.broken: BaseException | None = None if pool is not None else RuntimeError("no worker pool")
        self._fill()

    def _fill(self) -> None:
        try:
            while self.broken is None and self.todo and len(self.pending) < self.in_flight:
                self.pending.append((self.todo[0], self.pool.submit(self.fn, self.todo[0])))
                self.todo.popleft()
        except self.BROKEN as exc:
            self._break(exc)

    def _break(self, exc: BaseException) -> None:
        self.broken = exc
        if self.on_broken is not None:
            self.on_broken(exc)

    def __iter__(self) -> Iterator[Any]:
        succeeded = False
        while self.pending and self.broken is None:
            item, future = self.pending[0]
            try:
                result = future.result()
            except BrokenProcessPool as exc:
                self._break(exc)
                break
            self.pending.popleft()
            succeeded = True
            yield result
            self._fill()
        in_flight = [item for item, _ in self.pending]
        if succeeded and self.lost is not None:
            yield from (self.lost(item, self.broken) for item in in_flight)
            in_flight = []
        rest = in_flight + list(self.todo)
        if rest:
            yield from self.local(rest)
