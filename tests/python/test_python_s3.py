"""Over S3 on loopback (the s3s-fs test server): training a small torch model, indexing and
inspecting through S3, and Ctrl-C while a batch is stuck behind a slow store."""

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import shardstream
from conftest import S3TestServer


def test_train_a_small_model_from_s3(s3_dataset):
    torch = pytest.importorskip("torch")
    server, manifest, data = s3_dataset
    torch.manual_seed(0)
    # Predict a sample's token count from its tokens: EmbeddingBag(sum) over ragged lists.
    bag = torch.nn.EmbeddingBag(1024, 8, mode="sum")
    head = torch.nn.Linear(8, 1)
    opt = torch.optim.Adam(list(bag.parameters()) + list(head.parameters()), lr=0.05)
    loader = shardstream.Loader(
        manifest,
        batch_size=32,
        columns=["tokens", "id"],
        list_mode="ragged",
        storage_options=server.storage_options,
        seed=3,
    )
    losses = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        for batch in loader:
            offsets = batch["tokens_offsets"]
            lengths = (offsets[1:] - offsets[:-1]).float()
            pred = head(bag(batch["tokens"] % 1024, offsets[:-1])).squeeze(1)
            loss = torch.nn.functional.mse_loss(pred, lengths / 24)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert len(losses) == 2 * len(loader) == 2 * 19
    assert all(l == l for l in losses), "finite"
    assert sum(losses[-5:]) < sum(losses[:5]), losses
    stats = loader.stats()
    assert stats["requests"] > 0 and stats["samples"] == 2 * 19 * 32


def test_inspect_through_s3(s3_dataset):
    server, manifest, data = s3_dataset
    info = shardstream.inspect(manifest, storage_options=server.storage_options)
    assert info["samples"] == data.samples and info["shards"] == 4
    assert info["sources"] == [server.url("ds")]
    assert [f["name"] for f in info["schema"]] == ["id", "tokens", "text"]


def test_wrong_credentials_are_access_denied(s3_dataset):
    server, manifest, _ = s3_dataset
    options = dict(server.storage_options, aws_secret_access_key="wrong")
    with pytest.raises(shardstream.StorageError) as e:
        shardstream.Loader(manifest, batch_size=8, storage_options=options)
    assert isinstance(e.value, PermissionError), repr(e.value)


CTRL_C_SCRIPT = """
import json, signal, sys, time
# A shell starting a job in the background (CI runners, nohup) ignores SIGINT for it, and Python
# keeps an inherited "ignore": install the interactive handler, whatever started us.
signal.signal(signal.SIGINT, signal.default_int_handler)
import shardstream
manifest, options = sys.argv[1], json.loads(sys.argv[2])
options["max_retries"] = "0"
loader = shardstream.Loader(manifest, batch_size=8, output="numpy", storage_options=options)
print("ready", flush=True)
try:
    next(iter(loader))
    print("got a batch", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    raise
"""


def test_ctrl_c_interrupts_a_blocked_iteration(s3_dataset, tmp_path):
    _, _, data = s3_dataset
    # A second server over the same files, answering every request after 2 s.
    slow = S3TestServer(data.dir.parent.parent, bucket="test-bucket", latency_ms=2000)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CTRL_C_SCRIPT), slow.url("ds/manifest.parquet"),
             json.dumps(slow.storage_options)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(0.5)  # now blocked waiting for the first batch (footer + row group: >= 4 s)
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=10)
            elapsed = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert "interrupted" in out and "got a batch" not in out, (out, err)
        assert "KeyboardInterrupt" in err
        assert proc.returncode != 0
        assert elapsed < 3, f"took {elapsed:.2f}s to react to SIGINT (a batch takes >= 4 s)"
    finally:
        slow.stop()


def test_stats_and_shape_answer_while_another_thread_waits_for_a_batch(s3_dataset):
    _, _, data = s3_dataset
    # Every request waits 1 s: the first batch needs a footer and a row group, >= 2 s.
    slow = S3TestServer(data.dir.parent.parent, bucket="test-bucket", latency_ms=1000)
    try:
        loader = shardstream.Loader(
            slow.url("ds/manifest.parquet"), batch_size=8, output="numpy", storage_options=slow.storage_options
        )
        waiting, got = threading.Event(), threading.Event()

        def consume() -> None:
            it = iter(loader)
            waiting.set()
            next(it)
            got.set()

        consumer = threading.Thread(target=consume)
        consumer.start()
        assert waiting.wait(10)
        time.sleep(0.3)  # the consumer is now inside __next__, holding the engine
        stats = loader.stats()
        length, epoch, columns, text = len(loader), loader.epoch, loader.columns, repr(loader)
        answered_first = not got.is_set()
        consumer.join(30)
        assert answered_first, "stats(), len(), .epoch, .columns or repr() waited for the batch another thread was waiting for"
        assert stats["batches"] == 0
        assert (length, epoch) == (len(loader), 0) and length > 0
        assert columns == loader.columns and "id" in columns
        assert f"epoch=0, batches={length}" in text
        assert loader.stats()["batches"] == 1
    finally:
        slow.stop()


def test_per_source_storage_config_routes_each_source(s3_dataset, tmp_path):
    server, _, data = s3_dataset
    local_manifest = str(tmp_path / "manifest.parquet")
    shardstream.index(
        server.url("ds/"), local_manifest, include=["part-*"], storage_options=server.storage_options
    )
    # The shared options point nowhere useful; only the per-source rule names the endpoint.
    base = dict(server.storage_options, aws_endpoint="http://127.0.0.1:9")
    rules = {"sources": [{"match": server.url("ds"), "options": {"aws_endpoint": server.endpoint}}]}
    config_file = tmp_path / "storage.json"
    config_file.write_text(json.dumps(rules))
    for config in (rules, config_file):
        loader = shardstream.Loader(
            local_manifest, batch_size=50, columns=["id"], storage_options=base, storage_config=config
        )
        ids = sorted(int(i) for batch in loader for i in batch["id"])
        assert ids == list(range(data.samples))
    with pytest.raises(shardstream.ConfigError, match="storage_config"):
        shardstream.Loader(local_manifest, batch_size=8, storage_config={"sources": [{"match": "x", "nope": 1}]})
    with pytest.raises(shardstream.ConfigError, match="storage_config"):
        shardstream.Loader(local_manifest, batch_size=8, storage_config=tmp_path / "missing.json")
