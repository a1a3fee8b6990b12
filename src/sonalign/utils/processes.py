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
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
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
