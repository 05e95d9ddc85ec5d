"""Many consumers: simulated ranks × DataLoader workers, resume in a new process, elastic
resume onto fewer ranks, and processes sharing one cache directory."""

import collections
import json

import numpy as np
import pytest

import shardstream


def real_ids(batch):
    ids = np.asarray(batch["__index__"]).tolist()
    padded = np.asarray(batch["__padded__"]).tolist()
    return [i for i, p in zip(ids, padded) if not p]


def test_four_ranks_times_two_dataloader_workers_exactly_once(ss_dataset):
    torch = pytest.importorskip("torch")
    from shardstream.torch import ShardStreamDataset

    world, batch = 4, 12
    counts = collections.Counter()
    per_rank_batches = []
    for rank in range(world):
        ds = ShardStreamDataset(ss_dataset.manifest, batch_size=batch, rank=rank, world_size=world, seed=5)
        dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
        got = list(dl)
        assert len(got) == len(ds) == len(dl)
        # The DataLoader reads its workers in turn, so batches come in plan order.
        assert [b["__batch__"] for b in got] == list(range(len(got)))
        for b in got:
            assert isinstance(b["id"], torch.Tensor) and b["id"].shape == (batch,)
            assert b["text"][0].startswith("sample ")
            counts.update(real_ids(b))
        per_rank_batches.append(len(got))
    assert len(set(per_rank_batches)) == 1, per_rank_batches
    assert sorted(counts) == list(range(ss_dataset.samples))
    assert max(counts.values()) == 1


def test_dataset_state_dict_resumes_in_a_dataloader(ss_dataset):
    torch = pytest.importorskip("torch")
    from shardstream.torch import ShardStreamDataset

    kw = dict(batch_size=20, seed=9)
    ds = ShardStreamDataset(ss_dataset.manifest, **kw)
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    seen = []
    for step, b in enumerate(dl):
        seen.extend(real_ids(b))
        if step == 6:
            state = ds.state_dict(b["__batch__"] + 1)
            break
    del dl
    ds2 = ShardStreamDataset(ss_dataset.manifest, **kw)
    ds2.load_state_dict(json.loads(json.dumps(state)))
    assert len(ds2) == 50 - 7
    rest = [i for b in torch.utils.data.DataLoader(ds2, batch_size=None, num_workers=2) for i in real_ids(b)]
    assert sorted(seen + rest) == list(range(1000))
    # The next epoch starts from its beginning.
    ds2.set_epoch(1)
    assert len(ds2) == 50


RESUME_SCRIPT = """
import json, sys
import numpy as np
import shardstream

manifest, state_file, out_file, phase, rank, world, rpn, batch = sys.argv[1:9]
loader = shardstream.Loader(manifest, batch_size=int(batch), rank=int(rank), world_size=int(world),
                            ranks_per_node=int(rpn), seed=42, output="numpy")
if phase == "resume":
    with open(state_file) as f:
        loader.load_state_dict(json.load(f))
ids = []
take = int(sys.argv[9]) if len(sys.argv) > 9 else None
for k, b in enumerate(loader):
    ids.extend(i for i, p in zip(b["__index__"].tolist(), b["__padded__"].tolist()) if not p)
    if take is not None and k + 1 == take:
        break
if phase == "first" and rank == "0":
    with open(state_file, "w") as f:
        json.dump(loader.state_dict(), f)
with open(out_file, "w") as f:
    json.dump({"ids": ids, "len": len(loader), "state": loader.state_dict()}, f)
"""


def run_rank(run_python, tmp_path, manifest, phase, rank, world, rpn, batch, take=None):
    out = tmp_path / f"{phase}-{rank}-of-{world}.json"
    args = [manifest, str(tmp_path / "state.json"), str(out), phase, str(rank), str(world), str(rpn), str(batch)]
    if take is not None:
        args.append(str(take))
    run_python(RESUME_SCRIPT, *args)
    return json.loads(out.read_text())


def test_resume_mid_epoch_in_a_new_process(ss_dataset, run_python, tmp_path):
    full = run_rank(run_python, tmp_path, ss_dataset.manifest, "full", 0, 1, 1, 32)
    first = run_rank(run_python, tmp_path, ss_dataset.manifest, "first", 0, 1, 1, 32, take=13)
    rest = run_rank(run_python, tmp_path, ss_dataset.manifest, "resume", 0, 1, 1, 32)
    assert first["ids"] + rest["ids"] == full["ids"]
    assert rest["len"] == full["len"] - 13


def test_elastic_resume_from_four_ranks_to_two(ss_dataset, run_python, tmp_path):
    # 2 nodes x 2 ranks x 10 = global batch 40; resumed on 1 node x 2 ranks x 20 = 40.
    first = [run_rank(run_python, tmp_path, ss_dataset.manifest, "first", r, 4, 2, 10, take=7) for r in range(4)]
    states = [f["state"] for f in first]
    assert all(s == states[0] for s in states), "every rank saves the same state"
    assert states[0]["samples_consumed"] == 7 * 40
    rest = [run_rank(run_python, tmp_path, ss_dataset.manifest, "resume", r, 2, 2, 20) for r in range(2)]
    assert rest[0]["len"] == rest[1]["len"], "equal batch counts after resuming"
    counts = collections.Counter()
    for part in first + rest:
        counts.update(part["ids"])
    assert sorted(counts) == list(range(ss_dataset.samples)), "nothing lost"
    assert max(counts.values()) == 1, "nothing repeated"


CACHE_SCRIPT = """
import json, sys
import shardstream
manifest, cache, out, options = sys.argv[1:5]
loader = shardstream.Loader(manifest, batch_size=50, seed=1, output="numpy", cache_dir=cache,
                            cache_limit="64MiB", storage_options=json.loads(options))
ids = [i for b in loader for i in b["__index__"].tolist()]
json.dump({"ids": ids, "stats": loader.stats()}, open(out, "w"))
"""


def test_processes_sharing_one_cache_dir(s3_dataset, tmp_path):
    import subprocess
    import sys
    import textwrap

    server, manifest, data = s3_dataset
    cache = tmp_path / "cache"
    procs = []
    for i in range(3):
        out = tmp_path / f"cache-{i}.json"
        args = [sys.executable, "-c", textwrap.dedent(CACHE_SCRIPT), manifest, str(cache), str(out),
                json.dumps(server.storage_options)]
        procs.append((subprocess.Popen(args, stderr=subprocess.PIPE, text=True), out))
    results = []
    for p, out in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.read_text()))
    assert all(r["ids"] == results[0]["ids"] for r in results), "same data in every process"
    assert sorted(results[0]["ids"]) == list(range(data.samples))
    assert any(cache.rglob("*")), "the cache directory was used"
    # A later process reads everything from the warm cache.
    out = tmp_path / "cache-warm.json"
    subprocess.run([sys.executable, "-c", textwrap.dedent(CACHE_SCRIPT), manifest, str(cache), str(out),
                    json.dumps(server.storage_options)], check=True, timeout=120)
    warm = json.loads(out.read_text())
    assert warm["ids"] == results[0]["ids"]
    assert warm["stats"]["bytes_from_cache"] > 0 and warm["stats"]["bytes_fetched"] == 0, warm["stats"]
