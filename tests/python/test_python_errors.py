"""Bad input raises typed exceptions that name the object and say what to do."""

import json

import pytest

import shardstream


def test_hierarchy():
    assert issubclass(shardstream.ConfigError, shardstream.ShardStreamError)
    assert issubclass(shardstream.ConfigError, ValueError)
    assert issubclass(shardstream.ColumnNotFoundError, shardstream.ConfigError)
    assert issubclass(shardstream.ResumeStateError, shardstream.ConfigError)
    assert issubclass(shardstream.NotFoundError, shardstream.StorageError)
    assert issubclass(shardstream.NotFoundError, FileNotFoundError)
    assert issubclass(shardstream.AccessDeniedError, PermissionError)
    for cls in (shardstream.ManifestError, shardstream.DecodeError, shardstream.CacheError):
        assert issubclass(cls, shardstream.ShardStreamError)
    assert shardstream.ConfigError.__module__ == "shardstream"
    assert shardstream.ConfigError.__doc__


def test_missing_manifest_is_file_not_found(tmp_path):
    missing = tmp_path / "nope" / "manifest.parquet"
    with pytest.raises(FileNotFoundError) as e:
        shardstream.Loader(str(missing), batch_size=4)
    assert isinstance(e.value, shardstream.ShardStreamError)
    assert str(missing) in str(e.value) and "shard-index build" in str(e.value)


def test_not_a_manifest_is_a_manifest_error(tmp_path):
    bogus = tmp_path / "m.parquet"
    bogus.write_bytes(b"this is not parquet")
    with pytest.raises(shardstream.ManifestError, match="m.parquet"):
        shardstream.Loader(str(bogus), batch_size=4)


def test_batch_size_zero_is_a_config_and_value_error(ss_dataset):
    with pytest.raises(ValueError, match="batch_size") as e:
        shardstream.Loader(ss_dataset.manifest, batch_size=0)
    assert isinstance(e.value, shardstream.ConfigError)
    with pytest.raises(shardstream.ConfigError, match="batch_size"):
        shardstream.Loader(ss_dataset.manifest, batch_size=-3)


def test_unknown_column(ss_dataset):
    with pytest.raises(shardstream.ColumnNotFoundError, match="nope") as e:
        shardstream.Loader(ss_dataset.manifest, batch_size=4, columns=["id", "nope"])
    assert "tokens" in str(e.value), "lists the columns that exist"
    assert isinstance(e.value, shardstream.ConfigError) and isinstance(e.value, ValueError)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(rank=4, world_size=4), "rank 4"),
        (dict(world_size=6, ranks_per_node=4), "multiple"),
        (dict(pin_memory="sometimes"), "pin_memory"),
        (dict(output="jax"), "output"),
        (dict(cache_limit="1GB"), "cache_dir"),
        (dict(prefetch_bytes="lots"), "prefetch_bytes"),
        (dict(list_mode="zigzag"), "list mode"),
        (dict(source=[]), "source"),
        (dict(transform=3), "transform"),
    ],
)
def test_bad_options(ss_dataset, kwargs, needle):
    source = kwargs.pop("source", ss_dataset.manifest)
    with pytest.raises(shardstream.ConfigError, match=needle):
        shardstream.Loader(source, batch_size=4, **kwargs)


def test_cuda_device_without_cuda(ss_dataset):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(shardstream.ConfigError, match="CUDA"):
        shardstream.Loader(ss_dataset.manifest, batch_size=4, device="cuda")


def test_resume_state_from_another_seed_or_manifest(ss_dataset, tmp_path):
    from conftest import generate_dataset

    loader = shardstream.Loader(ss_dataset.manifest, batch_size=10, output="numpy", seed=1)
    it = iter(loader)
    next(it)
    state = loader.state_dict()

    other_seed = shardstream.Loader(ss_dataset.manifest, batch_size=10, output="numpy", seed=2)
    with pytest.raises(shardstream.ResumeStateError, match="seed") as e:
        other_seed.load_state_dict(state)
    assert isinstance(e.value, shardstream.ShardStreamError)
    # The failed load leaves the loader usable.
    assert len(list(other_seed)) == 100

    generate_dataset(tmp_path / "d", 1000, 3)
    other = str(tmp_path / "m.parquet")
    shardstream.index(str(tmp_path / "d"), other)
    with pytest.raises(shardstream.ResumeStateError, match="fingerprint"):
        shardstream.Loader(other, batch_size=10, seed=1).load_state_dict(state)

    bad = dict(state, version=99)
    with pytest.raises(shardstream.ResumeStateError, match="newer"):
        shardstream.Loader(ss_dataset.manifest, batch_size=10, seed=1).load_state_dict(bad)
    with pytest.raises(shardstream.ResumeStateError):
        shardstream.Loader(ss_dataset.manifest, batch_size=10, seed=1).load_state_dict("{not json")


def test_index_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(shardstream.NotFoundError, match="no shards"):
        shardstream.index(str(tmp_path / "empty"), str(tmp_path / "m.parquet"))
    with pytest.raises(shardstream.ConfigError, match="format"):
        shardstream.index(str(tmp_path / "empty"), str(tmp_path / "m.parquet"), format="xml")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.parquet").write_bytes(b"garbage")
    with pytest.raises(shardstream.DecodeError, match="x.parquet"):
        shardstream.index(str(tmp_path / "bad"), str(tmp_path / "m.parquet"))


def test_closed_loader(ss_dataset):
    loader = shardstream.Loader(ss_dataset.manifest, batch_size=10)
    loader.close()
    with pytest.raises(shardstream.ShardStreamError, match="closed"):
        next(iter(loader))
    # stats() reads no engine, but its handle (which holds the buffer pool) goes with close() too.
    with pytest.raises(shardstream.ShardStreamError, match="closed"):
        loader.stats()


def test_state_is_small_json(ss_dataset):
    loader = shardstream.Loader(ss_dataset.manifest, batch_size=10)
    assert len(json.dumps(loader.state_dict())) < 1000
