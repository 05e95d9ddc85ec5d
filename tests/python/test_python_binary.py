"""Binary and string columns as uint8 tensors (`binary_mode`), against the default lists."""

import numpy as np
import pytest

import shardstream
from conftest import run_index


@pytest.fixture(scope="session")
def blob_dataset(tmp_path_factory):
    """600 samples of PLAIN Parquet with a 100-byte `blob` (fast path) and `text`."""
    root = tmp_path_factory.mktemp("blob-data")
    res = run_index(
        "generate", str(root / "data"), "--format", "parquet", "--samples", "600", "--shards", "3",
        "--tokens", "4..8", "--row-group-rows", "50", "--blob-bytes", "100", "--plain",
    )
    assert res.returncode == 0, res.stderr
    shardstream.index(str(root / "data"), str(root / "manifest.parquet"))
    return str(root / "manifest.parquet")


def batches(manifest, **kw):
    return list(shardstream.Loader(manifest, batch_size=64, seed=3, columns=["id", "blob", "text"], **kw))


def test_ragged_and_padded_bytes_equal_the_default_lists(blob_dataset):
    torch = pytest.importorskip("torch")
    want = batches(blob_dataset, output="numpy")
    assert isinstance(want[0]["blob"], list) and isinstance(want[0]["blob"][0], bytes), "default kept"
    assert isinstance(want[0]["text"][0], str)
    ragged = batches(blob_dataset, binary_mode="ragged")
    padded = batches(blob_dataset, binary_mode="padded", output="numpy")
    assert len(want) == len(ragged) == len(padded)
    for w, r, p in zip(want, ragged, padded):
        assert list(r)[:5] == ["id", "blob", "blob_offsets", "text", "text_offsets"]
        assert r["blob"].dtype == torch.uint8 and r["blob"].dim() == 1
        assert r["blob_offsets"].dtype == torch.int64 and r["blob_offsets"].shape == (len(w["blob"]) + 1,)
        assert p["blob"].dtype == np.uint8 and p["blob"].shape == (len(w["blob"]), 100), "equal lengths: exact"
        for col in ("blob", "text"):
            offs = r[f"{col}_offsets"].tolist()
            for row, value in enumerate(w[col]):
                raw = value if isinstance(value, bytes) else value.encode()
                assert bytes(r[col][offs[row] : offs[row + 1]].numpy()) == raw
                n = int(p[f"{col}_lengths"][row])
                assert n == len(raw) and p[col][row, :n].tobytes() == raw
                assert not p[col][row, n:].any(), "padding is zeros"


def test_binary_mode_per_column(blob_dataset):
    b = batches(blob_dataset, binary_mode={"blob": "ragged"}, output="numpy")[0]
    assert b["blob"].dtype == np.uint8 and "blob_offsets" in b
    assert isinstance(b["text"], list) and "text_offsets" not in b


def test_bad_binary_mode_is_a_config_error(blob_dataset):
    with pytest.raises(shardstream.ConfigError, match="binary mode"):
        shardstream.Loader(blob_dataset, batch_size=8, binary_mode="tensor")
