"""What a CPU can show of the decoder's GPU path: host synchronisations and operations per batch.

On a GPU every dispatched operation is (at least) one kernel launch and every ``int()``/``float()``/``.item()``
of a device value stalls the host until the device catches up. Counted here with a ``TorchDispatchMode`` for
the eager decoder, and with torch's profiler for the compiled one (a dispatch mode makes torch.compile fall
back to eager, so it cannot count inside a compiled region).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

HOST_SYNCS = ("aten._local_scalar_dense.default", "aten.item.default")
COPIES = ("aten.copy_.default", "aten._to_copy.default")


def dispatch_counter():
    from torch.utils._python_dispatch import TorchDispatchMode

    class DispatchCounter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[str(func)] += 1
            return func(*args, **(kwargs or {}))

    return DispatchCounter()


def eager_counts(backend, boxes: np.ndarray, regions: np.ndarray):
    """(operations, host syncs, copies) dispatched by one ``decode`` of these boxes."""
    with dispatch_counter() as counter:
        backend.decode(boxes, regions)
    ops = counter.ops
    return sum(ops.values()), sum(ops[n] for n in HOST_SYNCS), sum(ops[n] for n in COPIES)


def profiled_top_level_ops(backend, boxes: np.ndarray, regions: np.ndarray) -> int:
    """Operations at the top of torch's profiler tree for one ``decode`` (aten calls not inside another aten
    call, plus compiled-graph calls): what a host issues; a compiled region's own kernels are not seen."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        backend.decode(boxes, regions)
    count = 0
    for event in prof.events():
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if parent is None and (event.name.startswith("aten::") or event.name.startswith("Torch-Compiled Region")):
            count += 1
    return count


def figure(backend, boxes: np.ndarray, regions: np.ndarray, compiled=None, sizes=(4, 16, 64)):
    """The report line and whether the target holds: host synchronisations per batch the same for every
    batch size (none of them per box). ``boxes``/``regions`` (n, 4) frame space, n >= max(sizes)."""
    rows = {n: eager_counts(backend, boxes[:n], regions[:n]) for n in sizes}
    syncs = {rows[n][1] for n in sizes}
    copies = {rows[n][2] for n in sizes}
    ok = len(syncs) == 1 and len(copies) == 1 and max(syncs) == 0
    eager = ", ".join(f"batch {n}: {ops} ops ({ops / n:.1f}/box), {s} syncs, {c} copies"
                      for n, (ops, s, c) in rows.items())
    line = f"eager {eager}"
    if compiled is not None:
        size = compiled.preferred_batch
        top = profiled_top_level_ops(compiled, boxes[:size], regions[:size])
        plain = profiled_top_level_ops(backend, boxes[:size], regions[:size])
        line += (f"; profiler top-level calls at batch {size}: compiled {top} ({top / size:.1f}/box), eager {plain} "
                 f"({plain / size:.1f}/box)")
    return line, ok
