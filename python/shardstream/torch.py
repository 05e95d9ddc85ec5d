"""`ShardStreamDataset`: shardstream inside a ``torch.utils.data.DataLoader``.

``shardstream.Loader`` is already a complete, multi-threaded loader and needs no DataLoader.
Use this dataset when the training code expects a DataLoader, or to run per-batch Python
``transform`` code in several worker processes::

    ds = ShardStreamDataset("s3://bucket/ds/manifest.parquet", batch_size=32)
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=4)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for step, batch in enumerate(dl):
            ...
            state = ds.state_dict(step + 1)   # checkpoint after `step + 1` batches

Each worker opens its own native loader for ``worker=(id, num_workers)``: worker ``w`` loads
the rank's batches ``k`` with ``k % num_workers == w``, so the DataLoader, which reads its
workers in turn, yields the rank's batches in plan order, each exactly once. ``batch_size=None``
is required (batches are made by shardstream).

Workers default to ``pin_memory="never"``: tensors leave a worker through shared memory anyway;
use the DataLoader's ``pin_memory=True`` to pin in the main process.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, Mapping, Optional, Union

from torch.utils.data import IterableDataset, get_worker_info

from . import _native
from ._loader import Loader, _count, _state_text, native_kwargs

__all__ = ["ShardStreamDataset"]


class ShardStreamDataset(IterableDataset):  # type: ignore[type-arg]
    """An ``IterableDataset`` of shardstream batches (dicts of tensors) for a DataLoader.

    Takes the same arguments as ``shardstream.Loader`` except ``output`` (always torch) and
    ``device`` (move batches in the training loop, or use the DataLoader's ``pin_memory``).
    The topology (rank, world size) is read when the dataset is created, in the main process.

    ``len(ds)`` is the number of batches of this rank in the current epoch, the same on every
    rank. ``set_epoch(e)`` must be called before iterating the DataLoader for epoch ``e``
    (with ``persistent_workers=True`` the workers do not see it; they move on to the next
    epoch by themselves each time the DataLoader is iterated).
    """

    def __init__(self, source: Any, *, batch_size: int, transform: Any = None, **kwargs: Any) -> None:
        super().__init__()
        for bad in ("output", "device", "worker"):
            if bad in kwargs:
                raise _native.ConfigError(f"ShardStreamDataset does not take {bad}=")
        kwargs.setdefault("pin_memory", "never")
        self._epoch = _count(kwargs.pop("epoch", 0), "epoch")
        # Validated, and the topology fixed, here in the main process.
        resolved = native_kwargs(source, batch_size=batch_size, **kwargs)
        kwargs["rank"] = resolved["rank"]
        kwargs["world_size"] = resolved["nodes"] * resolved["ranks_per_node"]
        kwargs["ranks_per_node"] = resolved["ranks_per_node"]
        self._source = source
        self._batch_size = batch_size
        self._kwargs = kwargs
        self._transform = transform
        self._resume: Optional[str] = None
        # Per process: the loader this process iterates, and one used only to plan (len, state).
        self._loaders: Dict[Any, Any] = {}

    def _loader(self, worker: Any, epoch: int) -> Loader:
        """This process's loader for ``worker`` (``"plan"``: the one that only answers len()
        and state_dict(), never iterated), at ``epoch`` (or the pending resume state)."""
        key = (os.getpid(), worker)
        resume = self._resume if self._resume_epoch() == epoch else None
        cached = self._loaders.get(key)
        if cached is not None and cached[1] == resume:
            loader = cached[0]
            if resume is None and loader.epoch != epoch:
                loader.set_epoch(epoch)
            return loader
        kwargs = dict(self._kwargs)
        if worker == "plan":
            kwargs["io_threads"] = 1
        loader = Loader(
            self._source,
            batch_size=self._batch_size,
            output="torch",
            worker=None if worker == "plan" else worker,
            epoch=epoch,
            **kwargs,
        )
        if resume is not None:
            loader.load_state_dict(resume)
        # Loaders inherited from a parent process are unusable here; forget them.
        self._loaders = {k: v for k, v in self._loaders.items() if k[0] == os.getpid()}
        self._loaders[key] = (loader, resume)
        return loader

    def _resume_epoch(self) -> Optional[int]:
        if self._resume is None:
            return None
        return int(json.loads(self._resume)["epoch"])

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        info = get_worker_info()
        worker = (info.id, info.num_workers) if info is not None and info.num_workers > 1 else None
        cached = self._loaders.get((os.getpid(), worker))
        if cached is not None and cached[0].epoch == self._epoch and self._resume is None:
            # Iterated again at the same epoch (a persistent worker, or num_workers=0 without
            # set_epoch): an unfinished epoch continues, a finished one moves to the next.
            loader = cached[0]
        else:
            loader = self._loader(worker, self._epoch)
        for batch in loader:
            if self._transform is not None:
                batch = self._transform(batch)
            yield batch

    def __len__(self) -> int:
        return len(self._loader("plan", self._epoch))

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch the next iteration of the DataLoader loads."""
        self._epoch = _count(epoch, "epoch")
        if self._resume is not None and self._resume_epoch() != self._epoch:
            self._resume = None

    def state_dict(self, batches: int) -> Dict[str, Any]:
        """The resume state after the training loop consumed ``batches`` batches of the current
        epoch (count them, or use ``batch["__batch__"] + 1`` of the last batch)."""
        plan = self._loader("plan", self._epoch)
        return json.loads(plan._native.state_after_json(_count(batches, "batches")))

    def load_state_dict(self, state: Union[Mapping[str, Any], str]) -> None:
        """Resumes from ``state`` at the next iteration (the state's epoch becomes current)."""
        text = _state_text(state)
        self._resume = text
        self._epoch = self._resume_epoch() or 0
        # Check it now (and make len() and state_dict() follow the resumed plan).
        self._loader("plan", self._epoch)

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_loaders"] = {}
        return state
