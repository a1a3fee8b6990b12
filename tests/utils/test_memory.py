import sys

import pytest

from sonalign.utils.memory import limit_heap_fragmentation


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_mmap_threshold_is_set_once_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert limit_heap_fragmentation() is True
    assert limit_heap_fragmentation() is True  # idempotent
