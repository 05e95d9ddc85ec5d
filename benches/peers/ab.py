"""Side-by-side runs of ``shardstream-bench read`` builds through the peers bench's S3 sources.

Compares builds of the loader (or one build under different environments) on the peers
bench's own data and servers — nginx in front of s3s-fs, optionally with added latency — with
the variants interleaved round by round, so the machine's drift (large here: the same binary
has read 674 and 1,049 MB/s twenty minutes apart) hits every variant alike. Reports each
variant's median MB/s and CPU-seconds per GB of the native loader (no Python in the loop).

    scripts/bench-peers --kinds blobs --loaders shardstream   # once: data, manifests, binaries
    cp target/release/shardstream-bench /tmp/ssb-old           # before a change; rebuild after
    .venv-peers/bin/python benches/peers/ab.py old=/tmp/ssb-old new=target/release/shardstream-bench \\
        --kind blobs --sources s3,s3-30ms --rounds 3

A variant is ``NAME=BINARY`` or ``NAME=BINARY;ENV=VALUE;...`` (an environment for that run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peers import servers  # noqa: E402
from peers.run import BUCKET, REPO  # noqa: E402

COLUMN = {"tokens": "tokens", "blobs": "blob"}


def parse_variant(text: str) -> Tuple[str, str, Dict[str, str]]:
    name, _, rest = text.partition("=")
    binary, *env = rest.split(";")
    if not name or not binary:
        raise argparse.ArgumentTypeError(f"expected NAME=BINARY[;ENV=VALUE...], got {text!r}")
    return name, binary, dict(kv.split("=", 1) for kv in env if kv)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", type=parse_variant, help="NAME=BINARY[;ENV=VALUE...]")
    ap.add_argument("--kind", default="blobs", choices=sorted(COLUMN))
    ap.add_argument("--sources", default="s3", help="s3 and/or s3-<N>ms, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work-dir", type=Path, default=REPO / "target" / "bench-peers")
    ap.add_argument("--bin-dir", type=Path, default=REPO / "target" / "release")
    a = ap.parse_args()
    sources = a.sources.split(",")
    manifests = sorted((a.work_dir / "manifests").glob(f"{a.kind}-*-s3.parquet"))
    if not manifests:
        ap.error(f"no {a.kind} S3 manifest under {a.work_dir}/manifests: run scripts/bench-peers --kinds {a.kind} first")
    manifest = manifests[-1]
    s3 = servers.start_s3_sources(a.bin_dir / "s3-test-server", a.work_dir / "s3root", BUCKET, sources)
    results: Dict[Tuple[str, str], List[dict]] = {}
    try:
        for r in range(a.rounds):
            for source_name in sources:
                source = s3["sources"][source_name]  # type: ignore[index]
                opts = servers.storage_options(str(source.endpoint), source.creds)
                for name, binary, env in a.variants:
                    cmd = [binary, "read", str(manifest), "--no-cache", "--binary-mode", "ragged", "--pin-memory", "never"]
                    cmd += ["--batch-size", "256", "--columns", f"id,{COLUMN[a.kind]}", "--json"]
                    for k, v in opts.items():
                        cmd += ["--storage-option", f"{k}={v}"]
                    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(servers.cleanup_env(), **env))
                    if p.returncode != 0:
                        print(f"round {r} {source_name} {name}: FAILED\n{p.stderr[-2000:]}", flush=True)
                        continue
                    out = p.stdout
                    res = json.loads(out[out.index("{") :])
                    results.setdefault((source_name, name), []).append(res)
                    print(
                        f"round {r} {source_name} {name}: {res['mb_per_s']:,.0f} MB/s, "
                        f"{res['cpu_s_per_gb']:.2f} CPU-s/GB (bare read {res['bare_read_mb_per_s']:,.0f}), "
                        f"first batch {1e3 * res['ttfb_s']:.0f} ms, "
                        f"{res['stats']['requests']} GETs, hedges {res['stats']['hedges_fired']} fired / {res['stats']['hedges_won']} won, "
                        f"bodies at once at the end {res['stats'].get('transfer_limit', '-')}",
                        flush=True,
                    )
    finally:
        s3["stop"]()  # type: ignore[operator]
    print(f"\n{a.kind}, {manifest.name}, {a.rounds} rounds, medians [all runs]:")
    for (source_name, name), runs in results.items():
        mb = sorted(round(x["mb_per_s"]) for x in runs)
        cpu = statistics.median(x["cpu_s_per_gb"] for x in runs)
        ttfb = statistics.median(x["ttfb_s"] for x in runs)
        print(f"  {source_name:8} {name:12} {statistics.median(mb):7,.0f} MB/s {mb}  {cpu:.2f} CPU-s/GB  first batch {1e3 * ttfb:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
