"""Measuring a loader process and everything it starts.

Two halves:

- In the loader process (:class:`TreeCounters`): CPU seconds and bytes read of the process
  *tree* — the process itself, its live descendants (DataLoader workers, download helpers)
  and the descendants it already reaped (Linux folds a reaped child's CPU time into
  ``os.times()``'s children fields and its I/O counters into ``/proc/self/io``). The loader
  process takes a snapshot just before it builds its loader and one after the last batch, so
  interpreter start-up and ``import torch`` (the same for every loader) are left out.
- In the benchmark process (:class:`TreeSampler`): peak memory of the tree, sampled every
  50 ms from ``/proc/PID/status`` (RSS, and RSS less file-backed pages: memory-mapped shards
  count in RSS but are page cache the kernel can drop).
"""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Set

import psutil



def _status_kb(pid: int) -> Dict[str, int]:
    out: Dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "RssAnon:", "RssFile:", "RssShmem:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return out


def _io(pid: int) -> Dict[str, int]:
    out: Dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                key, value = line.split(":", 1)
                out[key] = int(value)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return out


class TreeCounters:
    """CPU seconds and read bytes of this process and its descendants, live or reaped."""

    @staticmethod
    def snapshot() -> Dict[str, float]:
        t = os.times()
        cpu = t.user + t.system + t.children_user + t.children_system
        own_io = _io(os.getpid())
        rchar = float(own_io.get("rchar", 0))
        read_bytes = float(own_io.get("read_bytes", 0))
        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            children = []
        for child in children:
            try:
                ct = child.cpu_times()
                cpu += ct.user + ct.system + ct.children_user + ct.children_system
            except psutil.Error:
                continue
            cio = _io(child.pid)
            rchar += cio.get("rchar", 0)
            read_bytes += cio.get("read_bytes", 0)
        return {"cpu_s": cpu, "rchar": rchar, "read_bytes": read_bytes, "wall": time.perf_counter()}

    @staticmethod
    def delta(a: Dict[str, float], b: Dict[str, float]) -> Dict[str, float]:
        return {k: b[k] - a[k] for k in a}


class TreeSampler:
    """Samples the memory of a process tree from outside until :meth:`stop`."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss_kb = 0
        self.peak_anon_kb = 0
        self.max_procs = 0
        self.seen: Set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> List[int]:
        try:
            root = psutil.Process(self.pid)
            return [self.pid] + [c.pid for c in root.children(recursive=True)]
        except psutil.Error:
            return []

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = self._tree()
            rss = anon = 0
            for pid in pids:
                st = _status_kb(pid)
                rss += st.get("VmRSS", 0)
                anon += st.get("RssAnon", 0) + st.get("RssShmem", 0)
            self.seen.update(pids)
            self.max_procs = max(self.max_procs, len(pids))
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.peak_anon_kb = max(self.peak_anon_kb, anon)
            self._stop.wait(self.interval)

    def stop(self) -> Dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {
            "peak_rss_mb": self.peak_rss_kb / 1024,
            "peak_anon_mb": self.peak_anon_kb / 1024,
            "max_processes": self.max_procs,
        }


def bare_read_local(paths: List[str], block: int = 8 << 20) -> Dict[str, float]:
    """Reads every file whole, in order, into one reused buffer: the sequential-read limit of
    this disk (page cache) for this process. The buffer is page-aligned (an anonymous mmap):
    the kernel's copy into a bytearray, which malloc places 16 bytes off a cache line, ran at
    half the speed on this machine, and only on some calls."""
    buf = mmap.mmap(-1, block)
    view = memoryview(buf)
    total = 0
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while True:
                n = f.readinto(view)
                if not n:
                    break
                total += n
    wall = time.perf_counter() - t0
    return {"bytes": total, "wall_s": wall, "mb_per_s": total / wall / 1e6}


def shuffled_copy_local(bench: Path, paths: List[str], sample_bytes: int, batch_size: int) -> Dict[str, float]:
    """The shuffled-copy ceiling of these files (``shardstream-bench gather``): every
    ``sample_bytes`` of them copied once into batches, shuffled as the loader's planner shuffles
    (the loader's default window), by one thread per core, with nothing else a loader does. A
    shuffled loader gathers 8 KiB samples from all over its window, and on some machines such
    gathers run at half the speed per core of the bare read's sequential copy: this is what the
    hardware allows a shuffled reader, measured side by side with the bare read."""
    out = subprocess.run(
        [str(bench), "gather", "--json", "--sample-bytes", str(sample_bytes), "--batch-size", str(batch_size), *paths],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def evict_from_page_cache(paths: List[str]) -> int:
    """Drops the clean cached pages of every file (``POSIX_FADV_DONTNEED``; sync first, dirty
    pages stay) and returns the bytes the files hold."""
    total = 0
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            total += os.fstat(fd).st_size
        finally:
            os.close(fd)
    return total


def file_huge_pages_mib() -> Optional[int]:
    """File pages the page cache holds in 2 MiB folios (``FileHugePages``), MiB."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("FileHugePages:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def bare_read_s3(
    endpoint: str, bucket: str, keys: List[str], creds: Dict[str, str], concurrency: int = 16, block: int = 8 << 20
) -> Dict[str, float]:
    """Concurrent signed range GETs of every object, through ``endpoint``, with obstore (the
    Python face of object_store, the client shardstream uses), ``concurrency`` at a time."""
    import asyncio

    import obstore
    from obstore.store import S3Store

    store = S3Store(
        bucket,
        endpoint=endpoint,
        access_key_id=creds["access_key"],
        secret_access_key=creds["secret_key"],
        region=creds["region"],
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )

    async def main() -> int:
        sizes = await asyncio.gather(*(obstore.head_async(store, k) for k in keys))
        jobs = []
        for k, meta in zip(keys, sizes):
            size = int(meta["size"])
            for start in range(0, size, block):
                jobs.append((k, start, min(size, start + block)))
        sem = asyncio.Semaphore(concurrency)
        total = 0

        async def one(job: tuple) -> None:
            nonlocal total
            async with sem:
                data = await obstore.get_range_async(store, job[0], start=job[1], end=job[2])
                total += len(memoryview(data))

        await asyncio.gather(*(one(j) for j in jobs))
        return total

    t0 = time.perf_counter()
    total = asyncio.run(main())
    wall = time.perf_counter() - t0
    return {"bytes": total, "wall_s": wall, "mb_per_s": total / wall / 1e6, "concurrency": concurrency, "block": block}


def median(values: List[float]) -> Optional[float]:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    n = len(vals)
    return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2
