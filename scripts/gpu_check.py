#!/usr/bin/env python3
"""Verifies shardstream's pinned-memory and device-copy paths on a machine with a CUDA GPU.

Needs only the shardstream wheel (abi3; it carries the ``shard-index`` command) and torch with
CUDA; no Rust toolchain, no network. It:

1. generates a small PLAIN Parquet dataset with ``shard-index generate`` and indexes it;
2. loads batches with ``pin_memory="always"`` and checks that the loader says its batch memory
   is pinned (``stats()["memory"]``), that ``tensor.is_pinned()`` is true for every tensor,
   and that the CUDA driver itself reports the buffer as page-locked host memory
   (``cuPointerGetAttribute(CU_POINTER_ATTRIBUTE_MEMORY_TYPE)`` is ``CU_MEMORYTYPE_HOST``);
   ``pin_memory="auto"`` must choose pinned memory too when a driver is there;
3. loads a whole epoch with ``device="cuda"`` (asynchronous copies on a side stream) while
   keeping every device batch alive and never synchronising, then compares each one, bytes and
   order, with the same epoch loaded into pageable CPU memory: a host buffer recycled before
   its copy finished would show up here as corrupted device data; the epoch's ids must be
   every sample exactly once;
3b. copies every pinned batch itself with ``non_blocking=True``, drops each host batch at
   once, with the copies queued behind ~2 s of GPU work, and compares the device batches with
   a CPU epoch the same way: the loader's copy guard must keep the host memory until the copies
   have read it;
4. measures host-to-device copy bandwidth from a batch tensor against a pageable tensor of the
   same size (median of repeated copies) and checks the bytes arrive intact;
5. prints one JSON object and exits non-zero if any check failed.

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
import traceback
from pathlib import Path
from typing import Any, Dict, List

CU_POINTER_ATTRIBUTE_MEMORY_TYPE = 2
CU_MEMORYTYPE_HOST = 1
# The text column arrives as one uint8 tensor plus offsets, so it travels to the device too.
COLUMNS = ["id", "tokens", "text"]
BINARY_MODE = {"text": "ragged"}


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


def check_pinning(
    manifest: Path, batch_size: int, repeats: int, report: Dict[str, Any], checks: Dict[str, bool]
) -> None:
    """Sections 2 and 4: pinned batches, and the copy bandwidth from one of them."""
    import shardstream
    import torch

    torch.zeros(1, device="cuda")  # a current context, which cuPointerGetAttribute needs
    loader = shardstream.Loader(
        str(manifest), batch_size=batch_size, columns=COLUMNS, binary_mode=BINARY_MODE, pin_memory="always"
    )
    batches = 0
    not_pinned: set = set()
    not_host_memory: set = set()
    sample = None
    for batch in loader:
        for name, t in batch.items():
            if not isinstance(t, torch.Tensor):
                continue
            if not t.is_pinned():
                not_pinned.add(name)
            if driver_memory_type(t.data_ptr()) != CU_MEMORYTYPE_HOST:
                not_host_memory.add(name)
        if sample is None:
            sample = batch["tokens"]
        batches += 1
        if batches >= 8:
            break
    stats = loader.stats()
    report["loader_memory"] = stats.get("memory")
    report["loader_memory_reason"] = stats.get("memory_reason")
    checks["stats_say_pinned"] = stats.get("memory") == "pinned"
    report["tensors_not_pinned"] = sorted(not_pinned)
    report["tensors_not_driver_host_memory"] = sorted(not_host_memory)
    checks["tensor_is_pinned"] = not not_pinned
    checks["driver_reports_host_pinned"] = not not_host_memory
    report["batches_checked"] = batches
    assert sample is not None
    pageable = sample.clone()  # ordinary malloc'd memory, same shape and dtype
    checks["pageable_copy_is_not_pinned"] = not pageable.is_pinned()
    report["copy_bytes"] = sample.numel() * sample.element_size()
    report["h2d_gbps_pinned_batch"] = round(copy_gbps(sample, repeats), 2)
    report["h2d_gbps_pageable"] = round(copy_gbps(pageable, repeats), 2)
    report["pinned_over_pageable"] = round(report["h2d_gbps_pinned_batch"] / report["h2d_gbps_pageable"], 2)
    loader.close()

    with shardstream.Loader(str(manifest), batch_size=batch_size, columns=["id"], pin_memory="auto") as auto:
        next(iter(auto))
        report["auto_memory"] = auto.stats().get("memory")
        checks["auto_chooses_pinned"] = report["auto_memory"] == "pinned"


def tensors(batch: Dict[str, Any]) -> List[Any]:
    """The batch's tensors (it also carries plain ints such as ``__epoch__``)."""
    import torch

    return [v for v in batch.values() if isinstance(v, torch.Tensor)]


def same_batch(got: Dict[str, Any], want: Dict[str, Any]) -> bool:
    import torch

    if set(got) != set(want):
        return False
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            if not torch.equal(got[key].cpu(), value):
                return False
        elif got[key] != value:
            return False
    return True


def check_device_epoch(
    manifest: Path,
    samples: int,
    batch_size: int,
    report: Dict[str, Any],
    checks: Dict[str, bool],
    device: str = "cuda",
) -> None:
    """Section 3: a device epoch, never synchronised, against a pageable CPU epoch.

    ``device="cpu"`` runs the same comparison without a GPU (to try the script itself)."""
    import shardstream
    import torch

    common: Dict[str, Any] = dict(batch_size=batch_size, columns=COLUMNS, binary_mode=BINARY_MODE, seed=7)
    pin = "always" if device == "cuda" else "never"
    # A small batch queue makes the loader recycle host buffers as early as it may.
    with shardstream.Loader(str(manifest), pin_memory=pin, device=device, batch_queue=2, **common) as gpu:
        on_device = list(gpu)  # every batch stays alive; no synchronisation in between
        gpu_stats = gpu.stats()
    if device == "cuda":
        torch.cuda.synchronize()
    with shardstream.Loader(str(manifest), pin_memory="never", **common) as cpu:
        reference = list(cpu)

    same_count = len(on_device) == len(reference)
    all_on_device = all(t.device.type == device for b in on_device for t in tensors(b))
    mismatches = sum(not same_batch(got, want) for got, want in zip(on_device, reference))
    ids = torch.cat([b["id"].cpu() for b in on_device])
    report["device_epoch"] = {
        "batches": len(on_device),
        "reference_batches": len(reference),
        "mismatched_batches": mismatches,
        "samples": int(ids.numel()),
        "memory": gpu_stats.get("memory"),
    }
    checks["device_batches_on_cuda"] = all_on_device
    checks["device_epoch_equals_cpu_epoch"] = same_count and mismatches == 0
    # A partial last batch is padded with repeats of the epoch's last samples.
    checks["device_epoch_exactly_once"] = bool(
        samples <= ids.numel() < samples + batch_size
        and torch.equal(torch.unique(ids), torch.arange(samples, dtype=ids.dtype))
    )


def check_own_copies(
    manifest: Path,
    samples: int,
    batch_size: int,
    report: Dict[str, Any],
    checks: Dict[str, bool],
) -> None:
    """Section 3b: the training loop's own ``non_blocking`` copies from pinned batches, each
    host batch dropped at once, with every copy queued behind ~2 s of GPU work. Without the
    loader's copy guard the pool would hand those buffers to later batches while the copies
    still wait to read them, and the device data would differ from a CPU epoch's."""
    import shardstream
    import torch

    common: Dict[str, Any] = dict(batch_size=batch_size, columns=COLUMNS, binary_mode=BINARY_MODE, seed=11)
    torch.cuda.synchronize()
    on_device = []
    with shardstream.Loader(str(manifest), pin_memory="always", batch_queue=2, **common) as loader:
        torch.cuda._sleep(4_000_000_000)  # GPU clock cycles: about 2 s at the H100's 1.98 GHz
        slept = torch.cuda.Event()
        slept.record()
        for batch in loader:
            copied = {k: v.to("cuda", non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            on_device.append(copied)
            del batch  # the loop keeps no host reference
        # Only meaningful if the copies really waited: the GPU must still be asleep here.
        checks["own_copies_raced_the_gpu"] = not slept.query()
        torch.cuda.synchronize()
    with shardstream.Loader(str(manifest), pin_memory="never", **common) as cpu:
        reference = list(cpu)
    mismatches = sum(not same_batch(got, want) for got, want in zip(on_device, reference))
    report["own_copies_epoch"] = {"batches": len(on_device), "mismatched_batches": mismatches}
    checks["own_copies_equal_cpu_epoch"] = len(on_device) == len(reference) and mismatches == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20480)
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

    sections = {
        "pinning": lambda: check_pinning(manifest, args.batch_size, args.repeats, report, checks),
        "device_epoch": lambda: check_device_epoch(manifest, args.samples, args.batch_size, report, checks),
        "own_copies": lambda: check_own_copies(manifest, args.samples, args.batch_size, report, checks),
    }
    for name, section in sections.items():
        try:
            section()
        except Exception:  # noqa: BLE001 — one failed section must not hide the others' results
            checks[f"{name}_ran"] = False
            report[f"{name}_error"] = traceback.format_exc()
    report["checks"] = checks
    report["ok"] = all(checks.values())
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
