"""One logical dataset, written in every loader's own format.

Sample ``i`` (ids ``0..N-1``) has an ``id`` (int64) and one payload: ``tokens`` — 2048 int32
(8 KiB) — or ``blob`` — 65,536 random bytes. Payloads are random (seeded per shard), so no
format gains from compression, and every format is written uncompressed:

- ``parquet/`` — read in place by shardstream and by the torch DataLoader + pyarrow baseline:
  ``id: int64``, ``tokens: list<int32>`` or ``blob: binary``; PLAIN encoding, no dictionary, no
  compression, row groups of about ``row_group_bytes`` (default 8 MiB).
- ``mds/`` — MosaicML Streaming's MDSWriter (``ndarray:int32:2048`` / ``bytes``).
- ``litdata/`` — ``litdata.optimize`` (numpy arrays / bytes), ``chunk_bytes`` = the shard size.
- ``wds/`` — WebDataset tar: ``<id:09d>.tokens`` (raw little-endian int32) or ``<id:09d>.blob``.

Every format holds about ``shard_bytes`` (default 64 MiB) of payload per shard or chunk. A
``.complete.json`` next to each format's files records what was written, so a later run with
the same spec reuses it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import shutil
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np

TOKENS = 2048
BLOB_BYTES = 64 << 10
FORMATS = ("parquet", "mds", "litdata", "wds")


@dataclass(frozen=True)
class DatasetSpec:
    kind: str  # "tokens" or "blobs"
    total_bytes: int
    shard_bytes: int = 64 << 20
    row_group_bytes: int = 8 << 20
    seed: int = 0

    @property
    def sample_bytes(self) -> int:
        return TOKENS * 4 if self.kind == "tokens" else BLOB_BYTES

    @property
    def column(self) -> str:
        return "tokens" if self.kind == "tokens" else "blob"

    @property
    def num_samples(self) -> int:
        return max(1, self.total_bytes // self.sample_bytes)

    @property
    def samples_per_shard(self) -> int:
        return max(1, self.shard_bytes // self.sample_bytes)

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_samples / self.samples_per_shard)

    @property
    def rows_per_row_group(self) -> int:
        return max(1, self.row_group_bytes // self.sample_bytes)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.num_samples}"

    @property
    def payload_bytes(self) -> int:
        return self.num_samples * self.sample_bytes

    def shard_range(self, shard: int) -> Tuple[int, int]:
        lo = shard * self.samples_per_shard
        return lo, min(self.num_samples, lo + self.samples_per_shard)


def shard_payload(spec: DatasetSpec, shard: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(ids, payload)`` of one shard: payload is ``int32[n, 2048]`` or ``uint8[n, 65536]``."""
    lo, hi = spec.shard_range(shard)
    rng = np.random.default_rng([spec.seed, shard])
    ids = np.arange(lo, hi, dtype=np.int64)
    if spec.kind == "tokens":
        payload = rng.integers(0, 50_257, size=(hi - lo, TOKENS), dtype=np.int32)
    else:
        payload = np.frombuffer(rng.bytes((hi - lo) * BLOB_BYTES), dtype=np.uint8).reshape(hi - lo, BLOB_BYTES)
    return ids, payload


def _arrow_table(spec: DatasetSpec, ids: np.ndarray, payload: np.ndarray):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    n = len(ids)
    if spec.kind == "tokens":
        offsets = pa.array(np.arange(0, (n + 1) * TOKENS, TOKENS, dtype=np.int32))
        col = pa.ListArray.from_arrays(offsets, pa.array(payload.reshape(-1)))
    else:
        offsets = np.arange(0, (n + 1) * BLOB_BYTES, BLOB_BYTES, dtype=np.int32)
        col = pa.Array.from_buffers(
            pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(payload).reshape(-1))]
        )
    return pa.table({"id": pa.array(ids), spec.column: col})


def write_parquet(spec: DatasetSpec, out: Path) -> None:
    import pyarrow.parquet as pq

    for s in range(spec.num_shards):
        ids, payload = shard_payload(spec, s)
        pq.write_table(
            _arrow_table(spec, ids, payload),
            out / f"shard-{s:06d}.parquet",
            row_group_size=spec.rows_per_row_group,
            compression="none",
            use_dictionary=False,
            write_statistics=False,
            column_encoding={"id": "PLAIN", spec.column: "PLAIN"},
        )


def write_mds(spec: DatasetSpec, out: Path) -> None:
    from streaming import MDSWriter

    columns = {"id": "int64", "tokens": f"ndarray:int32:{TOKENS}"} if spec.kind == "tokens" else {"id": "int64", "blob": "bytes"}
    # size_limit bounds a shard's bytes; leave room for MDS's per-sample offsets.
    with MDSWriter(out=str(out), columns=columns, size_limit=spec.shard_bytes + (1 << 20), compression=None) as w:
        for s in range(spec.num_shards):
            ids, payload = shard_payload(spec, s)
            for i in range(len(ids)):
                w.write({"id": int(ids[i]), spec.column: payload[i] if spec.kind == "tokens" else payload[i].tobytes()})


def _litdata_shard(spec_json: str, shard: int) -> Iterator[Dict[str, object]]:
    spec = DatasetSpec(**json.loads(spec_json))
    ids, payload = shard_payload(spec, shard)
    for i in range(len(ids)):
        yield {"id": int(ids[i]), spec.column: payload[i] if spec.kind == "tokens" else payload[i].tobytes()}


def write_litdata(spec: DatasetSpec, out: Path) -> None:
    import litdata

    litdata.optimize(
        fn=functools.partial(_litdata_shard, json.dumps(asdict(spec))),
        inputs=list(range(spec.num_shards)),
        output_dir=str(out),
        chunk_bytes=spec.shard_bytes + (1 << 20),
        num_workers=2,
        mode="overwrite",
    )


def write_wds(spec: DatasetSpec, out: Path) -> None:
    suffix = "tokens" if spec.kind == "tokens" else "blob"
    for s in range(spec.num_shards):
        ids, payload = shard_payload(spec, s)
        tmp = out / f".shard-{s:06d}.tar.tmp"
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(len(ids)):
                data = payload[i].tobytes()
                info = tarfile.TarInfo(f"{int(ids[i]):09d}.{suffix}")
                info.size = len(data)
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))
        tmp.rename(out / f"shard-{s:06d}.tar")


WRITERS = {"parquet": write_parquet, "mds": write_mds, "litdata": write_litdata, "wds": write_wds}


def format_dir(root: Path, spec: DatasetSpec, fmt: str) -> Path:
    return root / spec.name / fmt


def ensure(root: Path, spec: DatasetSpec, fmt: str, log=print) -> Path:  # type: ignore[no-untyped-def]
    """Writes ``fmt`` of ``spec`` under ``root/<name>/<fmt>`` unless an identical copy is there."""
    out = format_dir(root, spec, fmt)
    marker = out / ".complete.json"
    want = asdict(spec)
    if marker.exists() and json.loads(marker.read_text()).get("spec") == want:
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    with _quiet(out.parent / f".{fmt}-write.log"):
        WRITERS[fmt](spec, out)
    took = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in data_files(out))
    marker.write_text(json.dumps({"spec": want, "seconds": took, "bytes": size}))
    log(f"  wrote {fmt:8s} {spec.name}: {len(data_files(out))} files, {size / 1e6:,.0f} MB in {took:.1f} s")
    return out


@contextlib.contextmanager
def _quiet(path: Path) -> Iterator[None]:
    """Sends this process's stdout/stderr (fds 1 and 2: the writers' progress bars, also from
    their worker processes) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def data_files(d: Path) -> List[Path]:
    """The files a loader reads from a format directory (not the marker), in name order."""
    return sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))
