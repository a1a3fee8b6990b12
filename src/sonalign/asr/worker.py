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
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from sonalign.asr.pocketsphinx import Transcriber
from sonalign.utils.processes import spawn_pool, stop_pool

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

    def __init__(self, worker: TranscriptWorker, waves: list[np.ndarray], futures: list[Future] | None):
        self._worker, self._waves, self._futures = worker, waves, futures

    def result(self, timeout: float | None = None) -> list[str]:
        if self._futures is not None:
            try:
                return [t for f in self._futures for t in f.result(timeout)]
            except BrokenProcessPool as exc:
                self._worker._fall_back(exc)
        return self._worker._local().transcribe_many(self._waves)


class TranscriptWorker:
    def __init__(self, fast: bool = True, *, in_process: bool = False, workers: int | None = None):
        self.fast = fast
        self.in_process = in_process
        self.workers = max(1, int(workers if workers is not None else min(4, os.cpu_count() or 1)))
        self._pool: ProcessPoolExecutor | None = None
        self._transcriber: Transcriber | None = None

    def submit(self, waves: list[np.ndarray]) -> PendingTranscripts:
        waves = [np.asarray(w, np.float32) for w in waves]
        if not waves or self.in_process:
            return PendingTranscripts(self, waves, None)
        try:
            if self._pool is None:
                self._pool = spawn_pool(self.workers, _init, (self.fast,))
            # contiguous parts of about equal audio length, one per worker
            bounds = np.searchsorted(np.cumsum([w.size for w in waves]), np.linspace(0, sum(w.size for w in waves), self.workers + 1)[1:-1])
            parts = [p for p in np.split(np.arange(len(waves)), bounds) if p.size]
            return PendingTranscripts(self, waves, [self._pool.submit(_transcribe_many, [waves[i] for i in p]) for p in parts])
        except (OSError, RuntimeError, BrokenProcessPool) as exc:
            self._fall_back(exc)
            return PendingTranscripts(self, waves, None)

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
