"""`Loader`: the batch iterator users hold, built on the native engine.

Everything about which samples arrive, in which order, and how they are fetched, cached and
decoded happens in Rust (`shardstream._native.Loader`). This module turns friendly arguments
(torchrun's environment, sizes like ``"512MiB"``, several weighted datasets) into the native
loader's, and turns its batches of DLPack tensors into ``torch.Tensor`` or ``numpy.ndarray``
without copying. torch is imported only when a torch output or device is asked for.
"""

from __future__ import annotations

import collections
import json
import os
import re
import warnings
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import _native
from ._native import ArrowColumn as _ArrowColumn
from ._native import ConfigError
from ._native import Tensor as _Tensor

Source = Union[str, "os.PathLike[str]", Sequence[Any]]
Size = Union[int, str]

__all__ = ["Loader", "topology_from_env", "parse_size"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}


class PerformanceWarning(UserWarning):
    """A configuration that works but costs more than the caller may expect (for example a
    ``prefetch_bytes`` too small for the shuffle window, which fetches data more than once)."""


def parse_size(value: Size, what: str) -> int:
    """Bytes from an int or a string such as ``"512MiB"``, ``"10GB"`` or ``"1.5 GiB"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a number of bytes or a size like '512MiB', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{what} must not be negative, got {value}")
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value)
        if m and m.group(2).lower() in _UNITS:
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise ConfigError(f"{what} must be a number of bytes or a size like '512MiB', got {value!r}")


def _count(value: Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{what} must be at least {minimum}, got {value}")
    return value


def _env_int(name: str) -> Optional[int]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def topology_from_env(
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
    ranks_per_node: Optional[int] = None,
) -> Tuple[int, int, int]:
    """Returns ``(nodes, ranks_per_node, rank)``.

    Unset arguments come from torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_WORLD_SIZE``), else describe a single process. ``ranks_per_node`` defaults to
    ``LOCAL_WORLD_SIZE`` when the world size also came from the environment, otherwise to the
    whole world (one node). The world must be a whole number of nodes.
    """
    from_env = world_size is None
    if world_size is None:
        world_size = _env_int("WORLD_SIZE") or 1
    world_size = _count(world_size, "world_size", 1)
    if rank is None:
        rank = _env_int("RANK") if from_env else None
        rank = 0 if rank is None else rank
    rank = _count(rank, "rank")
    if rank >= world_size:
        raise ConfigError(f"rank {rank} is out of range for world_size {world_size}")
    if ranks_per_node is None:
        local = _env_int("LOCAL_WORLD_SIZE") if from_env else None
        ranks_per_node = local if local else world_size
    ranks_per_node = _count(ranks_per_node, "ranks_per_node", 1)
    if world_size % ranks_per_node != 0:
        raise ConfigError(
            f"world_size {world_size} is not a multiple of ranks_per_node {ranks_per_node}: "
            "every node must run the same number of ranks"
        )
    return world_size // ranks_per_node, ranks_per_node, rank


def _streams(source: Source) -> List[Tuple[str, str, float, Optional[str]]]:
    """Normalises ``source`` to the native ``(manifest, mix, value, name)`` list."""
    if isinstance(source, (str, os.PathLike)):
        return [(os.fspath(source), "repeat", 1.0, None)]
    if not isinstance(source, (list, tuple)) or len(source) == 0:
        raise ConfigError(
            "source must be a manifest path/URL or a non-empty list of manifests, "
            f"(manifest, weight) pairs or dicts; got {source!r}"
        )
    out: List[Tuple[str, str, float, Optional[str]]] = []
    for item in source:
        if isinstance(item, (str, os.PathLike)):
            out.append((os.fspath(item), "repeat", 1.0, None))
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            manifest, weight = item
            out.append((os.fspath(manifest), "weight", float(weight), None))
        elif isinstance(item, Mapping):
            unknown = set(item) - {"manifest", "weight", "repeat", "name"}
            if "manifest" not in item or unknown or ("weight" in item and "repeat" in item):
                raise ConfigError(
                    "a stream dict needs 'manifest' and at most one of 'weight' / 'repeat' "
                    f"(and optionally 'name'); got {dict(item)!r}"
                )
            kind, value = ("weight", item["weight"]) if "weight" in item else ("repeat", item.get("repeat", 1.0))
            name = item.get("name")
            out.append((os.fspath(item["manifest"]), kind, float(value), None if name is None else str(name)))
        else:
            raise ConfigError(f"cannot read a stream from {item!r}: use a path, (path, weight) or a dict")
    return out


def _pin(pin_memory: Union[bool, str]) -> str:
    if pin_memory is True:
        return "auto"
    if pin_memory is False:
        return "never"
    if pin_memory in ("auto", "always", "never"):
        return str(pin_memory)
    raise ConfigError(f"pin_memory must be True, False, 'auto', 'always' or 'never'; got {pin_memory!r}")


def _storage_config_text(config: Union[str, "os.PathLike[str]", Mapping[str, Any]]) -> str:
    """The per-source storage config as JSON text: a dict, or the path of a JSON file."""
    if isinstance(config, Mapping):
        return json.dumps(config)
    try:
        with open(os.fspath(config), encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"storage_config {config!s}: {e}") from e


def native_kwargs(
    source: Source,
    *,
    batch_size: int,
    columns: Optional[Sequence[str]] = None,
    shuffle: bool = True,
    seed: int = 0,
    shuffle_window: Optional[Size] = None,
    shuffle_warmup: Optional[int] = None,
    drop_last: bool = False,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
    ranks_per_node: Optional[int] = None,
    cache_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
    cache_limit: Optional[Size] = None,
    prefetch_bytes: Optional[Size] = None,
    storage_options: Optional[Mapping[str, Any]] = None,
    storage_config: Optional[Union[str, "os.PathLike[str]", Mapping[str, Any]]] = None,
    pin_memory: Union[bool, str] = "auto",
    epoch: int = 0,
    epoch_size: Optional[int] = None,
    canonical_nodes: Optional[int] = None,
    list_mode: Union[str, Mapping[str, str]] = "padded",
    binary_mode: Union[str, Mapping[str, str]] = "bytes",
    io_concurrency: Optional[int] = None,
    decode_threads: Optional[int] = None,
    io_threads: Optional[int] = None,
    batch_queue: Optional[int] = None,
    huge_pages: bool = True,
    worker: Optional[Tuple[int, int]] = None,
) -> Dict[str, Any]:
    """Checks and converts the public arguments into `_native.Loader`'s."""
    nodes, rpn, rank_ = topology_from_env(rank, world_size, ranks_per_node)
    kw: Dict[str, Any] = dict(
        streams=_streams(source),
        batch_size=_count(batch_size, "batch_size"),
        shuffle=bool(shuffle),
        seed=_count(seed, "seed"),
        drop_last=bool(drop_last),
        nodes=nodes,
        ranks_per_node=rpn,
        rank=rank_,
        pin_memory=_pin(pin_memory),
        huge_pages=bool(huge_pages),
        epoch=_count(epoch, "epoch"),
    )
    if columns is not None:
        if isinstance(columns, str):
            columns = [columns]
        kw["columns"] = [str(c) for c in columns]
    if shuffle_window is not None:
        if isinstance(shuffle_window, int) and not isinstance(shuffle_window, bool):
            kw["shuffle_window"] = _count(shuffle_window, "shuffle_window", 1)
        else:
            kw["shuffle_window_bytes"] = parse_size(shuffle_window, "shuffle_window")
    if shuffle_warmup is not None:
        kw["shuffle_warmup"] = _count(shuffle_warmup, "shuffle_warmup")
    if cache_dir is not None:
        kw["cache_dir"] = os.fspath(cache_dir)
    if cache_limit is not None:
        kw["cache_limit"] = parse_size(cache_limit, "cache_limit")
    if prefetch_bytes is not None:
        kw["prefetch_bytes"] = parse_size(prefetch_bytes, "prefetch_bytes")
    if storage_options:
        kw["storage_options"] = {str(k): str(v) for k, v in storage_options.items()}
    if storage_config is not None:
        kw["storage_config"] = _storage_config_text(storage_config)
    if epoch_size is not None:
        kw["epoch_size"] = _count(epoch_size, "epoch_size", 1)
    if canonical_nodes is not None:
        kw["canonical_nodes"] = _count(canonical_nodes, "canonical_nodes", 1)
    if isinstance(list_mode, str):
        kw["list_mode"] = list_mode
    else:
        kw["list_modes"] = {str(k): str(v) for k, v in list_mode.items()}
    if isinstance(binary_mode, str):
        kw["binary_mode"] = binary_mode
    else:
        kw["binary_modes"] = {str(k): str(v) for k, v in binary_mode.items()}
    for name, value in (
        ("io_concurrency", io_concurrency),
        ("decode_threads", decode_threads),
        ("io_threads", io_threads),
        ("batch_queue", batch_queue),
    ):
        if value is not None:
            kw[name] = _count(value, name, 1)
    if worker is not None:
        kw["worker"] = (int(worker[0]), int(worker[1]))
    return kw


def _state_text(state: Union[Mapping[str, Any], str, bytes]) -> str:
    if isinstance(state, (str, bytes)):
        return state.decode() if isinstance(state, bytes) else state
    if isinstance(state, Mapping):
        return json.dumps(dict(state))
    raise ConfigError(f"a resume state is a dict (from state_dict()) or its JSON text, got {type(state).__name__}")


class _CopyGuard:
    """Keeps each pinned batch's memory out of the loader's pool until the GPU has passed the
    point where the training loop may have queued copies from it.

    A batch's buffers go back to the pool as soon as its tensors are freed, and torch cannot
    tell that a ``non_blocking=True`` copy still reads them: it protects only the blocks of its
    own pinned allocator (the way ``DataLoader(pin_memory=True)`` batches are safe). So when the
    loop asks for the next batch, an event is recorded on the copy stream — the current stream
    of the ``LOCAL_RANK``-th GPU under torchrun, else of the current GPU — behind any copy of the
    previous batch queued there, and that batch's native buffers stay referenced until the
    event has completed. At most ``max_held`` batches wait so; beyond that the oldest event is
    waited for (the GPU is that far behind anyway). Copies queued on another stream or GPU are
    not covered (the loop must then keep the batch itself); without CUDA in use nothing is held.

    ``device="cuda"`` uses the same guard for its side-stream copies, through :meth:`hold`
    with the event recorded after each batch's copy.

    ``cuda_in_use`` and ``record_event`` (recording and returning an object with ``query()``
    and ``synchronize()``) come from torch; tests pass fakes.
    """

    def __init__(
        self, cuda_in_use: Callable[[], bool], record_event: Callable[[], Any], max_held: int = 8
    ) -> None:
        self._cuda_in_use = cuda_in_use
        self._record_event = record_event
        self._max_held = max_held
        self._last: Optional[List[Any]] = None
        self._held: "collections.deque[Tuple[Any, List[Any]]]" = collections.deque()

    def handed_out(self, natives: List[Any]) -> None:
        """Called with the native tensors of each batch as it is handed to the loop."""
        self._retire_last()
        self._trim()
        self._last = natives

    def hold(self, event: Any, keep: List[Any]) -> None:
        """Keeps ``keep`` referenced until ``event`` (already recorded) has completed."""
        self._held.append((event, keep))
        self._trim()

    def _trim(self) -> None:
        """Lets go of batches the GPU has passed, waiting for the oldest beyond the limit."""
        while self._held:
            event = self._held[0][0]
            if not event.query():
                if len(self._held) <= self._max_held:
                    break
                event.synchronize()
            self._held.popleft()

    def release(self) -> None:
        """Waits until the GPU has passed every held batch, then lets them all go (``close``)."""
        self._retire_last()
        while self._held:
            self._held.popleft()[0].synchronize()

    def _retire_last(self) -> None:
        if self._last is not None and self._cuda_in_use():
            self._held.append((self._record_event(), self._last))
        self._last = None

    @property
    def held(self) -> int:
        """Batches whose memory waits for the GPU (besides the one last handed out)."""
        return len(self._held)


def _record_on_copy_stream() -> Any:
    """A CUDA event recorded on the stream the training loop most likely copies on."""
    import torch

    local_rank = os.environ.get("LOCAL_RANK")
    index = int(local_rank) % torch.cuda.device_count() if local_rank else torch.cuda.current_device()
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(index))
    return event


class _Converter:
    """Turns a native batch dict into torch tensors, NumPy arrays or raw DLPack tensors."""

    def __init__(self, output: str, device: Any) -> None:
        if output not in ("torch", "numpy", "dlpack"):
            raise ConfigError(f"output must be 'torch', 'numpy' or 'dlpack', got {output!r}")
        self.output = output
        self.device = None
        self.stream = None
        self._guard: Optional[_CopyGuard] = None
        if output == "torch":
            import torch

            from_dlpack = torch.utils.dlpack.from_dlpack
            # Batch tensors are host memory, so the device and stream negotiation that
            # `from_dlpack(tensor)` runs has nothing to decide; handing it the (legacy) capsule
            # skips it: 15 → 9 µs for a batch's five tensors, measured on torch 2.15.
            self._from_dlpack: Optional[Callable[[Any], Any]] = lambda t: from_dlpack(t.__dlpack__())
            if device is not None:
                dev = torch.device(device)
                if dev.type == "cuda":
                    if not torch.cuda.is_available():
                        raise ConfigError(
                            f"device={device!r} but CUDA is not available "
                            "(torch.cuda.is_available() is False); use device=None for CPU tensors"
                        )
                    if dev.index is None:
                        dev = torch.device("cuda", torch.cuda.current_device())
                    self.stream = torch.cuda.Stream(dev)
                    # One side-stream copy in flight at a time; its host batch is kept until done.
                    self._guard = _CopyGuard(lambda: False, _record_on_copy_stream, max_held=1)
                if dev.type != "cpu":
                    self.device = dev
            if self.device is None:
                self._guard = _CopyGuard(torch.cuda.is_initialized, _record_on_copy_stream)
        elif output == "numpy":
            if device is not None:
                raise ConfigError("device= needs output='torch'")
            import numpy

            self._from_dlpack = numpy.from_dlpack
        else:
            if device is not None:
                raise ConfigError("device= needs output='torch'")
            self._from_dlpack = None

    def __call__(self, raw: Dict[str, Any]) -> Dict[str, Any]:
        conv = self._from_dlpack
        natives: List[Any] = []
        for key, value in raw.items():
            kind = type(value)
            if kind is _Tensor:
                natives.append(value)
                if conv is not None:
                    raw[key] = conv(value)
            elif kind is _ArrowColumn:
                raw[key] = value.to_pyarrow()
        # Pageable memory needs no guard: a copy from it is staged before the call returns.
        if self._guard is not None and self.device is None and natives and natives[0].memory == "pinned":
            self._guard.handed_out(natives)
        return raw

    def release(self) -> None:
        """Lets go of held host batches once the GPU is done with them (``Loader.close``)."""
        if self._guard is not None:
            self._guard.release()

    def to_device(self, batch: Any) -> Any:
        """Copies the batch's tensors to the device (CUDA: on a side stream, asynchronously)."""
        if self.device is None:
            return batch
        import torch

        if self.stream is None:
            return _map_tensors(batch, lambda t: t.to(self.device))
        hosts: List[Any] = []
        with torch.cuda.stream(self.stream):
            def copy(t: Any) -> Any:
                hosts.append(t)
                return t.to(self.device, non_blocking=True)

            out = _map_tensors(batch, copy)
            done = torch.cuda.Event()
            done.record(self.stream)
        current = torch.cuda.current_stream(self.device)
        current.wait_stream(self.stream)
        _map_tensors(out, lambda t: (t.record_stream(current), t)[1])
        # The host buffers go back to the loader's pool when their tensors die; the guard keeps
        # them until the copy has finished, so a later batch cannot overwrite them mid-copy.
        assert self._guard is not None
        self._guard.hold(done, hosts)
        return out


def _map_tensors(obj: Any, fn: Callable[[Any], Any]) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_map_tensors(v, fn) for v in obj]
    if isinstance(obj, tuple):
        return type(obj)(*(_map_tensors(v, fn) for v in obj)) if hasattr(obj, "_fields") else tuple(
            _map_tensors(v, fn) for v in obj
        )
    return obj


class Loader:
    """Streams batches of a sharded dataset, in place, to a training loop.

    Iterating yields one dict per batch: every selected column (numbers as tensors of shape
    ``[B]`` or ``[B, L]``; variable-length number lists as ``name`` ``[B, Lmax]`` padded with
    zeros plus ``name_lengths``, or with ``list_mode="ragged"`` ``name`` ``[ΣL]`` plus
    ``name_offsets`` ``[B+1]``; strings and binary as ``list[str]`` / ``list[bytes]``, or with
    ``binary_mode="ragged"`` / ``"padded"`` as uint8 tensors laid out like number lists), plus
    ``__index__`` (each sample's global id, int64), ``__padded__`` (bool: a repeat that fills
    the epoch's last batch; skip it in metrics), ``__batch__`` and ``__epoch__``, and with
    several datasets ``__stream__``.

    Args:
        source: a manifest (path or URL, made by ``shardstream.index`` or ``shard-index build``),
            or a list of manifests, ``(manifest, weight)`` pairs or dicts
            ``{"manifest", "weight" | "repeat", "name"}`` to mix several datasets.
        batch_size: samples per batch on this rank (the global batch is ``batch_size × world``).
        columns: columns to load, in order (default: all).
        shuffle: shuffle globally (windowed, deterministic); default True.
        seed: seed of every permutation; every rank must use the same.
        shuffle_window: shuffle window per canonical node, in samples (int) or bytes (``"128MiB"``).
        shuffle_warmup: the epoch's first window is ``1/2**shuffle_warmup`` of a window, doubling
            up to a full one, so the first batch waits for one or two row groups instead of a
            whole window (default 6; 0 = full windows from the start).
        drop_last: drop the epoch's partial last global batch instead of padding it.
        rank, world_size, ranks_per_node: topology; default from torchrun's ``RANK``,
            ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, else a single process.
        cache_dir, cache_limit: node-local disk cache shared by all ranks of a node.
        prefetch_bytes: memory budget of the look-ahead (default 512 MiB).
        storage_options: object_store options (``aws_endpoint``, ``aws_region``, …).
        storage_config: per-source options on top of ``storage_options`` for manifests over
            several buckets or endpoints: a dict or a JSON file in ``shard-index build
            --storage-config``'s format (``{"defaults": {...}, "sources": [{"match": URL
            prefix or glob, "options": {...}}]}``).
        pin_memory: ``"auto"`` (page-locked when a CUDA driver is present; True means the same),
            ``"always"`` or ``"never"`` (False). With torch output and CUDA in use, a pinned
            batch's memory stays out of the pool until the GPU has passed the point where the
            next batch was asked for, so ``batch[k].to("cuda", non_blocking=True)`` on the
            current stream (of the ``LOCAL_RANK``-th GPU under torchrun) is safe even if the
            batch is dropped at once; copies queued on another stream must keep the batch
            alive themselves.
        device: e.g. ``"cuda"``: copy every tensor there asynchronously on a side stream; each
            batch's host memory is kept until its copy has finished.
        output: ``"torch"`` (default), ``"numpy"`` or ``"dlpack"`` (the native tensors).
        transform: called on each batch dict (after conversion, before the device copy); its
            result is what iteration yields.
        epoch: first epoch. epoch_size: samples per epoch of weighted streams.
        canonical_nodes: fix the canonical node count (default: the node count at start).
        list_mode: ``"padded"`` or ``"ragged"``, or a dict per column.
        binary_mode: how binary and string columns arrive: ``"bytes"`` (default:
            ``list[bytes]`` / ``list[str]``, one Python object per value), ``"ragged"``
            (``name`` uint8 ``[ΣL]`` plus ``name_offsets`` int64 ``[B+1]``) or ``"padded"``
            (``name`` uint8 ``[B, Lmax]``, zero-padded, plus ``name_lengths`` int64 ``[B]``);
            or a dict per column (others stay ``"bytes"``). The tensor modes copy each value
            once, straight into pooled (pinned) batch memory, and hand it over zero-copy;
            a null value counts as empty, and a fixed-size binary column is ``[B, L]``.
        io_concurrency, decode_threads, io_threads, batch_queue: engine tuning.
        huge_pages: ask the kernel for huge pages on mapped files (local shards, cache
            entries; default True). A file read from disk through the loader then stays cached
            in 2 MiB pages, which makes every later epoch over it ~1.6× faster; turn it off
            where reading cold data costs more than that wins (measured 16% slower on a VM with
            free page reporting and 8 MiB read-ahead).

    Iterating the loader again continues the current epoch where it stopped, or after an
    epoch was finished moves on to the next one; ``set_epoch(e)`` starts epoch ``e`` instead.
    Use ``state_dict()`` / ``load_state_dict()`` to checkpoint the position mid-epoch.
    """

    def __init__(
        self,
        source: Source,
        *,
        batch_size: int,
        columns: Optional[Sequence[str]] = None,
        shuffle: bool = True,
        seed: int = 0,
        shuffle_window: Optional[Size] = None,
        shuffle_warmup: Optional[int] = None,
        drop_last: bool = False,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        ranks_per_node: Optional[int] = None,
        cache_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
        cache_limit: Optional[Size] = None,
        prefetch_bytes: Optional[Size] = None,
        storage_options: Optional[Mapping[str, Any]] = None,
        storage_config: Optional[Union[str, "os.PathLike[str]", Mapping[str, Any]]] = None,
        pin_memory: Union[bool, str] = "auto",
        device: Any = None,
        output: str = "torch",
        transform: Optional[Callable[[Dict[str, Any]], Any]] = None,
        epoch: int = 0,
        epoch_size: Optional[int] = None,
        canonical_nodes: Optional[int] = None,
        list_mode: Union[str, Mapping[str, str]] = "padded",
        binary_mode: Union[str, Mapping[str, str]] = "bytes",
        io_concurrency: Optional[int] = None,
        decode_threads: Optional[int] = None,
        io_threads: Optional[int] = None,
        batch_queue: Optional[int] = None,
        huge_pages: bool = True,
        worker: Optional[Tuple[int, int]] = None,
    ) -> None:
        if transform is not None and not callable(transform):
            raise ConfigError(f"transform must be callable, got {transform!r}")
        self._convert = _Converter(output, device)
        kwargs = native_kwargs(
            source,
            batch_size=batch_size,
            columns=columns,
            shuffle=shuffle,
            seed=seed,
            shuffle_window=shuffle_window,
            shuffle_warmup=shuffle_warmup,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
            ranks_per_node=ranks_per_node,
            cache_dir=cache_dir,
            cache_limit=cache_limit,
            prefetch_bytes=prefetch_bytes,
            storage_options=storage_options,
            storage_config=storage_config,
            pin_memory=pin_memory,
            epoch=epoch,
            epoch_size=epoch_size,
            canonical_nodes=canonical_nodes,
            list_mode=list_mode,
            binary_mode=binary_mode,
            io_concurrency=io_concurrency,
            decode_threads=decode_threads,
            io_threads=io_threads,
            batch_queue=batch_queue,
            huge_pages=huge_pages,
            worker=worker,
        )
        streams = kwargs.pop("streams")
        self._native = _native.Loader(streams, kwargs.pop("batch_size"), **kwargs)
        for message in self._native.warnings():
            warnings.warn(message, PerformanceWarning, stacklevel=2)
        self._transform = transform
        self.nodes: int = kwargs["nodes"]
        self.ranks_per_node: int = kwargs["ranks_per_node"]
        self.rank: int = kwargs["rank"]
        self.world_size: int = self.nodes * self.ranks_per_node

    def __iter__(self) -> Iterator[Any]:
        self._native.__iter__()
        return self

    def __next__(self) -> Any:
        batch: Any = self._convert(next(self._native))
        if self._transform is not None:
            batch = self._transform(batch)
        return self._convert.to_device(batch)

    def __len__(self) -> int:
        """Batches this rank gets in the current epoch (from its start, or its resume point)."""
        return len(self._native)

    @property
    def epoch(self) -> int:
        """The current epoch."""
        return self._native.epoch

    @property
    def columns(self) -> List[str]:
        """The dataset columns loaded, in order."""
        return self._native.columns

    def set_epoch(self, epoch: int) -> None:
        """Starts epoch ``epoch`` from its beginning; a resumed epoch keeps its position if
        none of its batches was taken yet (so ``set_epoch`` before each epoch is always safe)."""
        self._native.set_epoch(_count(epoch, "epoch"))

    def state_dict(self) -> Dict[str, Any]:
        """The position after the batches handed out so far, as a small JSON-serialisable dict.

        It depends only on the global position, so after equal batch counts every rank returns
        the same dict: save rank 0's. It resumes on any topology, including another number of
        nodes or ranks (keep the global batch size to keep the same global batches).
        """
        return json.loads(self._native.state_json())

    def load_state_dict(self, state: Union[Mapping[str, Any], str]) -> None:
        """Continues the epoch saved in ``state`` (from ``state_dict()``), delivering exactly the
        samples not yet consumed. Raises ``ResumeStateError`` if the state belongs to another
        seed, dataset or shuffle setting."""
        self._native.load_state_json(_state_text(state))

    def stats(self) -> Dict[str, Any]:
        """Counters since the loader was created: batches, samples, bytes fetched / from the
        cache, read amplification, busy times, time to first batch, memory kind, cache, and the
        batch-buffer pool (``pool``: allocations, the seconds they took, pinned driver calls).
        Safe to call from a monitoring thread: it answers at once, also while another thread
        waits for a batch."""
        return json.loads(self._native.stats_json())

    def close(self) -> None:
        """Stops prefetching and frees the loader's memory now (also done when it is collected),
        after the GPU has finished any copy from it that the loader knows of."""
        self._convert.release()
        self._native.close()

    def __enter__(self) -> "Loader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"shardstream.Loader(rank={self.rank}/{self.world_size}, "
            f"{self._native!r}, output={self._convert.output!r})"
        )
