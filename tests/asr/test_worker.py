"""Transcription in a worker process gives the in-process transcripts, in order."""

import pytest

from sonalign.asr.worker import TranscriptWorker
from sonalign.audio.io import load_audio
from sonalign.index.embedders import default_model_dir

pytest.importorskip("pocketsphinx")


@pytest.fixture(scope="module")
def prompts():
    path = default_model_dir().parent / "sample" / "phone_prompts.flac"
    wave, _ = load_audio(path, 16000)
    # "Goodbye" (1.50-2.37 s), "You are currently the only person in this conference." (3.87-7.02 s), a silent slice
    return [wave[int(1.4 * 16000) : int(2.5 * 16000)], wave[int(3.8 * 16000) : int(7.1 * 16000)], wave[:1600] * 0]


def test_worker_process_equals_in_process(prompts):
    with TranscriptWorker(fast=True, in_process=True) as local:
        expected = local.submit(prompts).result()
    with TranscriptWorker(fast=True) as worker:
        first = worker.submit(prompts)
        second = worker.submit(prompts[:1])
        assert first.result() == expected
        assert second.result() == expected[:1]
        assert worker.submit([]).result() == []
    assert "person" in expected[1] or "conference" in expected[1], expected
    assert expected[2] == ""


def test_several_workers_keep_the_order(prompts):
    waves = [prompts[1], prompts[0], prompts[2], prompts[0], prompts[1]]
    with TranscriptWorker(fast=True, in_process=True) as local:
        expected = local.submit(waves).result()
    with TranscriptWorker(fast=True, workers=3) as worker:
        assert worker.submit(waves).result() == expected
