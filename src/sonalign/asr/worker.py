"""Transcription in a worker process, so pocketsphinx (one core, single-threaded) runs while the
main process embeds audio with the CNN on the other cores.

``TranscriptWorker(fast=True)`` starts one spawned process on first use; ``submit(waves)``
returns a handle whose ``result()`` is the list of transcripts. The worker needs numpy and
pocketsphinx only (no torch). Where the process cannot be started or dies (a sandbox without
process creation; a parent run from stdin, which ``spawn`` cannot re-import), the transcripts
are computed in the calling process instead, with the same results, and a warning says so once.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

import numpy as np

from sonalign.asr.pocketsphinx import Transcriber

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

    def __init__(self, worker: TranscriptWorker, waves: list[np.ndarray], future: Future | None):
        self._worker, self._waves, self._future = worker, waves, future

    def result(self, timeout: float | None = None) -> list[str]:
        if self._future is not None:
            try:
                return self._future.result(timeout)
            except BrokenProcessPool as exc:
                self._worker._fall_back(exc)
        return self._worker._local().transcribe_many(self._waves)


class TranscriptWorker:
    def __init__(self, fast: bool = True, *, in_process: bool = False):
        self.fast = fast
        self.in_process = in_process
        self._pool: ProcessPoolExecutor | None = None
        self._transcriber: Transcriber | None = None

    def submit(self, waves: list[np.ndarray]) -> PendingTranscripts:
        waves = [np.asarray(w, np.float32) for w in waves]
        if not waves or self.in_process:
            return PendingTranscripts(self, waves, None)
        try:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), initializer=_init, initargs=(self.fast,))
            return PendingTranscripts(self, waves, self._pool.submit(_transcribe_many, waves))
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

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> TranscriptWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
