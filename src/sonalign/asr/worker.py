"""Transcription in a worker process, so pocketsphinx (one core, single-threaded) runs while the
main process embeds audio with the CNN on the other cores.

``TranscriptWorker(fast=True)`` starts its spawned processes on first use (``workers``, default
one per CPU core, at most 4: pocketsphinx is the slowest step of indexing speech, and while the
CNN waits for it the cores would otherwise idle); ``submit(waves)`` splits the waves over the
workers and returns a handle whose ``result()`` is the list of transcripts, in order. The worker needs numpy and
pocketsphinx only (no torch). Where the process cannot be started or dies (a sandbox without
process creation; a parent run from stdin, which ``spawn`` cannot re-import), the transcripts
are computed in the calling process instead, with the same results, and a warning says so once.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from sonalign.asr.pocketsphinx import Transcriber
from sonalign.utils.processes import PooledRun, spawn_pool, stop_pool

log = logging.getLogger(__name__)
_TRANSCRIBER: Transcriber | None = None


def _init(fast: bool) -> None:
    global _TRANSCRIBER
    _TRANSCRIBER = Transcriber(fast=fast)


def _transcribe_many(waves: list[np.ndarray]) -> list[str]:
    assert _TRANSCRIBER is not None
    return _TRANSCRIBER.transcribe_many(waves)


class PendingTranscripts:
    """The transcripts of one :meth:`TranscriptWorker.submit`, in the order of its waves."""

    def __init__(self, parts: PooledRun | list[list[str]]):
        self._parts = parts

    def result(self) -> list[str]:
        return [t for part in self._parts for t in part]


class TranscriptWorker:
    def __init__(self, fast: bool = True, *, in_process: bool = False, workers: int | None = None):
        self.fast = fast
        self.in_process = in_process
        self.workers = max(1, int(workers if workers is not None else min(4, os.cpu_count() or 1)))
        self._pool: ProcessPoolExecutor | None = None
        self._transcriber: Transcriber | None = None

    def submit(self, waves: list[np.ndarray]) -> PendingTranscripts:
        """Start transcribing ``waves`` (in contiguous parts of about equal audio length, one per
        worker); where worker processes cannot run, the parts are transcribed here instead."""
        waves = [np.asarray(w, np.float32) for w in waves]
        if not waves:
            return PendingTranscripts([])
        bounds = np.searchsorted(np.cumsum([w.size for w in waves]), np.linspace(0, sum(w.size for w in waves), self.workers + 1)[1:-1])
        parts = [[waves[i] for i in p] for p in np.split(np.arange(len(waves)), bounds) if p.size]
        if self._pool is None and not self.in_process:
            try:
                self._pool = spawn_pool(self.workers, _init, (self.fast,))
            except PooledRun.BROKEN as exc:
                self._fall_back(exc)
        here = lambda rest: (self._local().transcribe_many(part) for part in rest)  # noqa: E731
        return PendingTranscripts(PooledRun(None if self.in_process else self._pool, _transcribe_many, parts, in_flight=len(parts), local=here,
                                            on_broken=self._fall_back))

    def _local(self) -> Transcriber:
        if self._transcriber is None:
            self._transcriber = Transcriber(fast=self.fast)
        return self._transcriber

    def _fall_back(self, exc: BaseException) -> None:
        if not self.in_process:
            log.warning("transcription worker process unavailable (%s); transcribing in this process", exc)
        self.in_process = True
        self.close()

    def close(self, *, wait: bool = True) -> None:
        """Stop the worker processes (``wait=False``: at once, dropping transcripts in flight)."""
        stop_pool(self._pool, wait=wait)
        self._pool = None

    def __enter__(self) -> TranscriptWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
