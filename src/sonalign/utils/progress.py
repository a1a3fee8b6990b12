"""Progress bars (tqdm) that stay quiet when asked or when output is not a terminal in CI logs."""

from __future__ import annotations

import os
from contextlib import contextmanager

from tqdm.auto import tqdm


@contextmanager
def progress(total: int, desc: str, *, disable: bool = False, unit: str = "file"):
    bar = tqdm(total=total, desc=desc, unit=unit, disable=disable or bool(os.environ.get("SONALIGN_NO_PROGRESS")), dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
