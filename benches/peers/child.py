"""One measured run: ``child.py JOB.json RESULT.json`` — one loader, one source, one epoch.

Runs in a fresh process so every loader starts cold (no warm imports, threads or shared
memory of an earlier run). Imports torch (every loader hands out torch tensors) and the loader's package first, then
takes a CPU/IO snapshot of its process tree, builds the loader, reads one epoch, and writes
what it saw: wall time, time to first batch, samples, payload bytes, the CPU seconds and bytes
read of the tree during the epoch, and the exactly-once check over the ``id`` of every sample.
"""

from __future__ import annotations

import gc
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402,F401  (the same start-up for every loader)

from peers.loaders import IMPORTS, LOADERS  # noqa: E402
from peers.measure import TreeCounters  # noqa: E402


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text())
    # The loader's own modules are imported outside the measured epoch, like torch.
    for module in IMPORTS[job["loader"]]:
        importlib.import_module(module)
    # Start-up objects (torch alone leaves hundreds of thousands) are moved out of the cyclic
    # collector's reach, as long-running training scripts do; otherwise each full collection
    # walks them all, a cost of the harness's imports (8% of a shardstream run's CPU in a
    # profile), not of the loader under test. The same for every loader.
    gc.freeze()
    baseline_rss = psutil.Process().memory_info().rss
    out_path = Path(sys.argv[2])
    n = int(job["num_samples"])
    result: dict = {"ok": False}
    chunks = []
    samples = 0
    payload = 0
    ttfb = None
    progress = out_path.with_suffix(".progress")
    last_note = 0.0
    before = TreeCounters.snapshot()
    t0 = time.perf_counter()
    try:
        for ids, nbytes in LOADERS[job["loader"]](job):
            if ttfb is None:
                ttfb = time.perf_counter() - t0
            chunks.append(ids)
            samples += len(ids)
            payload += nbytes
            now = time.perf_counter()
            if now - last_note > 1.0:
                # If the benchmark kills us at its timeout, this is what it reports.
                progress.write_text(json.dumps({"samples": samples, "payload_bytes": payload, "wall_s": now - t0, "ttfb_s": ttfb}))
                last_note = now
        wall = time.perf_counter() - t0
        after = TreeCounters.snapshot()
        delta = TreeCounters.delta(before, after)
        all_ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
        out_of_range = int(((all_ids < 0) | (all_ids >= n)).sum())
        counts = np.bincount(all_ids[(all_ids >= 0) & (all_ids < n)], minlength=n)
        result.update(
            ok=True,
            wall_s=wall,
            ttfb_s=ttfb,
            samples=samples,
            payload_bytes=payload,
            cpu_s=delta["cpu_s"],
            rchar=delta["rchar"],
            read_bytes=delta["read_bytes"],
            missing=int((counts == 0).sum()),
            duplicated=int((counts > 1).sum()),
            extra_deliveries=int(np.maximum(counts - 1, 0).sum()),
            out_of_range=out_of_range,
            exactly_once=bool(out_of_range == 0 and (counts == 1).all()),
            loader_stats=job.get("_stats"),
            baseline_rss_mb=baseline_rss / 2**20,
        )
    except BaseException as e:  # noqa: BLE001 - reported, not raised
        result.update(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
        result["samples"] = samples
        result["wall_s"] = time.perf_counter() - t0
    out_path.write_text(json.dumps(result, default=str))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
