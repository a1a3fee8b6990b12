"""Subprocess side of test_build.py's kill test: index a folder with the fake-encoder run."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def main(folder: str, idx: str, run: str) -> None:
    sys.path.insert(0, str(TESTS))
    from fakes import register_fake_encoders

    register_fake_encoders()
    import sonalign.index.build as build

    build.COMMIT_EVERY_FILES = 1  # commit after every file so a kill lands between commits too
    import sonalign.index.indexer as indexer

    indexer.GROUP_FILES = 1  # one file per group: commits spread over the run, not in one burst per group
    build.build_index(folder, idx, model=run, transcripts=False, show_progress=False, workers=1)  # fakes live in this process


if __name__ == "__main__":
    main(*sys.argv[1:4])
