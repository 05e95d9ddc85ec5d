"""shardstream against the loaders people use today, side by side on one machine.

    scripts/bench-peers [--quick] [--size-gb 2] [--kinds tokens,blobs]
                        [--sources local,s3,s3-30ms] [--loaders ...] [--workers 0,1,2]

For each sample kind it writes one logical dataset in every loader's format (datasets.py),
then for each source and loader runs one epoch, shuffle on, in a fresh process per
(loader, source, num_workers) (child.py), measuring the process tree from outside
(measure.py), and writes ``benches/results/peers.json``, ``peers.png`` and a Markdown table
(report.py). Sources (servers.py): ``local`` (the files on disk, page cache warm), ``s3``
(nginx serving the files, s3s-fs behind it for LIST) and ``s3-<N>ms`` (s3s-fs with N ms
before every request, through an nginx proxy that counts the bytes).

Runs in the peers' virtual environment (``.venv-peers``, made by ``scripts/bench-peers``),
which also holds a release build of the shardstream wheel.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peers import datasets, measure, report, servers  # noqa: E402
from peers.datasets import DatasetSpec  # noqa: E402
from peers.loaders import FORMAT, LOADERS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUCKET = "bench"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small datasets (256 MB per kind) and a shorter timeout")
    ap.add_argument("--size-gb", type=float, default=None, help="payload per sample kind, GiB (default 2, --quick 0.25)")
    ap.add_argument("--kinds", default="tokens,blobs", help="tokens (2048 int32) and/or blobs (64 KiB)")
    ap.add_argument("--sources", default="local,s3,s3-30ms", help="local, s3, s3-<N>ms")
    ap.add_argument("--loaders", default=",".join(LOADERS), help=",".join(LOADERS))
    ap.add_argument("--workers", default="0,1,2", help="num_workers tried for every peer (shardstream uses its own threads)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--shard-mb", type=float, default=64, help="payload per shard / chunk, MiB")
    ap.add_argument("--row-group-mb", type=float, default=8, help="Parquet row group size, MiB")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--shardstream-runs", type=int, default=5, help="runs of shardstream per row, shown at the median (peers: best of --workers)"
    )
    ap.add_argument(
        "--nginx-workers", default="auto", help="worker_processes of the S3 sources' nginx (default auto: one per core)"
    )
    ap.add_argument(
        "--page-cache",
        choices=("read-back", "as-written"),
        default="read-back",
        help="read-back (default): evict every data file from the page cache and read it back once, so the cache "
        "holds it as a read from disk leaves it; as-written: leave the cache as it is (as the dataset writer left it, "
        "if nothing evicted the files since)",
    )
    ap.add_argument("--timeout", type=float, default=None, help="seconds per run (default 300, --quick 120)")
    ap.add_argument("--work-dir", type=Path, default=REPO / "target" / "bench-peers", help="datasets and manifests")
    ap.add_argument("--bin-dir", type=Path, default=REPO / "target" / "release", help="shard-index and s3-test-server")
    ap.add_argument("--out", type=Path, default=REPO / "benches" / "results", help="peers.json / peers.png / peers.md")
    ap.add_argument("--name", default="peers", help="result file stem")
    ap.add_argument("--from-json", type=Path, help="only redo the table and chart of an earlier result")
    a = ap.parse_args(argv)
    if a.size_gb is None:
        a.size_gb = 0.25 if a.quick else 2.0
    if a.timeout is None:
        a.timeout = 120.0 if a.quick else 300.0
    for field in ("kinds", "sources", "loaders"):
        setattr(a, field, [x.strip() for x in getattr(a, field).split(",") if x.strip()])
    a.workers = [int(x) for x in a.workers.split(",") if x.strip()]
    for name in a.loaders:
        if name not in LOADERS:
            ap.error(f"unknown loader {name!r}: choose from {', '.join(LOADERS)}")
    return a


def shard_index(bin_dir: Path, *args: str) -> Dict[str, Any]:
    out = subprocess.run([str(bin_dir / "shard-index"), *args, "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def machine() -> Dict[str, Any]:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "machine_short": f"{os.cpu_count()} cores, {mem:.0f} GiB",
    }


def versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("shardstream", "mosaicml-streaming", "litdata", "webdataset", "torch", "pyarrow", "numpy", "obstore"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    try:
        out["nginx"] = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    except OSError:
        pass
    return out


def run_child(job: Dict[str, Any], source: servers.Source, timeout: float) -> Dict[str, Any]:
    """Runs one loader process and measures it; returns the raw child result plus memory,
    server traffic and a timeout note."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-run-"))
    job_path, result_path = tmp / "job.json", tmp / "result.json"
    job_path.write_text(json.dumps(job))
    env = servers.cleanup_env()
    env.update(source.env())
    env["PYTHONWARNINGS"] = "ignore"
    offset = source.nginx.log_offset() if source.nginx else 0
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("child.py")), str(job_path), str(result_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    sampler = measure.TreeSampler(proc.pid)
    timed_out = False
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    mem = sampler.stop()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftover helpers (curl pipes, download threads' children)
    except ProcessLookupError:
        pass
    res: Dict[str, Any] = json.loads(result_path.read_text()) if result_path.exists() else {"ok": False}
    if timed_out:
        res["timed_out"] = True
        res["error"] = f"timeout after {timeout:.0f} s"
        progress = result_path.with_suffix(".progress")
        if progress.exists():
            p = json.loads(progress.read_text())
            res["partial"] = p
    if not res.get("ok") and "error" not in res:
        res["error"] = f"exit status {proc.returncode}"
    res["output_tail"] = (output or "")[-3000:]
    res.update(mem)
    if source.nginx:
        res["server_traffic"] = source.nginx.traffic_since(offset)
    shutil.rmtree(tmp, ignore_errors=True)
    return res


def median_run(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The run of median samples/s (a failed run counts as 0), with every run's MB/s and CPU
    per GB under ``runs`` when there were several."""
    ranked = sorted(runs, key=lambda r: r.get("samples_per_s") or 0.0)
    row = dict(ranked[(len(ranked) - 1) // 2])
    if len(runs) > 1:
        row["runs"] = [{"mb_per_s": r.get("mb_per_s"), "cpu_s_per_gb": r.get("cpu_s_per_gb"), "ok": r.get("ok")} for r in runs]
    return row


def make_row(job: Dict[str, Any], res: Dict[str, Any], source: servers.Source, spec: DatasetSpec) -> Dict[str, Any]:
    row: Dict[str, Any] = {
        "kind": spec.kind,
        "source": source.name,
        "server": source.server,
        "loader": job["loader"],
        "workers": job["workers"],
        "format": FORMAT[job["loader"]],
        "ok": bool(res.get("ok")),
        "timed_out": bool(res.get("timed_out")),
        "error": res.get("error"),
        "exactly_once": res.get("exactly_once"),
        "missing": res.get("missing"),
        "duplicated": res.get("duplicated"),
        "extra_deliveries": res.get("extra_deliveries"),
        "samples": res.get("samples"),
        "wall_s": res.get("wall_s"),
        "ttfb_s": res.get("ttfb_s"),
        "peak_rss_mb": res.get("peak_rss_mb"),
        "peak_anon_mb": res.get("peak_anon_mb"),
        "baseline_rss_mb": res.get("baseline_rss_mb"),
        "max_processes": res.get("max_processes"),
        "cpu_s": res.get("cpu_s"),
        "server_traffic": res.get("server_traffic"),
        "loader_stats": res.get("loader_stats"),
    }
    if res.get("ok") and res.get("wall_s"):
        wall = res["wall_s"]
        payload = res["payload_bytes"]
        row["payload_bytes"] = payload
        row["samples_per_s"] = res["samples"] / wall
        row["mb_per_s"] = payload / wall / 1e6
        row["cpu_s_per_gb"] = res["cpu_s"] / (payload / 1e9) if payload else None
        if source.nginx:
            row["read_amp"] = res["server_traffic"]["bytes"] / payload
            row["read_amp_from"] = "nginx log"
        else:
            stats = res.get("loader_stats") or {}
            amp = _stats_amp(stats)
            if job["loader"] == "shardstream" and amp is not None:
                row["read_amp"] = amp
                row["read_amp_from"] = "loader stats"
            elif res["rchar"] >= 0.9 * payload:
                row["read_amp"] = res["rchar"] / payload
                row["read_amp_from"] = "rchar"
            else:
                # Fewer bytes came through read() than were delivered: the loader memory-maps
                # its files, which no per-process counter sees (page cache hits are not I/O).
                row["read_amp"] = None
                row["read_amp_from"] = "mmap: unmeasured"
        row["rchar_per_payload"] = res.get("rchar", 0) / payload if payload else None
    elif res.get("partial"):
        p = res["partial"]
        row["partial_samples_per_s"] = p["samples"] / p["wall_s"] if p.get("wall_s") else None
        row["partial_samples"] = p["samples"]
        row["ttfb_s"] = p.get("ttfb_s")
    if not res.get("ok"):
        row["output_tail"] = res.get("output_tail")
        row["traceback"] = res.get("traceback")
    return row


def _public_args(args: List[str]) -> List[str]:
    """The command line as a user types it (without what scripts/bench-peers adds)."""
    out, skip = [], False
    for x in args:
        if skip:
            skip = False
        elif x == "--bin-dir":
            skip = True
        elif not x.startswith("--bin-dir="):
            out.append(x)
    return out


def _stats_amp(stats: Dict[str, Any]) -> Optional[float]:
    for key in ("read_amplification", "read_amp"):
        v = stats.get(key)
        if isinstance(v, (int, float)):
            return float(v)
    return None


def redo_report(path: Path, out: Path, name: str) -> int:
    data = json.loads(path.read_text())
    rows, meta = data["runs"], data["meta"]
    report.add_ratios(rows)
    (out / f"{name}.md").write_text(report.markdown(rows, meta))
    report.chart(out / f"{name}.png", rows, meta)
    print(report.markdown(rows, meta))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    a = parse_args(argv)
    if a.from_json:
        return redo_report(a.from_json, a.out, a.name)
    started = time.perf_counter()
    a.out.mkdir(parents=True, exist_ok=True)
    root = a.work_dir / "s3root"
    data_root = root / BUCKET
    manifests = a.work_dir / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    cache_base = Path("/dev/shm") if Path("/dev/shm").is_dir() else a.work_dir
    specs = [
        DatasetSpec(
            kind=k,
            total_bytes=int(a.size_gb * 2**30),
            shard_bytes=int(a.shard_mb * 2**20),
            row_group_bytes=int(a.row_group_mb * 2**20),
            seed=a.seed,
        )
        for k in a.kinds
    ]
    formats = sorted({FORMAT[name] for name in a.loaders}, key=datasets.FORMATS.index)
    log(f"datasets under {data_root}: {', '.join(s.name for s in specs)}; formats {', '.join(formats)}")
    for spec in specs:
        for fmt in formats:
            datasets.ensure(data_root, spec, fmt, log=log)
        if "parquet" in formats:
            shard_index(a.bin_dir, "build", str(datasets.format_dir(data_root, spec, "parquet")), "-o", str(manifests / f"{spec.name}-local.parquet"))

    meta: Dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "scripts/bench-peers " + " ".join(_public_args(argv if argv is not None else sys.argv[1:])),
        "batch_size": a.batch_size,
        "seed": a.seed,
        "workers_tried": a.workers,
        "shardstream_runs": a.shardstream_runs,
        "timeout_s": a.timeout,
        "datasets": [dict(spec.__dict__, name=spec.name, num_samples=spec.num_samples, num_shards=spec.num_shards) for spec in specs],
        "versions": versions(),
        **machine(),
    }
    rows: List[Dict[str, Any]] = []
    # The set-up may just have written release builds, a wheel or datasets: a small rebuild of
    # the extension alone left 200 MB of dirty pages here, which the kernel writes back up to
    # 30 s later, during the first rows, unless flushed now.
    os.sync()
    meta["page_cache"] = {"mode": a.page_cache}
    if a.page_cache == "read-back":
        # What the warm cache holds depends on how the files got there: files this bench writes
        # sit in the writer's 4 KiB folios, while a dataset a job reads from disk arrives through
        # readahead, which on this kernel fills large folios (up to 2 MiB), and every reader,
        # the bare read included, pays per folio. Evicting and reading every file back gives all
        # of them the cache a read from disk leaves, whichever run wrote the files.
        files = [
            str(p) for spec in specs for fmt in formats for p in datasets.data_files(datasets.format_dir(data_root, spec, fmt))
        ]
        before = measure.file_huge_pages_mib()
        evicted = measure.evict_from_page_cache(files)
        back = measure.bare_read_local(files)
        meta["page_cache"].update(
            files=len(files),
            evicted_mb=evicted / 1e6,
            read_back_mb_per_s=back["mb_per_s"],
            file_huge_pages_mib_before=before,
            file_huge_pages_mib_after=measure.file_huge_pages_mib(),
        )
        log(
            f"page cache: {len(files)} files evicted and read back at {back['mb_per_s']:,.0f} MB/s; "
            f"2 MiB folios of files {before} -> {meta['page_cache']['file_huge_pages_mib_after']} MiB"
        )
    s3_names = [s for s in a.sources if s != "local"]
    s3 = (
        servers.start_s3_sources(a.bin_dir / "s3-test-server", root, BUCKET, s3_names, a.nginx_workers)
        if s3_names
        else None
    )
    try:
        sources: Dict[str, servers.Source] = {"local": servers.local_source()}
        if s3:
            sources.update(s3["sources"])  # type: ignore[arg-type]
        meta["sources"] = {n: sources[n].describe() for n in a.sources}
        for spec in specs:
            s3_manifest = manifests / f"{spec.name}-s3.parquet"
            if s3:
                opts = servers.storage_options(str(s3["index_endpoint"]), s3["creds"])  # type: ignore[arg-type]
                args = ["build", f"s3://{BUCKET}/{spec.name}/parquet/", "-o", str(s3_manifest)]
                for k, v in opts.items():
                    args += ["--storage-option", f"{k}={v}"]
                shard_index(a.bin_dir, *args)
            paths = {}
            for fmt in formats:
                d = datasets.format_dir(data_root, spec, fmt)
                paths[fmt] = {
                    "dir": str(d),
                    "prefix": f"{spec.name}/{fmt}/",
                    "files": [str(p.relative_to(d)) for p in datasets.data_files(d)],
                }
            parquet_files = [str(Path(paths["parquet"]["dir"]) / f) for f in paths.get("parquet", {}).get("files", [])] if "parquet" in paths else []
            for source_name in a.sources:
                source = sources[source_name]
                # The bare-read limit of this source, on the Parquet files (read whole, in order,
                # locally; concurrent 8 MiB range GETs over S3). Local: a first pass warms the page cache.
                bare = None
                # Local: every pass over the Parquet files (one here, one before each shardstream
                # run); the limit is their median. One 0.3 s pass has read anywhere from 5.2 to
                # 6.9 GB/s on this machine, so a single pass moved the ratio more than any change.
                bare_passes: List[float] = []
                # Local, beside each bare pass before a shardstream run: the shuffled-copy
                # ceiling of the same files (see measure.shuffled_copy_local).
                gather_passes: List[float] = []

                def shuffled_copy() -> float:
                    return measure.shuffled_copy_local(a.bin_dir / "shardstream-bench", parquet_files, spec.sample_bytes, a.batch_size)["mb_per_s"]

                first_row = len(rows)
                if parquet_files:
                    if source.is_s3:
                        keys = [f"{paths['parquet']['prefix']}{f}" for f in paths["parquet"]["files"]]
                        # The limit is the best of a few request shapes: one fixed shape
                        # (16 x 8 MiB) understated what this server can deliver by ~1.7x.
                        bare = max(
                            (
                                measure.bare_read_s3(str(source.endpoint), BUCKET, keys, source.creds, c, b)
                                for c, b in ((16, 8 << 20), (64, 8 << 20), (64, 2 << 20))
                            ),
                            key=lambda r: r["mb_per_s"],
                        )
                    else:
                        measure.bare_read_local(parquet_files)
                        bare = measure.bare_read_local(parquet_files)
                        bare_passes.append(bare["mb_per_s"])
                    log(f"{spec.name} {source_name}: bare read {bare['mb_per_s']:,.0f} MB/s ({source.server})")
                for loader in a.loaders:
                    for workers in [None] if loader == "shardstream" else a.workers:
                        fmt = FORMAT[loader]
                        if not source.is_s3:
                            # Every loader starts with its files in the page cache. shardstream's
                            # files are the Parquet ones: its pass before each run is a bare-read
                            # sample taken side by side with that run.
                            warm = measure.bare_read_local([str(Path(paths[fmt]["dir"]) / f) for f in paths[fmt]["files"]])
                            if loader == "shardstream":
                                bare_passes.append(warm["mb_per_s"])
                                gather_passes.append(shuffled_copy())
                        cache_dir = Path(tempfile.mkdtemp(prefix="bench-peers-cache-", dir=cache_base))
                        job = {
                            "loader": loader,
                            "kind": spec.kind,
                            "column": spec.column,
                            "batch_size": a.batch_size,
                            "workers": workers if workers is not None else 0,
                            "seed": a.seed,
                            "shuffle_buffer": spec.samples_per_shard,
                            "num_samples": spec.num_samples,
                            "manifest": str(s3_manifest if source.is_s3 else manifests / f"{spec.name}-local.parquet"),
                            "paths": paths,
                            "cache_dir": str(cache_dir),
                            "source": {
                                "name": source.name,
                                "endpoint": source.endpoint,
                                "bucket": BUCKET,
                                "creds": source.creds,
                                "storage_options": servers.storage_options(source.endpoint, source.creds) if source.is_s3 else None,
                            },
                        }
                        # Peers are shown at their best of several `num_workers`; shardstream,
                        # with one configuration, runs `--shardstream-runs` times and is shown at
                        # its median run, all runs kept in the row.
                        runs = []
                        for i in range(a.shardstream_runs if loader == "shardstream" else 1):
                            if loader == "shardstream" and not source.is_s3 and i > 0:
                                bare_passes.append(measure.bare_read_local(parquet_files)["mb_per_s"])
                                gather_passes.append(shuffled_copy())
                            res = run_child(job, source, a.timeout)
                            runs.append(make_row(job, res, source, spec))
                        shutil.rmtree(cache_dir, ignore_errors=True)
                        row = median_run(runs)
                        row["workers"] = workers
                        rows.append(row)
                        if bare_passes:
                            bare["mb_per_s"] = statistics.median(bare_passes)
                        for r in rows[first_row:]:
                            r["bare_mb_per_s"] = bare["mb_per_s"] if bare else None
                            r["bare_passes_mb_per_s"] = list(bare_passes) or None
                            r["shuffled_copy_mb_per_s"] = statistics.median(gather_passes) if gather_passes else None
                            r["shuffled_copy_passes_mb_per_s"] = list(gather_passes) or None
                        if row.get("samples_per_s"):
                            log(
                                f"{spec.name} {source_name} {loader} w={workers}: {row['samples_per_s']:,.0f} samples/s, "
                                f"{row['mb_per_s']:,.0f} MB/s, ttfb {row['ttfb_s']:.2f} s, {row['cpu_s_per_gb']:.2f} CPU-s/GB, "
                                f"RSS {row['peak_rss_mb']:,.0f} MB, amp {row['read_amp'] if row['read_amp'] is None else round(row['read_amp'], 2)}, "
                                f"exactly once: {row['exactly_once']}"
                            )
                        else:
                            log(f"{spec.name} {source_name} {loader} w={workers}: FAILED {row['error']}\n{(res.get('traceback') or res.get('output_tail') or '')[-1500:]}")
                        # Keep what we have on disk, in case a later run hangs the machine.
                        report.add_ratios(rows)
                        report.write_json(a.out / f"{a.name}.json", rows, meta)
    finally:
        if s3:
            s3["stop"]()  # type: ignore[operator]
    meta["total_minutes"] = round((time.perf_counter() - started) / 60, 1)
    report.add_ratios(rows)
    report.write_json(a.out / f"{a.name}.json", rows, meta)
    table = report.markdown(rows, meta)
    (a.out / f"{a.name}.md").write_text(table)
    try:
        report.chart(a.out / f"{a.name}.png", rows, meta)
    except Exception as e:  # noqa: BLE001 - the table and JSON still stand
        log(f"chart failed: {e}")
    print()
    print(table)
    for g in report.goals(rows):
        print(
            f"goal {g['kind']} {g['source']}: {g['speedup_vs_best_peer']:.2f}x best peer ({g['best_peer']})"
            + (f", {g['vs_bare']:.2f} of bare read" if g.get("vs_bare") else "")
            + f", CPU-s/GB {g['cpu_s_per_gb'] or 0:.2f} vs leanest peer {g['leanest_peer_cpu_s_per_gb'] or 0:.2f} ({g['leanest_peer']})"
        )
    log(f"done in {meta['total_minutes']} min: {a.out / (a.name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
