"""Results: the JSON file, the Markdown table and the PNG chart.

Every run is one row. For each (kind, source) a peer is represented by its best row over the
``num_workers`` tried (highest samples/s among the runs that delivered every sample exactly
once, else its best run, flagged); shardstream has one row. Ratios are to shardstream's
samples/s in the same (kind, source) and to the bare-read limit measured in the same run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .loaders import LABEL

Row = Dict[str, Any]


def best_rows(rows: List[Row]) -> Dict[Tuple[str, str], List[Row]]:
    """``{(kind, source): [best row per loader, in run order]}``."""
    groups: Dict[Tuple[str, str], Dict[str, List[Row]]] = {}
    for r in rows:
        groups.setdefault((r["kind"], r["source"]), {}).setdefault(r["loader"], []).append(r)
    out: Dict[Tuple[str, str], List[Row]] = {}
    for key, by_loader in groups.items():
        chosen = []
        for loader, runs in by_loader.items():
            ok = [r for r in runs if r.get("samples_per_s")]
            once = [r for r in ok if r.get("exactly_once")]
            pool = once or ok or runs
            chosen.append(max(pool, key=lambda r: r.get("samples_per_s") or 0.0))
        out[key] = chosen
    return out


def add_ratios(rows: List[Row]) -> None:
    """Sets ``vs_shardstream`` on every row and ``vs_bare`` (MB/s over the bare read)."""
    ss: Dict[Tuple[str, str], float] = {}
    for r in rows:
        if r["loader"] == "shardstream" and r.get("samples_per_s"):
            ss[(r["kind"], r["source"])] = r["samples_per_s"]
    for r in rows:
        base = ss.get((r["kind"], r["source"]))
        sps = r.get("samples_per_s")
        r["vs_shardstream"] = sps / base if sps and base else None
        bare = r.get("bare_mb_per_s")
        r["vs_bare"] = r["mb_per_s"] / bare if r.get("mb_per_s") and bare else None
        ceiling = r.get("shuffled_copy_mb_per_s")
        r["vs_shuffled_copy"] = r["mb_per_s"] / ceiling if r.get("mb_per_s") and ceiling else None


def goals(rows: List[Row]) -> List[Dict[str, Any]]:
    """The issue's targets per (kind, source): shardstream ≥ 2× the best peer's samples/s,
    ≥ 0.9 of the bare read from local disk, less CPU per GB than any peer."""
    out = []
    for (kind, source), best in best_rows(rows).items():
        ss = next((r for r in best if r["loader"] == "shardstream"), None)
        peers = [r for r in best if r["loader"] != "shardstream" and r.get("samples_per_s")]
        if ss is None or not ss.get("samples_per_s") or not peers:
            continue
        top = max(peers, key=lambda r: r["samples_per_s"])
        leanest = min((r for r in peers if r.get("cpu_s_per_gb")), key=lambda r: r["cpu_s_per_gb"], default=None)
        g = {
            "kind": kind,
            "source": source,
            "best_peer": top["loader"],
            "speedup_vs_best_peer": ss["samples_per_s"] / top["samples_per_s"],
            "meets_2x": ss["samples_per_s"] >= 2 * top["samples_per_s"],
            "vs_bare": ss.get("vs_bare"),
            "vs_shuffled_copy": ss.get("vs_shuffled_copy"),
            "cpu_s_per_gb": ss.get("cpu_s_per_gb"),
            "leanest_peer": leanest["loader"] if leanest else None,
            "leanest_peer_cpu_s_per_gb": leanest["cpu_s_per_gb"] if leanest else None,
            "least_cpu": bool(leanest and ss.get("cpu_s_per_gb") is not None and ss["cpu_s_per_gb"] < leanest["cpu_s_per_gb"]),
        }
        if source == "local":
            g["meets_0_9_bare"] = bool(ss.get("vs_bare") and ss["vs_bare"] >= 0.9)
        out.append(g)
    return out


def _f(v: Optional[float], fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def markdown(rows: List[Row], meta: Dict[str, Any]) -> str:
    lines = [
        "| data | source | loader | workers | samples/s | MB/s | ×shardstream | ×bare read | first batch (s) | CPU-s/GB | peak RSS (MB) | read amp. | exactly once |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for (kind, source), best in best_rows(rows).items():
        for r in best:
            if r.get("samples_per_s") is None:
                sps = "failed" if not r.get("timed_out") else "timeout"
                if r.get("timed_out") and r.get("partial_samples_per_s"):
                    sps = f"timeout (≥{r['partial_samples_per_s']:,.0f})"
            else:
                sps = f"{r['samples_per_s']:,.0f}"
            amp = _f(r.get("read_amp"), ".2f")
            if r.get("read_amp_from") == "mmap: unmeasured":
                amp = "mmapᵐ"
            if r.get("read_amp") is not None and r.get("read_amp_from"):
                amp += {"nginx log": "", "loader stats": "ᵃ", "rchar": "ʳ"}.get(r["read_amp_from"], "")
            once = "yes" if r.get("exactly_once") else ("no" if r.get("ok") else "—")
            if r.get("ok") and not r.get("exactly_once"):
                once = f"no ({r.get('missing', 0)} missing, {r.get('extra_deliveries', 0)} extra)"
            workers = "native" if r["loader"] == "shardstream" else str(r["workers"])
            lines.append(
                f"| {kind} | {source} | {LABEL.get(r['loader'], r['loader'])} | {workers} | {sps} | "
                f"{_f(r.get('mb_per_s'), ',.0f')} | {_f(r.get('vs_shardstream'), '.2f')} | {_f(r.get('vs_bare'), '.2f')} | "
                f"{_f(r.get('ttfb_s'), '.2f')} | {_f(r.get('cpu_s_per_gb'), '.2f')} | {_f(r.get('peak_rss_mb'), ',.0f')} | "
                f"{amp} | {once} |"
            )
    bare = {}
    passes = {}
    for r in rows:
        if r.get("bare_mb_per_s"):
            bare[(r["kind"], r["source"])] = r["bare_mb_per_s"]
        if r.get("bare_passes_mb_per_s"):
            passes[(r["kind"], r["source"])] = r["bare_passes_mb_per_s"]
    notes = [
        "",
        "Bare-read limit (MB/s, same run): "
        + ", ".join(f"{k} {s}: {v:,.0f}" for (k, s), v in bare.items())
        + (
            "; from local disk the median of the passes over the Parquet files, one before each shardstream run ("
            + "; ".join(f"{k} {s}: " + " / ".join(f"{x:,.0f}" for x in v) for (k, s), v in passes.items())
            + "); over S3 the best of three request shapes"
            if passes
            else ""
        )
        + ". Read amplification: bytes the server sent ÷ payload bytes (nginx access log); ᵃ from the "
        "loader's own stats (local files are memory-mapped, which no syscall counter sees); ʳ bytes "
        "read through read() by the process tree ÷ payload bytes; ᵐ the loader memory-maps local files "
        "and no per-process counter sees those reads.",
    ]
    ceilings = {
        (r["kind"], r["source"]): r
        for r in rows
        if r["loader"] == "shardstream" and r.get("shuffled_copy_mb_per_s") and r.get("shuffled_copy_passes_mb_per_s")
    }
    if ceilings:
        notes.append(
            "Shuffled-copy ceiling (MB/s, same run, beside each bare pass before a shardstream run): every sample's bytes "
            "copied once into batches in the planner's shuffled order by one thread per core, nothing else a loader does "
            "(`shardstream-bench gather`); shardstream's share of it: "
            + "; ".join(
                f"{k} {s}: {r['shuffled_copy_mb_per_s']:,.0f} (" + " / ".join(f"{x:,.0f}" for x in r["shuffled_copy_passes_mb_per_s"]) + f"), "
                f"shardstream {_f(r.get('vs_shuffled_copy'), '.2f')}"
                for (k, s), r in ceilings.items()
            )
            + "."
        )
    pc = meta.get("page_cache") or {}
    if pc.get("mode") == "read-back":
        notes.append(
            f"Page cache: before the runs, the {pc.get('files')} data files ({pc.get('evicted_mb', 0) / 1e3:,.1f} GB) were "
            f"evicted and read back at {pc.get('read_back_mb_per_s', 0):,.0f} MB/s, as a read from disk leaves them "
            f"(files in 2 MiB folios: {pc.get('file_huge_pages_mib_before')} → {pc.get('file_huge_pages_mib_after')} MiB)."
        )
    elif pc.get("mode") == "as-written":
        notes.append("Page cache: the data files as they were cached before the run (`--page-cache as-written`).")
    repeated = [r for r in rows if r["loader"] == "shardstream" and r.get("runs")]
    if repeated:
        notes.append(
            f"shardstream: the median of {len(repeated[0]['runs'])} runs per row (peers: the best of their "
            "`num_workers`); MB/s of every run: "
            + "; ".join(
                f"{r['kind']} {r['source']}: " + " / ".join(_f(x.get("mb_per_s"), ",.0f") for x in r["runs"]) for r in repeated
            )
            + "."
        )
    return "\n".join(lines + notes) + "\n"


def write_json(path: Path, rows: List[Row], meta: Dict[str, Any]) -> None:
    path.write_text(json.dumps({"meta": meta, "goals": goals(rows), "runs": rows}, indent=1, default=str) + "\n")


def chart(path: Path, rows: List[Row], meta: Dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = best_rows(rows)
    kinds = [k for k in ("tokens", "blobs") if any(key[0] == k for key in best)]
    sources = []
    for _, s in best:
        if s not in sources:
            sources.append(s)
    loaders = []
    for group in best.values():
        for r in group:
            if r["loader"] not in loaders:
                loaders.append(r["loader"])
    fig, axes = plt.subplots(len(kinds), 2, figsize=(13, 4.2 * len(kinds)), squeeze=False)
    width = 0.8 / max(1, len(loaders))
    colors = {"shardstream": "#d62728", "torch-pyarrow": "#7f7f7f", "mosaic": "#1f77b4", "litdata": "#9467bd", "webdataset": "#2ca02c"}
    for i, kind in enumerate(kinds):
        for j, (metric, title) in enumerate((("samples_per_s", "samples/s (higher is better)"), ("cpu_s_per_gb", "CPU-s per GB (lower is better)"))):
            ax = axes[i][j]
            for li, loader in enumerate(loaders):
                xs, ys = [], []
                for si, source in enumerate(sources):
                    r = next((r for r in best.get((kind, source), []) if r["loader"] == loader), None)
                    if r is not None and r.get(metric):
                        xs.append(si + (li - (len(loaders) - 1) / 2) * width)
                        ys.append(r[metric])
                ax.bar(xs, ys, width, label=LABEL.get(loader, loader), color=colors.get(loader))
            if metric == "samples_per_s":
                ax.set_yscale("log")
            ax.set_xticks(range(len(sources)))
            ax.set_xticklabels(sources)
            ax.set_title(f"{kind}: {title}")
            ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(loaders), fontsize=8, frameon=False)
    fig.suptitle(
        f"shardstream vs peers, one epoch, shuffle on, batch {meta.get('batch_size')} — {meta.get('machine_short', '')} ({meta.get('date', '')[:10]})",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
