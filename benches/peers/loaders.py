"""One adapter per loader: build it as its documentation says, shuffle on, and yield batches.

Every adapter is a function ``(job) -> Iterator[(ids, payload_bytes)]`` run inside a fresh
loader process (see ``child.py``): it builds the loader (the time to first batch starts just
before), iterates one epoch, and for each batch hands back the sample ids it carried (from the
data's own ``id`` field) and the payload bytes it delivered. Batches are what a training step
would get — torch tensors (``tokens`` ``[B, 2048]``) or, for ``blob``, lists of ``bytes`` from the
peers and one uint8 tensor ``[ΣL]`` plus int64 offsets ``[B+1]`` from shardstream
(``binary_mode="ragged"``: the form a training step hands to the GPU) — and the
adapters only look at their shapes, so no loader pays for work the others skip.

``job`` keys: ``kind``, ``column``, ``batch_size``, ``workers``, ``seed``, ``shuffle_buffer``
(samples, for the loaders that shuffle through a buffer), ``source`` (``local`` or S3 with
``endpoint``/``bucket``/``creds``/``storage_options``), ``paths`` (per format: local directory,
S3 prefix, file names), ``manifest``, ``cache_dir`` (a fresh directory for loaders that
download into a local cache).

Shuffling, as each loader offers it:

- shardstream: ``shuffle=True`` — its global windowed shuffle (the default window).
- torch + pyarrow: an ``IterableDataset`` over the Parquet files (a map-style dataset with
  ``shuffle=True`` would read a whole row group per sample): files in a seeded random order
  split over the workers, row groups in random order within a file, then a shuffle buffer of
  ``shuffle_buffer`` samples; the DataLoader collates.
- MosaicML Streaming: ``StreamingDataset(shuffle=True, shuffle_seed=...)`` (its default py1e
  algorithm) in a ``StreamingDataLoader``.
- LitData: ``StreamingDataset(shuffle=True, seed=...)`` in a ``StreamingDataLoader``.
- WebDataset: shard shuffle over all shards, ``.shuffle(shuffle_buffer)``, ``.batched(B)``,
  in a ``WebLoader(batch_size=None)``.
"""

from __future__ import annotations

import os
import random
from typing import Any, Callable, Dict, Iterator, List, Tuple

import numpy as np

Batches = Iterator[Tuple[np.ndarray, int]]


def _payload_bytes(column: str, value: Any) -> int:
    if column == "tokens":
        return int(value.numel() * value.element_size()) if hasattr(value, "numel") else int(value.nbytes)
    return sum(len(b) for b in value)


def _ids(value: Any) -> np.ndarray:
    """The batch's sample ids as a NumPy copy, kept for the exactly-once check: a view would
    keep every batch's id buffer alive to the end of the epoch, which stops a loader that
    recycles batch memory from reusing it (shardstream then allocated one fresh buffer per
    batch, ~1% of its CPU) — a cost of this harness, not of the loader."""
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.array(value, dtype=np.int64).reshape(-1)


# ---------------------------------------------------------------------------------------------
# shardstream


def shardstream_batches(job: Dict[str, Any]) -> Batches:
    import shardstream

    col = job["column"]
    src = job["source"]
    # Blobs come as one uint8 tensor per batch plus offsets (what a training step feeds to the
    # GPU), not one Python `bytes` per sample; SHARDSTREAM_BINARY_MODE=bytes measures the lists.
    binary_mode = os.environ.get("SHARDSTREAM_BINARY_MODE", "ragged")
    loader = shardstream.Loader(
        job["manifest"],
        batch_size=job["batch_size"],
        shuffle=True,
        seed=job["seed"],
        columns=["id", col],
        storage_options=src.get("storage_options") or None,
        pin_memory="never",
        binary_mode=binary_mode,
    )
    for batch in loader:
        padded = batch["__padded__"]
        ids = batch["id"]
        values = batch[col]
        keep = ~padded if bool(padded.any()) else None
        if keep is not None:
            ids = ids[keep]
        if col == "tokens":
            nbytes = _payload_bytes(col, values if keep is None else values[keep])
        elif binary_mode == "bytes":
            nbytes = _payload_bytes(col, values if keep is None else [v for v, k in zip(values, keep.tolist()) if k])
        else:
            offsets = batch[f"{col}_offsets"]
            lengths = offsets[1:] - offsets[:-1]
            nbytes = int((lengths if keep is None else lengths[keep]).sum())
        yield _ids(ids), nbytes
    job["_stats"] = loader.stats()
    loader.close()


# ---------------------------------------------------------------------------------------------
# torch DataLoader + pyarrow


def _pyarrow_fs(src: Dict[str, Any]):  # type: ignore[no-untyped-def]
    from pyarrow import fs

    if src["name"] == "local":
        return fs.LocalFileSystem()
    ep = src["endpoint"]
    return fs.S3FileSystem(
        access_key=src["creds"]["access_key"],
        secret_key=src["creds"]["secret_key"],
        region=src["creds"]["region"],
        endpoint_override=ep.split("://", 1)[1],
        scheme=ep.split("://", 1)[0],
        force_virtual_addressing=False,
    )


def parquet_shuffled(files: List[str], src: Dict[str, Any], col: str, kind: str, seed: int, buffer_size: int) -> Any:
    """The torch + pyarrow baseline's ``IterableDataset`` over Parquet ``files`` (also used by
    ``benches/gpu_feed.py``): files in a seeded random order split over the DataLoader's
    workers, row groups in random order within a file, then a shuffle buffer of
    ``buffer_size`` samples; each sample a dict of ``id`` and ``col``."""
    import pyarrow.parquet as pq
    import torch
    from torch.utils.data import IterableDataset, get_worker_info

    class ParquetShuffled(IterableDataset):  # type: ignore[type-arg]
        def __iter__(self) -> Iterator[Dict[str, Any]]:
            info = get_worker_info()
            wid, nw = (info.id, info.num_workers) if info else (0, 1)
            rng = random.Random(seed)
            order = list(files)
            rng.shuffle(order)
            mine = order[wid::nw]
            rng = random.Random(seed * 1000 + wid)
            filesystem = _pyarrow_fs(src)
            buf: List[Dict[str, Any]] = []
            for path in mine:
                with filesystem.open_input_file(path) as f:
                    pf = pq.ParquetFile(f)
                    groups = list(range(pf.num_row_groups))
                    rng.shuffle(groups)
                    for g in groups:
                        t = pf.read_row_group(g, columns=["id", col])
                        ids = t.column("id").to_numpy()
                        if kind == "tokens":
                            vals = t.column(col).combine_chunks().flatten().to_numpy().reshape(len(ids), -1)
                            rows = torch.from_numpy(vals)
                            samples = [{"id": int(ids[i]), col: rows[i]} for i in range(len(ids))]
                        else:
                            blobs = t.column(col).to_pylist()
                            samples = [{"id": int(ids[i]), col: blobs[i]} for i in range(len(ids))]
                        for s in samples:
                            if len(buf) < buffer_size:
                                buf.append(s)
                                continue
                            j = rng.randrange(len(buf))
                            buf[j], s = s, buf[j]
                            yield s
            rng.shuffle(buf)
            yield from buf

    return ParquetShuffled()


def torch_pyarrow_batches(job: Dict[str, Any]) -> Batches:
    from torch.utils.data import DataLoader

    col = job["column"]
    src = job["source"]
    p = job["paths"]["parquet"]
    files: List[str] = [
        os.path.join(p["dir"], f) if src["name"] == "local" else f"{src['bucket']}/{p['prefix']}{f}" for f in p["files"]
    ]
    dataset = parquet_shuffled(files, src, col, job["kind"], job["seed"], job["shuffle_buffer"])
    dl = DataLoader(dataset, batch_size=job["batch_size"], num_workers=job["workers"])
    for batch in dl:
        yield _ids(batch["id"]), _payload_bytes(col, batch[col])


# ---------------------------------------------------------------------------------------------
# MosaicML Streaming


def mosaic_batches(job: Dict[str, Any]) -> Batches:
    from streaming import StreamingDataLoader, StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    col = job["column"]
    src = job["source"]
    p = job["paths"]["mds"]
    if src["name"] == "local":
        kwargs: Dict[str, Any] = {"local": p["dir"]}
    else:
        # S3_ENDPOINT_URL (set by the benchmark) points it at the loopback endpoint.
        kwargs = {"remote": f"s3://{src['bucket']}/{p['prefix']}", "local": job["cache_dir"]}
    ds = StreamingDataset(shuffle=True, shuffle_seed=job["seed"], batch_size=job["batch_size"], **kwargs)
    dl = StreamingDataLoader(ds, batch_size=job["batch_size"], num_workers=job["workers"])
    for batch in dl:
        yield _ids(batch["id"]), _payload_bytes(col, batch[col])


# ---------------------------------------------------------------------------------------------
# LitData


def litdata_batches(job: Dict[str, Any]) -> Batches:
    import litdata

    col = job["column"]
    src = job["source"]
    p = job["paths"]["litdata"]
    kwargs: Dict[str, Any] = {}
    if src["name"] == "local":
        input_dir = p["dir"]
    else:
        input_dir = f"s3://{src['bucket']}/{p['prefix'].rstrip('/')}"
        kwargs["storage_options"] = litdata_storage_options(src)
        # LitData downloads chunks with obstore, whose client options are fixed in the module and
        # lack allow_http, so it refuses an http:// endpoint: add it (mutated before the
        # DataLoader forks, so the workers inherit it).
        try:
            from litdata.streaming import downloader

            downloader._OBSTORE_CLIENT_OPTIONS["allow_http"] = True  # type: ignore[index]
        except (ImportError, AttributeError, TypeError):
            pass
        kwargs["cache_dir"] = job["cache_dir"]
    ds = litdata.StreamingDataset(input_dir=input_dir, shuffle=True, seed=job["seed"], **kwargs)
    dl = litdata.StreamingDataLoader(ds, batch_size=job["batch_size"], num_workers=job["workers"])
    for batch in dl:
        yield _ids(batch["id"]), _payload_bytes(col, batch[col])


def litdata_storage_options(src: Dict[str, Any]) -> Dict[str, Any]:
    """LitData hands these to boto3 (and to its obstore client, which needs allow_http to talk to
    an http:// endpoint)."""
    return {
        "endpoint_url": src["endpoint"],
        "aws_access_key_id": src["creds"]["access_key"],
        "aws_secret_access_key": src["creds"]["secret_key"],
        "region_name": src["creds"]["region"],
    }


# ---------------------------------------------------------------------------------------------
# WebDataset


def wds_urls(job: Dict[str, Any]) -> List[str]:
    src = job["source"]
    p = job["paths"]["wds"]
    if src["name"] == "local":
        return [os.path.join(p["dir"], f) for f in p["files"]]
    # WebDataset reads object stores through pipe: URLs; curl signs S3 requests itself.
    c = src["creds"]
    return [
        f"pipe:curl -s -f -H x-amz-content-sha256:UNSIGNED-PAYLOAD --aws-sigv4 aws:amz:{c['region']}:s3 "
        f"--user {c['access_key']}:{c['secret_key']} "
        f"{src['endpoint']}/{src['bucket']}/{p['prefix']}{f}"
        for f in p["files"]
    ]


def wds_batches(job: Dict[str, Any]) -> Batches:
    import warnings

    import torch
    import webdataset as wds

    # torch.frombuffer over the tar member's (immutable) bytes: zero-copy; stack() copies.
    warnings.filterwarnings("ignore", message="The given buffer is not writable")

    col = job["column"]
    suffix = "tokens" if job["kind"] == "tokens" else "blob"
    urls = wds_urls(job)

    def decode(sample: Dict[str, Any]) -> Dict[str, Any]:
        data = sample[suffix]
        value = torch.frombuffer(data, dtype=torch.int32) if suffix == "tokens" else data
        return {"id": int(sample["__key__"]), col: value}

    def collate(samples: List[Dict[str, Any]]) -> Dict[str, Any]:
        ids = torch.tensor([s["id"] for s in samples], dtype=torch.int64)
        vals = [s[col] for s in samples]
        return {"id": ids, col: torch.stack(vals) if suffix == "tokens" else vals}

    ds = (
        wds.WebDataset(urls, shardshuffle=len(urls), seed=job["seed"], empty_check=False)
        .shuffle(job["shuffle_buffer"])
        .map(decode)
        .batched(job["batch_size"], collation_fn=collate, partial=True)
    )
    dl = wds.WebLoader(ds, batch_size=None, num_workers=job["workers"])
    for batch in dl:
        yield _ids(batch["id"]), _payload_bytes(col, batch[col])


LOADERS: Dict[str, Callable[[Dict[str, Any]], Batches]] = {
    "shardstream": shardstream_batches,
    "torch-pyarrow": torch_pyarrow_batches,
    "mosaic": mosaic_batches,
    "litdata": litdata_batches,
    "webdataset": wds_batches,
}

# What each loader imports; done before the measured epoch starts.
IMPORTS: Dict[str, List[str]] = {
    "shardstream": ["shardstream"],
    "torch-pyarrow": ["pyarrow.parquet", "pyarrow.fs", "torch.utils.data"],
    "mosaic": ["streaming", "streaming.base.util"],
    "litdata": ["litdata", "litdata.streaming.downloader"],
    "webdataset": ["webdataset"],
}

# The format each loader reads.
FORMAT = {"shardstream": "parquet", "torch-pyarrow": "parquet", "mosaic": "mds", "litdata": "litdata", "webdataset": "wds"}

# Human-readable names for reports.
LABEL = {
    "shardstream": "shardstream (Parquet in place)",
    "torch-pyarrow": "torch DataLoader + pyarrow (Parquet)",
    "mosaic": "MosaicML Streaming 0.13 (MDS)",
    "litdata": "LitData (optimize()d chunks)",
    "webdataset": "WebDataset (tar)",
}
