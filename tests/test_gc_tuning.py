"""The operator's garbage-collector tuning: what changes the process for good in a child interpreter (freezing the
test session's heap would change every other test's collector behaviour); the pause around a fetch, which puts the
collector back as it found it, in this one."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import pytest

from inference_placement.controller.gc_tuning import GEN0_THRESHOLD, collector_paused

_CHILD = """
import gc, json
from inference_placement.controller.gc_tuning import tune_gc
before = gc.get_threshold()
thresholds = tune_gc()
frozen = gc.get_freeze_count()
# freezing keeps nothing alive: an object created before the freeze is freed when its last reference goes
import weakref
class Thing: pass
thing = Thing()
gc.collect(); gc.unfreeze(); gc.freeze()
ref = weakref.ref(thing)
del thing
print(json.dumps({"before": before, "after": thresholds, "frozen": frozen, "freed": ref() is None}))
"""


def test_tune_gc_freezes_start_up_and_raises_only_the_young_threshold() -> None:
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True, timeout=60)
    result = json.loads(out.stdout)
    assert result["after"] == [GEN0_THRESHOLD, result["before"][1], result["before"][2]]
    assert result["frozen"] > 1000  # the imported modules' objects
    assert result["freed"]


_TRIM_CHILD = """
import json
from inference_placement.controller.gc_tuning import release_free_memory

def rss_mb():
    with open("/proc/self/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) / 1024

# ~240 MB of 3 KB C-heap blocks (above pymalloc's 512 B), then all but every 64th freed: the pages in between are
# free but not at the heap's top, so plain free() keeps them resident
blocks = [bytes(3000) for _ in range(80_000)]
kept = blocks[::64]
del blocks
before = rss_mb()
released = release_free_memory()
print(json.dumps({"released": released, "before": before, "after": rss_mb(), "kept": len(kept)}))
"""


def test_release_free_memory_gives_free_heap_pages_back() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    out = subprocess.run([sys.executable, "-c", _TRIM_CHILD], capture_output=True, text=True, check=True, timeout=60)
    result = json.loads(out.stdout)
    assert result["released"], "the operator's image and CI run on glibc"
    assert result["before"] - result["after"] > 150, result  # ~235 MB of the ~240 were free pages


def test_the_collector_is_off_while_paused_and_back_after_even_on_an_error() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a fetch that failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled(), "a collector that was off stays off"
    finally:
        gc.enable()
