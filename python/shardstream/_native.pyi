"""Type stubs of the compiled extension ``shardstream._native`` (see python/src/)."""

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union, final

__version__: str

class ShardStreamError(Exception):
    """Base class of every error raised by shardstream."""

class ManifestError(ShardStreamError):
    """A manifest is invalid, from a newer shardstream, or out of date with its data."""

class StorageError(ShardStreamError):
    """Reading from or writing to the object store (or local disk) failed."""

class DecodeError(ShardStreamError):
    """A shard's bytes could not be decoded."""

class CacheError(ShardStreamError):
    """The node-local disk cache failed or cannot hold what the plan needs."""

class ConfigError(ShardStreamError, ValueError):
    """An option has an unusable value."""

class ColumnNotFoundError(ConfigError):
    """A requested column is not in the dataset's schema."""

class ResumeStateError(ConfigError):
    """A resume state does not fit this run."""

class NotFoundError(StorageError, FileNotFoundError):
    """A manifest or object does not exist."""

class AccessDeniedError(StorageError, PermissionError):
    """The store or file system refused access."""

@final
class Tensor:
    """A dense, C-contiguous CPU array exported zero-copy through DLPack."""

    def __dlpack__(
        self,
        *,
        stream: Optional[Any] = None,
        max_version: Optional[Tuple[int, int]] = None,
        dl_device: Optional[Tuple[int, int]] = None,
        copy: Optional[bool] = None,
    ) -> Any: ...
    def __dlpack_device__(self) -> Tuple[int, int]: ...
    @property
    def ptr(self) -> int: ...
    @property
    def shape(self) -> Tuple[int, ...]: ...
    @property
    def dtype(self) -> str: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def memory(self) -> str: ...
    def __len__(self) -> int: ...

@final
class ArrowColumn:
    """A column that is neither numbers nor strings/binary, as Arrow IPC."""

    @property
    def name(self) -> str: ...
    def ipc(self) -> bytes: ...
    def to_pyarrow(self) -> Any: ...
    def __len__(self) -> int: ...

@final
class Loader:
    """The native loader behind ``shardstream.Loader``."""

    def __new__(
        cls,
        streams: Sequence[Tuple[str, str, float, Optional[str]]],
        batch_size: int,
        *,
        columns: Optional[Sequence[str]] = None,
        shuffle: bool = True,
        seed: int = 0,
        shuffle_window: Optional[int] = None,
        shuffle_window_bytes: Optional[int] = None,
        shuffle_warmup: Optional[int] = None,
        drop_last: bool = False,
        epoch_size: Optional[int] = None,
        nodes: int = 1,
        ranks_per_node: int = 1,
        rank: int = 0,
        worker: Optional[Tuple[int, int]] = None,
        canonical_nodes: Optional[int] = None,
        cache_dir: Optional[str] = None,
        cache_limit: Optional[int] = None,
        prefetch_bytes: Optional[int] = None,
        io_concurrency: Optional[int] = None,
        io_threads: Optional[int] = None,
        decode_threads: Optional[int] = None,
        batch_queue: Optional[int] = None,
        list_mode: Optional[str] = None,
        list_modes: Optional[Mapping[str, str]] = None,
        binary_mode: Optional[str] = None,
        binary_modes: Optional[Mapping[str, str]] = None,
        pin_memory: str = "auto",
        pin_device: Optional[int] = None,
        huge_pages: bool = True,
        storage_options: Optional[Mapping[str, str]] = None,
        storage_config: Optional[str] = None,
        resume: Optional[str] = None,
        epoch: int = 0,
    ) -> "Loader": ...
    def __iter__(self) -> "Loader": ...
    def __next__(self) -> Dict[str, Any]: ...
    def __len__(self) -> int: ...
    @property
    def epoch(self) -> int: ...
    @property
    def batches_handed(self) -> int: ...
    @property
    def columns(self) -> List[str]: ...
    @property
    def closed(self) -> bool: ...
    def set_epoch(self, epoch: int) -> None: ...
    def state_json(self) -> str: ...
    def state_after_json(self, batches: int) -> str: ...
    def load_state_json(self, state: str) -> None: ...
    def stats_json(self) -> str: ...
    def warnings(self) -> List[str]: ...
    def close(self) -> None: ...

def index(
    source: Union[str, List[str]],
    output: str,
    *,
    format: str = "auto",
    include: Optional[List[str]] = None,
    exclude: Optional[List[str]] = None,
    concurrency: int = 16,
    storage_options: Optional[Mapping[str, str]] = None,
    skip_bad: bool = False,
) -> Dict[str, Any]: ...
def inspect(manifest: str, *, storage_options: Optional[Mapping[str, str]] = None) -> Dict[str, Any]: ...
def shard_index_main(argv: List[str]) -> int: ...
