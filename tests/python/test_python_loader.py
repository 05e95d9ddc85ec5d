"""shardstream.Loader in one process: batch contents, layouts, outputs, epochs, zero-copy,
resume, native workers and topology — against a generated dataset whose every byte is known."""

import collections
import gc
import json

import numpy as np
import pytest

import shardstream


def real_ids(batch):
    """Global ids of the batch's real (not padded) samples."""
    ids = np.asarray(batch["__index__"]).tolist()
    padded = np.asarray(batch["__padded__"]).tolist()
    return [i for i, p in zip(ids, padded) if not p]


def all_ids(loader):
    out = []
    for b in loader:
        out.extend(real_ids(b))
    return out


def test_contents_match_the_generated_data_numpy(ss_dataset):
    loader = shardstream.Loader(ss_dataset.manifest, batch_size=50, output="numpy", seed=3)
    seen = []
    for b in loader:
        assert isinstance(b["id"], np.ndarray) and b["id"].dtype == np.int64
        assert b["tokens"].dtype == np.int32 and b["tokens"].ndim == 2
        assert b["tokens_lengths"].dtype == np.int64
        assert b["__padded__"].dtype == np.bool_
        assert isinstance(b["text"], list) and isinstance(b["text"][0], str)
        assert (b["id"] == b["__index__"]).all()
        for row, i in enumerate(b["id"].tolist()):
            assert b["text"][row] == f"sample {i} says hello"
            want = ss_dataset.expected_tokens(i)
            n = int(b["tokens_lengths"][row])
            assert b["tokens"][row, :n].tolist() == want
            assert not b["tokens"][row, n:].any(), "padding is zeros"
        seen.extend(real_ids(b))
    assert sorted(seen) == list(range(ss_dataset.samples))
    assert seen != sorted(seen), "shuffled"
    assert len(loader) == 20


def test_torch_output_and_ragged_lists(ss_dataset):
    torch = pytest.importorskip("torch")
    loader = shardstream.Loader(ss_dataset.manifest, batch_size=64, list_mode="ragged", columns=["tokens", "id"])
    b = next(iter(loader))
    assert list(b)[:3] == ["tokens", "tokens_offsets", "id"]
    assert isinstance(b["tokens"], torch.Tensor) and b["tokens"].dim() == 1
    offsets = b["tokens_offsets"]
    assert offsets.shape == (65,) and offsets[0] == 0 and offsets[-1] == b["tokens"].numel()
    for row, i in enumerate(b["id"].tolist()):
        assert b["tokens"][offsets[row] : offsets[row + 1]].tolist() == ss_dataset.expected_tokens(i)
    assert b["__padded__"].dtype == torch.bool


def test_same_seed_same_order_other_epoch_other_order(ss_dataset):
    def order(seed, epoch):
        loader = shardstream.Loader(ss_dataset.manifest, batch_size=100, output="numpy", seed=seed, epoch=epoch)
        return all_ids(loader)

    a = order(7, 0)
    assert a == order(7, 0)
    assert a != order(7, 1)
    assert a != order(8, 0)
    assert sorted(order(7, 1)) == sorted(a)


def test_no_shuffle_keeps_manifest_order(ss_dataset):
    loader = shardstream.Loader(ss_dataset.manifest, batch_size=100, output="numpy", shuffle=False)
    assert all_ids(loader) == list(range(ss_dataset.samples))


def test_epochs_set_epoch_and_iterating_again(ss_dataset):
    loader = shardstream.Loader(ss_dataset.manifest, batch_size=300, output="numpy")
    assert len(loader) == 4  # 1000 samples: the last batch is padded
    first = all_ids(loader)
    assert sorted(first) == list(range(1000)) and loader.epoch == 0
    # Iterating again after a finished epoch moves on to the next one.
    second = all_ids(loader)
    assert loader.epoch == 1 and sorted(second) == list(range(1000)) and second != first
    # set_epoch(0) replays epoch 0 exactly.
    loader.set_epoch(0)
    assert all_ids(loader) == first
    # Breaking out mid-epoch and iterating again continues where it stopped.
    loader.set_epoch(0)
    it = iter(loader)
    head = real_ids(next(it))
    rest = all_ids(loader)
    assert head + rest == first


def test_padding_and_drop_last(ss_dataset):
    loader = shardstream.Loader(ss_dataset.manifest, batch_size=300, output="numpy")
    batches = list(loader)
    padded = sum(int(b["__padded__"].sum()) for b in batches)
    assert padded == 4 * 300 - 1000
    assert all(len(b["__index__"]) == 300 for b in batches)
    loader = shardstream.Loader(ss_dataset.manifest, batch_size=300, output="numpy", drop_last=True)
    batches = list(loader)
    assert len(batches) == 3 and not any(b["__padded__"].any() for b in batches)


def test_zero_copy_into_torch_and_numpy(ss_dataset):
    torch = pytest.importorskip("torch")
    loader = shardstream.Loader(ss_dataset.manifest, batch_size=32, output="dlpack")
    b = next(iter(loader))
    t = b["id"]
    assert isinstance(t, shardstream.Tensor)
    assert t.shape == (32,) and t.dtype == "int64" and t.nbytes == 32 * 8
    # Pageable buffers under a page are cache-line aligned, larger ones page-aligned.
    assert t.ptr % 64 == 0, "small pooled buffers are cache-line aligned"
    big = next(iter(shardstream.Loader(ss_dataset.manifest, batch_size=512, output="dlpack")))
    assert big["id"].nbytes == 4096 and big["id"].ptr % 4096 == 0, "a page or more: page-aligned"
    assert t.__dlpack_device__() == (1, 0)
    tt = torch.from_dlpack(t)
    arr = np.from_dlpack(t)
    assert tt.data_ptr() == t.ptr
    assert arr.ctypes.data == t.ptr
    tokens = torch.from_dlpack(b["tokens"])
    assert tokens.data_ptr() == b["tokens"].ptr and tokens.dtype == torch.int32
    # Writes through one view are seen by the other: the memory is shared.
    arr[0] = -5
    assert int(tt[0]) == -5
    # Legacy (unversioned) capsules work too, and copy=True copies.
    legacy = torch.utils.dlpack.from_dlpack(t.__dlpack__())
    assert legacy.data_ptr() == t.ptr
    copied = np.from_dlpack(t, copy=True)
    assert copied.ctypes.data != t.ptr and copied[0] == -5


def test_tensors_outlive_the_loader(ss_dataset):
    torch = pytest.importorskip("torch")
    loader = shardstream.Loader(ss_dataset.manifest, batch_size=40, shuffle=False)
    kept = [next(iter(loader))["id"] for _ in range(3)]
    loader.close()
    del loader
    gc.collect()
    assert torch.cat(kept).tolist() == list(range(120))


class _FakeEvent:
    """Stands in for a recorded torch.cuda.Event: done once the test says the GPU got there."""

    def __init__(self, log):
        self.done = False
        self.waited = False
        log.append(self)

    def query(self):
        return self.done

    def synchronize(self):
        self.waited = True
        self.done = True


def test_copy_guard_holds_a_pinned_batch_until_the_gpu_has_passed_it():
    import weakref

    from shardstream._loader import _CopyGuard

    class Buffer:  # a native tensor's memory: back in the pool once unreferenced
        pass

    events = []
    cuda = {"in_use": False}
    guard = _CopyGuard(lambda: cuda["in_use"], lambda: _FakeEvent(events))
    batches = [[Buffer(), Buffer()] for _ in range(4)]
    alive = [[weakref.ref(b) for b in batch] for batch in batches]

    def handed(i):
        guard.handed_out(batches[i])
        batches[i] = None  # the loop keeps no reference of its own

    handed(0)
    cuda["in_use"] = True  # the loop copied batch 0 to the GPU (which initialised CUDA)
    handed(1)
    gc.collect()
    assert len(events) == 1 and guard.held == 1
    assert all(r() is not None for r in alive[0]), "batch 0 is held while its event is pending"
    handed(2)
    assert guard.held == 2
    events[0].done = True  # the GPU passed the point after batch 0's copies
    handed(3)
    gc.collect()
    assert all(r() is None for r in alive[0]), "batch 0 went back once its event completed"
    assert all(r() is not None for r in alive[1]), "batch 1's event is still pending"
    assert guard.held == 2  # batches 1 and 2; batch 3 is the one last handed out


def test_copy_guard_waits_for_the_oldest_beyond_its_limit_and_on_release():
    from shardstream._loader import _CopyGuard

    events = []
    guard = _CopyGuard(lambda: True, lambda: _FakeEvent(events), max_held=2)
    for i in range(4):
        guard.handed_out([object()])
    # Batches 0, 1 and 2 were retired with an event each; the GPU has passed none of them, so
    # the oldest is waited for to stay within two held batches.
    assert [e.waited for e in events] == [True, False, False] and guard.held == 2
    guard.release()
    assert len(events) == 4 and all(e.waited for e in events) and guard.held == 0


def test_copy_guard_hold_keeps_one_side_stream_copy_in_flight():
    from shardstream._loader import _CopyGuard

    events = []
    guard = _CopyGuard(lambda: False, lambda: pytest.fail("device copies record their own"), max_held=1)
    first, second = _FakeEvent(events), _FakeEvent(events)
    guard.hold(first, [object()])
    assert not first.waited and guard.held == 1
    guard.hold(second, [object()])
    assert first.waited and not second.waited and guard.held == 1
    second.done = True
    guard.hold(_FakeEvent(events), [object()])
    assert not second.waited and guard.held == 1, "a finished copy is let go without waiting"


def test_copy_guard_holds_nothing_without_cuda():
    import weakref

    from shardstream._loader import _CopyGuard

    class Buffer:
        pass

    guard = _CopyGuard(lambda: False, lambda: pytest.fail("no event without CUDA"))
    first = [Buffer()]
    ref = weakref.ref(first[0])
    guard.handed_out(first)
    del first
    guard.handed_out([Buffer()])
    gc.collect()
    assert ref() is None and guard.held == 0


def test_device_moves_tensors_after_the_transform(ss_dataset):
    torch = pytest.importorskip("torch")
    # "meta" stands in for an accelerator here (the CUDA path is the same plus a side stream).
    loader = shardstream.Loader(
        ss_dataset.manifest, batch_size=10, device="meta", transform=lambda b: {"id": b["id"], "text": b["text"]}
    )
    b = next(iter(loader))
    assert b["id"].device.type == "meta" and b["id"].shape == (10,)
    assert isinstance(b["text"], list)


def test_transform_runs_per_batch(ss_dataset):
    calls = []

    def transform(batch):
        calls.append(len(batch["text"]))
        return {"x": batch["id"] * 2, "n": len(batch["text"])}

    loader = shardstream.Loader(ss_dataset.manifest, batch_size=250, output="numpy", transform=transform)
    out = list(loader)
    assert calls == [250] * 4 and all(set(o) == {"x", "n"} for o in out)


def test_state_dict_resume_in_process(ss_dataset):
    kw = dict(batch_size=64, output="numpy", seed=11)
    full = all_ids(shardstream.Loader(ss_dataset.manifest, **kw))
    loader = shardstream.Loader(ss_dataset.manifest, **kw)
    it = iter(loader)
    head = []
    for _ in range(5):
        head.extend(real_ids(next(it)))
    state = loader.state_dict()
    assert json.loads(json.dumps(state)) == state
    assert state["samples_consumed"] == 5 * 64
    resumed = shardstream.Loader(ss_dataset.manifest, **kw)
    resumed.load_state_dict(state)
    assert len(resumed) == len(loader) - 5
    assert head + all_ids(resumed) == full
    # A finished epoch's state resumes into the next epoch.
    done = resumed.state_dict()
    again = shardstream.Loader(ss_dataset.manifest, **kw)
    again.load_state_dict(json.dumps(done))
    nxt = all_ids(again)
    assert again.epoch == 1 and sorted(nxt) == list(range(1000))


def test_ranks_partition_the_epoch_and_share_one_state(ss_dataset):
    world = 4
    loaders = [
        shardstream.Loader(ss_dataset.manifest, batch_size=16, output="numpy", rank=r, world_size=world)
        for r in range(world)
    ]
    lens = {len(l) for l in loaders}
    assert len(lens) == 1, "every rank gets the same number of batches"
    ids = collections.Counter()
    iters = [iter(l) for l in loaders]
    for _ in range(3):
        for it in iters:
            ids.update(real_ids(next(it)))
    states = [l.state_dict() for l in loaders]
    assert all(s == states[0] for s in states), "after equal batch counts every rank has one state"
    for l in loaders:
        ids.update(all_ids(l))
    assert sorted(ids) == list(range(1000)) and max(ids.values()) == 1


def test_native_workers_split_a_rank_exactly_once(ss_dataset):
    full = shardstream.Loader(ss_dataset.manifest, batch_size=40, output="numpy")
    expected = [real_ids(b) for b in full]
    workers = [
        shardstream.Loader(ss_dataset.manifest, batch_size=40, output="numpy", worker=(w, 3)) for w in range(3)
    ]
    assert sum(len(w) for w in workers) == len(expected)
    per_worker = [[real_ids(b) for b in w] for w in workers]
    merged = []
    for k in range(len(expected)):
        merged.append(per_worker[k % 3][k // 3])
    assert merged == expected


def test_weighted_streams_are_mixed_and_labelled(ss_dataset, tmp_path):
    from conftest import generate_dataset

    generate_dataset(tmp_path / "other", 400, 2)
    other = str(tmp_path / "other.parquet")
    shardstream.index(str(tmp_path / "other"), other)
    loader = shardstream.Loader(
        [(ss_dataset.manifest, 3.0), (other, 1.0)], batch_size=100, output="numpy", epoch_size=800
    )
    per_stream = collections.Counter()
    for b in loader:
        keep = ~b["__padded__"]
        for s in b["__stream__"][keep].tolist():
            per_stream[s] += 1
    assert per_stream == {0: 600, 1: 200}


def test_stats(ss_dataset):
    loader = shardstream.Loader(ss_dataset.manifest, batch_size=100, output="numpy")
    list(loader)
    s = loader.stats()
    assert s["batches"] == 10 and s["samples"] == 1000 and s["padded_samples"] == 0
    assert s["bytes_fetched"] > 0 and s["memory"] in ("pinned", "pageable")
    assert s["read_amplification"] >= 1.0


def test_a_look_ahead_too_small_for_the_window_warns_and_still_delivers_everything(ss_dataset):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shardstream.Loader(ss_dataset.manifest, batch_size=100, output="numpy").close()
    with pytest.warns(shardstream.PerformanceWarning, match=r"prefetch_bytes \(1000\) is below two shuffle windows") as caught:
        loader = shardstream.Loader(ss_dataset.manifest, batch_size=100, output="numpy", prefetch_bytes=1000)
    # The warning points at the caller's line, not into the package.
    assert caught[0].filename == __file__
    ids = all_ids(loader)
    assert sorted(ids) == list(range(1000))
    assert loader.stats()["units_reread"] > 0


def test_huge_pages_off_maps_the_same_batches(ss_dataset, tmp_path):
    # The huge-page advice only changes how files are mapped, never what a batch holds:
    # straight from the files and through the disk cache, on and off give the same batches.
    def plain(v):
        return v.to_pylist() if hasattr(v, "to_pylist") else v.tolist() if hasattr(v, "tolist") else v

    def batches(**kw):
        loader = shardstream.Loader(ss_dataset.manifest, batch_size=64, output="numpy", seed=5, **kw)
        out = [{k: plain(v) for k, v in b.items()} for b in loader]
        loader.close()
        return out

    on = batches()
    ids = [i for b in on for i, p in zip(b["__index__"], b["__padded__"]) if not p]
    assert sorted(ids) == list(range(1000))
    assert batches(huge_pages=False) == on
    assert batches(huge_pages=False, cache_dir=str(tmp_path / "off")) == on
    assert batches(cache_dir=str(tmp_path / "on")) == on


def test_topology_from_env(monkeypatch):
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert shardstream.topology_from_env() == (2, 4, 5)
    assert shardstream.topology_from_env(rank=1, world_size=2) == (1, 2, 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    with pytest.raises(shardstream.ConfigError, match="multiple"):
        shardstream.topology_from_env()
    for k in ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k)
    assert shardstream.topology_from_env() == (1, 1, 0)


def test_sizes():
    assert shardstream.parse_size("512MiB", "x") == 512 << 20
    assert shardstream.parse_size("10GB", "x") == 10 * 1000**3
    assert shardstream.parse_size(123, "x") == 123
    with pytest.raises(shardstream.ConfigError):
        shardstream.parse_size("lots", "cache_limit")
