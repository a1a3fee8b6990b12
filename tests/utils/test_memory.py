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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_trim_heap_above_hands_freed_heap_back_only_when_over_the_limit():
    import platform

    from sonalign.utils.memory import resident_bytes, trim_heap_above

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert resident_bytes() > 0
    assert trim_heap_above(1 << 50) is False  # under the limit: nothing done
    blocks = [bytes(4000) for _ in range(50_000)]  # ~200 MB in small heap chunks
    pin = bytes(4000)  # allocated after them, so the freed run sits below live memory and is not auto-trimmed
    del blocks
    before = resident_bytes()
    assert trim_heap_above(0) is True
    assert resident_bytes() < before - 100 * 2**20
    del pin
