#!/usr/bin/env python3
"""Verifies shardstream's pinned-memory path on a machine with a CUDA GPU, in one short run.

Needs only the shardstream wheel (abi3; it carries the ``shard-index`` command) and torch with
CUDA; no Rust toolchain, no network. It:

1. generates a small PLAIN Parquet dataset with ``shard-index generate`` and indexes it;
2. loads batches with ``pin_memory="always"`` and checks that the loader says its batch memory
   is pinned (``stats()["memory"]``), that ``tensor.is_pinned()`` is true for every tensor,
   and that the CUDA driver itself reports the buffer as page-locked host memory
   (``cuPointerGetAttribute(CU_POINTER_ATTRIBUTE_MEMORY_TYPE)`` is ``CU_MEMORYTYPE_HOST``);
3. measures host-to-device copy bandwidth from a batch tensor against a pageable tensor of the
   same size (median of repeated copies) and checks the bytes arrive intact;
4. prints one JSON object and exits non-zero if any check failed.

Usage: ``python scripts/gpu_check.py [--samples N] [--out DIR]``
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

CU_POINTER_ATTRIBUTE_MEMORY_TYPE = 2
CU_MEMORYTYPE_HOST = 1


def driver_memory_type(address: int) -> int:
    """The CUDA driver's memory type for a host address (1 = page-locked host memory)."""
    cuda = ctypes.CDLL("libcuda.so.1")
    value = ctypes.c_uint(0)
    rc = cuda.cuPointerGetAttribute(
        ctypes.byref(value), CU_POINTER_ATTRIBUTE_MEMORY_TYPE, ctypes.c_uint64(address)
    )
    return int(value.value) if rc == 0 else -int(rc)


def copy_gbps(src: Any, repeats: int) -> float:
    import torch

    dst = torch.empty_like(src, device="cuda")
    dst.copy_(src, non_blocking=True)  # warm-up (context, allocator)
    torch.cuda.synchronize()
    times: List[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src, non_blocking=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if not torch.equal(dst.cpu(), src):
        raise AssertionError("the copy on the device differs from the host tensor")
    return src.numel() * src.element_size() / statistics.median(times) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="where to write the dataset")
    args = parser.parse_args()

    import torch

    import shardstream
    from shardstream._cli import main as shard_index

    report: Dict[str, Any] = {"shardstream": shardstream.__version__, "torch": torch.__version__}
    checks: Dict[str, bool] = {}
    if not torch.cuda.is_available():
        report["error"] = "torch sees no CUDA device"
        print(json.dumps(report, indent=2))
        return 2
    report["device"] = torch.cuda.get_device_name(0)

    root = args.out or Path(tempfile.mkdtemp(prefix="shardstream-gpu-"))
    data, manifest = root / "data", root / "manifest.parquet"
    gen = ["generate", str(data), "--samples", str(args.samples), "--shards", "4"]
    if shard_index([*gen, "--tokens", "2048", "--plain"]) != 0:
        raise SystemExit("shard-index generate failed")
    if shard_index(["build", str(data), "-o", str(manifest)]) != 0:
        raise SystemExit("shard-index build failed")

    loader = shardstream.Loader(
        str(manifest), batch_size=args.batch_size, columns=["id", "tokens"], pin_memory="always"
    )
    batches = 0
    pinned_all = True
    driver_host = True
    sample = None
    for batch in loader:
        for name in ("id", "tokens"):
            t = batch[name]
            pinned_all &= bool(t.is_pinned())
            driver_host &= driver_memory_type(t.data_ptr()) == CU_MEMORYTYPE_HOST
        if sample is None:
            sample = batch["tokens"]
        batches += 1
        if batches >= 8:
            break
    stats = loader.stats()
    report["loader_memory"] = stats.get("memory")
    report["loader_memory_reason"] = stats.get("memory_reason")
    checks["stats_say_pinned"] = stats.get("memory") == "pinned"
    checks["tensor_is_pinned"] = pinned_all
    checks["driver_reports_host_pinned"] = driver_host
    report["batches_checked"] = batches

    assert sample is not None
    pageable = sample.clone()  # ordinary malloc'd memory, same shape and dtype
    checks["pageable_copy_is_not_pinned"] = not pageable.is_pinned()
    report["copy_bytes"] = sample.numel() * sample.element_size()
    report["h2d_gbps_pinned_batch"] = round(copy_gbps(sample, args.repeats), 2)
    report["h2d_gbps_pageable"] = round(copy_gbps(pageable, args.repeats), 2)
    report["pinned_over_pageable"] = round(
        report["h2d_gbps_pinned_batch"] / report["h2d_gbps_pageable"], 2
    )
    loader.close()
    report["checks"] = checks
    report["ok"] = all(checks.values())
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
