"""Side-by-side epochs of builds of the shardstream Python package, from local disk.

`ab.py` compares builds of the native loader; this compares what a Python training loop sees:
the binding, its thread hand-off and the tensor conversion included. Each variant is a
directory holding a `shardstream` package (a copy of the installed one with a rebuilt
`_native.abi3.so` and/or edited `.py` files), or `installed` for the peers venv's own. Rounds
interleave the variants, each round a fresh process per variant reading `--epochs` epochs, so
the machine's drift hits every variant alike; reports each variant's median MB/s and
CPU-seconds per GB over all its epochs. The loop is the peers bench's own shardstream
consumer (`loaders.shardstream_batches`: ids to NumPy, payload counted, padding dropped).

    cp -r .venv-peers/lib/python3.11/site-packages/shardstream /tmp/old/          # before a change
    cargo build --release -p shardstream-python --features pyo3/extension-module  # after it
    mkdir -p /tmp/new && cp -r python/shardstream /tmp/new/ \\
        && cp target/release/lib_native.so /tmp/new/shardstream/_native.abi3.so
    .venv-peers/bin/python benches/peers/ab_python.py old=/tmp/old new=/tmp/new --kind tokens

`--cold` evicts the dataset's files from the page cache before every process, so each
process's first epoch reads from disk and the later ones read what that first epoch left in
the cache; medians are then reported per epoch of a process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parents[2]
COLUMN = {"tokens": "tokens", "blobs": "blob"}


def child(manifest: str, column: str, epochs: int) -> None:
    """Reads `epochs` epochs with the peers bench's own consumer loop and prints one JSON line
    per epoch."""
    import gc

    import torch  # noqa: F401 - imported before the clock starts, as in the peers bench

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from peers.loaders import shardstream_batches

    gc.freeze()
    for epoch in range(epochs):
        job = {"column": column, "source": {"name": "local"}, "batch_size": 256, "seed": epoch, "manifest": manifest}
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = usage.ru_utime + usage.ru_stime
        t0 = time.perf_counter()
        payload = samples = 0
        for ids, nbytes in shardstream_batches(job):
            samples += len(ids)
            payload += nbytes
        wall = time.perf_counter() - t0
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime - cpu0
        stall = job["_stats"]["consumer_stall_s"]
        print(json.dumps({"mb_per_s": payload / wall / 1e6, "cpu_s_per_gb": cpu / (payload / 1e9), "stall_s": stall, "wall_s": wall, "samples": samples}), flush=True)


def parse_variant(text: str) -> Tuple[str, str]:
    name, _, where = text.partition("=")
    if not name or not where:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR or NAME=installed, got {text!r}")
    return name, where


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="*", type=parse_variant, help="NAME=DIR (holding shardstream/) or NAME=installed")
    ap.add_argument("--kind", default="tokens", choices=sorted(COLUMN))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per process")
    ap.add_argument("--manifest", type=Path, help="default: the peers bench's local manifest of --kind")
    ap.add_argument("--cold", action="store_true", help="evict the dataset's files from the page cache before every process")
    ap.add_argument("--child", nargs=3, metavar=("MANIFEST", "COLUMN", "EPOCHS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], a.child[1], int(a.child[2]))
        return 0
    if len(a.variants) < 1:
        ap.error("name at least one variant")
    manifest = a.manifest or next(iter(sorted((REPO / "target" / "bench-peers" / "manifests").glob(f"{a.kind}-*-local.parquet"))), None)
    if manifest is None:
        ap.error(f"no local {a.kind} manifest: run scripts/bench-peers --kinds {a.kind} --sources local first")
    data_files: List[str] = []
    if a.cold:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from peers import measure

        data_files = sorted(str(p) for p in (REPO / "target" / "bench-peers" / "s3root").glob(f"bench/{a.kind}-*/parquet/*.parquet"))
        if not data_files:
            ap.error(f"--cold: no Parquet files of {a.kind} under target/bench-peers/s3root")
    results: Dict[str, List[dict]] = {name: [] for name, _ in a.variants}
    for r in range(a.rounds):
        for name, where in a.variants:
            if data_files:
                os.sync()
                measure.evict_from_page_cache(data_files)
            env = dict(os.environ)
            if where != "installed":
                env["PYTHONPATH"] = where + os.pathsep + env.get("PYTHONPATH", "")
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(manifest), COLUMN[a.kind], str(a.epochs)],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            epochs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            results[name] += epochs
            print(f"round {r} {name}: " + ", ".join(f"{e['mb_per_s']:,.0f}" for e in epochs) + " MB/s", flush=True)
    print(f"\n{a.kind}, {manifest.name}, {a.rounds} rounds x {a.epochs} epochs{' from a cold page cache' if a.cold else ''}, medians:")
    for name, epochs in results.items():
        # Cold: each epoch of a process apart (the first from disk); warm: all together.
        groups = [(f" epoch {i}", epochs[i :: a.epochs]) for i in range(a.epochs)] if a.cold else [("", epochs)]
        for label, group in groups:
            print(
                f"  {name + label:20} {statistics.median(e['mb_per_s'] for e in group):>7,.0f} MB/s  "
                f"{statistics.median(e['cpu_s_per_gb'] for e in group):.3f} CPU-s/GB  "
                f"consumer stall {statistics.median(e['stall_s'] for e in group):.3f} s of {statistics.median(e['wall_s'] for e in group):.3f} s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
