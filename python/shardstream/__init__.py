"""shardstream: stream sharded datasets from object storage into training, in place.

- :class:`Loader` — iterate batches (dicts of torch tensors or NumPy arrays, zero-copy) of
  one or several datasets described by manifests, with a deterministic global shuffle,
  exactly-once delivery across ranks, exact (elastic) mid-epoch resume and a node-local cache.
- :func:`index` / :func:`inspect` — build and summarise manifests (also the ``shard-index``
  command).
- :mod:`shardstream.torch` — :class:`~shardstream.torch.ShardStreamDataset` for use inside a
  ``torch.utils.data.DataLoader``.

Every error is a :class:`ShardStreamError`; see its subclasses for what went wrong.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Union

from . import _native
from ._loader import Loader, PerformanceWarning, parse_size, topology_from_env
from ._native import (
    AccessDeniedError,
    CacheError,
    ColumnNotFoundError,
    ConfigError,
    DecodeError,
    ManifestError,
    NotFoundError,
    ResumeStateError,
    ShardStreamError,
    StorageError,
    Tensor,
)

__version__: str = _native.__version__

__all__ = [
    "Loader",
    "Tensor",
    "index",
    "inspect",
    "parse_size",
    "topology_from_env",
    "ShardStreamError",
    "ManifestError",
    "StorageError",
    "NotFoundError",
    "AccessDeniedError",
    "DecodeError",
    "CacheError",
    "ConfigError",
    "ColumnNotFoundError",
    "ResumeStateError",
    "PerformanceWarning",
    "__version__",
]


def index(
    source: Union[str, List[str]],
    output: str,
    *,
    format: str = "auto",
    include: Optional[List[str]] = None,
    exclude: Optional[List[str]] = None,
    concurrency: int = 16,
    storage_options: Optional[Mapping[str, Any]] = None,
    skip_bad: bool = False,
) -> Dict[str, Any]:
    """Indexes the shards under ``source`` and writes a manifest to ``output``.

    Args:
        source: dataset location(s): ``s3://``, ``gs://``, ``az://``, ``http(s)://``,
            ``file://`` or a local path; a list indexes several roots into one manifest.
        output: where to write the manifest (local path or URL).
        format: ``"auto"`` (from object names), ``"parquet"``, ``"tar"`` or ``"jsonl"``.
        include, exclude: globs on paths relative to the source.
        concurrency: objects read at once.
        storage_options: object_store options (e.g. ``aws_endpoint``).
        skip_bad: list unreadable objects in the summary instead of failing.

    Returns the build summary: ``shards``, ``samples``, ``bytes``, ``fingerprint``, ``bad``, …
    """
    options = {str(k): str(v) for k, v in (storage_options or {}).items()}
    return _native.index(
        source,
        output,
        format=format,
        include=include,
        exclude=exclude,
        concurrency=concurrency,
        storage_options=options,
        skip_bad=skip_bad,
    )


def inspect(manifest: str, *, storage_options: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Summarises a manifest: format version, sources, shard/sample/byte totals, formats,
    schema, fingerprint, smallest and largest shard (as ``shard-index inspect --json``)."""
    options = {str(k): str(v) for k, v in (storage_options or {}).items()}
    return _native.inspect(manifest, storage_options=options)
