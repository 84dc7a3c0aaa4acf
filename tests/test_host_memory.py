"""The C allocator's thresholds set by the backends (samrs_qgis/backends/host_memory.py), measured in fresh
processes: with them a batch's large arrays are made again without page faults."""
import json
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

HOST_MEMORY = REPO / "samrs_qgis" / "backends" / "host_memory.py"

# Twenty rounds of a batch's shape of work: three 40 MB arrays made, written and freed (glibc maps blocks above
# 32 MB anew every time by default, whatever it has seen).
ROUNDS = textwrap.dedent("""
    import importlib.util, json, resource, sys
    import numpy as np
    applied = None
    if sys.argv[2] == "keep":
        spec = importlib.util.spec_from_file_location("host_memory", sys.argv[1])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        applied = module.keep_freed_memory()
    def round_():
        arrays = [np.ones((10, 4096, 256), np.float32) for _ in range(3)]
        return sum(float(a[-1, -1, -1]) for a in arrays)
    round_()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        round_()
    print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, "applied": applied}))
""")


def _faults(mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", ROUNDS, str(HOST_MEMORY), mode], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_blocks_are_reused_without_page_faults():
    default, kept = _faults("default"), _faults("keep")
    assert kept["applied"] is True
    # glibc's default maps them anew each round (a fault per page, or per huge page where the kernel gives them)
    assert default["faults"] >= 20 * 3 * 20, default
    assert kept["faults"] < default["faults"] / 20, (kept, default)


def test_applied_once_per_process():
    from samrs.samrs_qgis.backends.host_memory import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() is first
