#!/usr/bin/env python3
"""How fast each loader feeds a GPU: one shuffled epoch of token rows, landed in device memory.

For a machine with a CUDA GPU (the device machine: Python with torch, pyarrow and psutil, no
Rust toolchain). Needs only the shardstream wheel. It generates a PLAIN Parquet token dataset
with ``shard-index generate`` (default 120,000 samples of 2,048 int32 tokens: 943 MB in 16
shards), indexes it, and then runs every variant in a fresh process, rounds interleaved:

- ``shardstream-cuda``: ``Loader(device="cuda")`` — pinned batch memory, asynchronous copies on
  a side stream;
- ``shardstream-pinned``: ``pin_memory="always"`` and the training loop's own
  ``.to("cuda", non_blocking=True)`` of ``id`` and ``tokens``, the host batch dropped at once
  (the loader holds its pinned memory until the GPU has passed the copy);
- ``shardstream-pageable``: ``pin_memory="never"`` and the same copy: the path without pinned
  memory;
- ``-nocopy``: the same loader, batches left on the host (the loader alone, for reference);
- ``torch-pyarrow-wN``: a torch ``DataLoader`` with ``pin_memory=True`` and N workers over a
  shuffled ``IterableDataset`` of the same Parquet files (files and row groups in random order,
  a shuffle buffer of one shard's samples, as in ``benches/peers``), then
  ``.to("cuda", non_blocking=True)``.

Every variant that copies sums each batch's tokens on the GPU (so the data is used there), and
every variant checks at the end that the epoch's ids are every sample exactly once. It reports per
variant the median samples/s and GB/s landed on the GPU, time to first batch and CPU seconds per
GB of the whole process tree during the epoch (workers included; imports and the CUDA context
are made before the clock starts), and, for shardstream, where the time went (waiting for the
native loader, in the device copy) and its buffer pool's allocations; prints one JSON object.

Usage: ``python benches/gpu_feed.py [--samples N] [--rounds R] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

# benches/peers (the torch + pyarrow baseline's dataset, process-tree counters) is a package here.
sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCH_SIZE = 256
VARIANTS = [
    "shardstream-cuda",
    "shardstream-pinned",
    "shardstream-pinned-nocopy",
    "shardstream-pageable",
    "shardstream-pageable-nocopy",
    "torch-pyarrow-w0",
    "torch-pyarrow-w4",
    "torch-pyarrow-w8",
]


# The shardstream variants whose token sums are taken on the device.
COPY_VARIANTS = ("shardstream-cuda", "shardstream-pinned", "shardstream-pageable")


class _Timed:
    """Wraps a callable or the native iterator and adds up the seconds spent in it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0

    def __iter__(self) -> "_Timed":
        self.inner.__iter__()
        return self

    def __next__(self) -> Any:
        start = time.perf_counter()
        try:
            return next(self.inner)
        finally:
            self.seconds += time.perf_counter() - start

    def __call__(self, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.inner(*args)
        finally:
            self.seconds += time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def shardstream_batches(manifest: str, variant: str, device: str, diag: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """The shardstream variants; ``diag`` gets the loader's stats and where the time went:
    waiting for the native loader, and (``device="cuda"``) in the loader's device copy."""
    import shardstream

    kwargs: Dict[str, Any] = dict(batch_size=BATCH_SIZE, columns=["id", "tokens"])
    if variant == "shardstream-cuda":
        kwargs.update(device=device)
    else:
        kwargs.update(pin_memory="never" if variant.startswith("shardstream-pageable") else "always")
    copy = not variant.endswith("-nocopy") and not variant.startswith("shardstream-cuda")
    with shardstream.Loader(manifest, **kwargs) as ld:
        # A diagnostic of this bench only: timers around the loader's internals.
        native = _Timed(ld._native)
        to_device = _Timed(ld._convert.to_device)
        setattr(ld, "_native", native)
        setattr(ld._convert, "to_device", to_device)
        for batch in ld:
            if copy:
                # Typical loop code: the host batch is dropped right away; the loader keeps its
                # pinned memory until the GPU has passed the copy (`_CopyGuard`).
                batch = {k: batch[k].to(device, non_blocking=True) for k in ("id", "tokens")}
            yield batch
        diag["native_wait_s"] = native.seconds
        diag["to_device_s"] = to_device.seconds
        diag["stats"] = {k: v for k, v in ld.stats().items() if k in ("memory", "pool", "time_to_first_batch_s")}


def torch_pyarrow_batches(data: str, workers: int, shuffle_buffer: int, device: str) -> Iterator[Dict[str, Any]]:
    from peers.loaders import parquet_shuffled
    from torch.utils.data import DataLoader

    files = sorted(str(p) for p in Path(data).rglob("*.parquet"))
    dataset = parquet_shuffled(files, {"name": "local"}, "tokens", "tokens", 0, shuffle_buffer)
    pin = device == "cuda"
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, num_workers=workers, pin_memory=pin)
    for batch in loader:
        yield {k: v.to(device, non_blocking=pin) for k, v in batch.items()}


def run_one(args: argparse.Namespace) -> int:
    """One variant, one epoch, in this (fresh) process; prints its JSON result."""
    import torch

    import shardstream  # noqa: F401  (imported before the clock starts, like torch)

    from peers.measure import TreeCounters

    device = args.device
    torch.zeros(1, device=device)  # the CUDA context exists before the clock starts
    variant = args.one
    diag: Dict[str, Any] = {}
    before = TreeCounters.snapshot()
    t0 = time.perf_counter()
    if variant.startswith("shardstream"):
        batches = shardstream_batches(str(args.manifest), variant, device, diag)
    else:
        workers = int(variant.rsplit("-w", 1)[1])
        batches = torch_pyarrow_batches(str(args.data), workers, args.samples // 16, device)
    ttfb = None
    ids: List[Any] = []
    total = torch.zeros((), dtype=torch.int64, device=device)
    payload = 0
    for batch in batches:
        if ttfb is None:
            ttfb = time.perf_counter() - t0
        tokens = batch["tokens"]
        if tokens.device.type != "cpu" or device == "cpu":
            total += tokens.sum(dtype=torch.int64)  # a host sum in a -nocopy run would cost more than the loader
        # A host id tensor is cloned: keeping the loader's pooled buffer would make it allocate anew.
        ids.append(batch["id"] if batch["id"].device.type != "cpu" else batch["id"].clone())
        payload += tokens.numel() * tokens.element_size()
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    del batches  # ends the DataLoader's workers, so that their CPU time is counted
    cpu = TreeCounters.delta(before, TreeCounters.snapshot())["cpu_s"]
    all_ids = torch.cat(ids)
    n = args.samples
    exactly_once = bool(
        n <= all_ids.numel() < n + BATCH_SIZE
        and torch.equal(torch.unique(all_ids).cpu(), torch.arange(n, dtype=all_ids.dtype))
    )
    out = {
        "variant": variant,
        "wall_s": wall,
        "cpu_s": cpu,
        "ttfb_s": ttfb,
        "samples": int(all_ids.numel()),
        "payload_bytes": payload,
        "exactly_once": exactly_once,
        "token_sum": int(total.item()),
        "diag": diag,
    }
    print(json.dumps(out))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=120_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=None, help="where to write the dataset")
    parser.add_argument("--device", default="cuda", help="'cpu' tries the harness on a machine without a GPU")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return run_one(args)

    from shardstream._cli import main as shard_index

    root = args.out or Path(tempfile.mkdtemp(prefix="shardstream-feed-"))
    data, manifest = root / "data", root / "manifest.parquet"
    gen = ["generate", str(data), "--samples", str(args.samples), "--shards", "16", "--tokens", "2048"]
    if shard_index([*gen, "--plain", "--row-group-rows", "4096"]) != 0:
        raise SystemExit("shard-index generate failed")
    if shard_index(["build", str(data), "-o", str(manifest)]) != 0:
        raise SystemExit("shard-index build failed")

    variants = args.variants.split(",")
    runs: Dict[str, List[Dict[str, Any]]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            cmd = [sys.executable, __file__, "--one", v, "--samples", str(args.samples), "--device", args.device]
            cmd += ["--data", str(data), "--manifest", str(manifest)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                runs[v].append({"error": proc.stderr[-2000:]})
                continue
            runs[v].append(json.loads(proc.stdout.strip().splitlines()[-1]))

    summary: Dict[str, Any] = {}
    for v, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            summary[v] = {"error": rs[-1]["error"] if rs else "not run"}
            continue
        gbs = [r["payload_bytes"] / r["wall_s"] / 1e9 for r in ok]
        summary[v] = {
            "gb_per_s": round(statistics.median(gbs), 3),
            "gb_per_s_all": [round(g, 3) for g in gbs],
            "samples_per_s": round(statistics.median(r["samples"] / r["wall_s"] for r in ok)),
            "ttfb_s": round(statistics.median(r["ttfb_s"] for r in ok), 3),
            "cpu_s_per_gb": round(statistics.median(r["cpu_s"] / (r["payload_bytes"] / 1e9) for r in ok), 2),
            "exactly_once": all(r["exactly_once"] for r in ok),
            "token_sums_agree": len({r["token_sum"] for r in ok}) == 1,  # across rounds
            "errors": len(rs) - len(ok),
            "diag_last_round": ok[-1]["diag"],
        }
    speeds = {v: s.get("gb_per_s") for v, s in summary.items()}
    report: Dict[str, Any] = {
        "samples": args.samples,
        "rounds": args.rounds,
        "device": args.device,
        "cpus": os.cpu_count(),
        "variants": summary,
    }
    base = speeds.get("shardstream-cuda")
    if base:
        report["shardstream_cuda_over"] = {v: round(base / g, 2) for v, g in speeds.items() if g and v != "shardstream-cuda"}
    # Every shardstream variant that lands tokens on the device sees the same epoch (the same
    # padded repeats too), so their token sums must agree: corrupted copies would not.
    seen = {r["token_sum"] for v, rs in runs.items() for r in rs if "error" not in r and v in COPY_VARIANTS}
    report["shardstream_token_sums_agree"] = len(seen) <= 1
    print(json.dumps(report, indent=2))
    passed = all(s.get("exactly_once") and s.get("token_sums_agree") for s in summary.values())
    return 0 if passed and report["shardstream_token_sums_agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
