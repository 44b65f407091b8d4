"""The operator's garbage-collector tuning, in a child interpreter (freezing the test session's heap would change
every other test's collector behaviour)."""

from __future__ import annotations

import json
import subprocess
import sys

from inference_placement.controller.gc_tuning import GEN0_THRESHOLD

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
