"""A loader used in a forked child raises a clear error instead of hanging, and the child can
still make its own loader."""

import os
import time

import pytest

import shardstream


def wait_for(pid, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_use_after_fork_raises_and_a_new_loader_works(ss_dataset, tmp_path):
    loader = shardstream.Loader(ss_dataset.manifest, batch_size=50, output="numpy")
    it = iter(loader)
    first = next(it)  # threads are running now
    report = tmp_path / "child.txt"
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            lines = []
            for call in (lambda: next(it), loader.state_dict, lambda: len(loader), loader.stats):
                try:
                    call()
                    lines.append("no error")
                except shardstream.ShardStreamError as e:
                    lines.append(type(e).__name__ + ": " + str(e))
            fresh = shardstream.Loader(ss_dataset.manifest, batch_size=50, output="numpy")
            lines.append(f"fresh loader: {sum(1 for _ in fresh)} batches")
            del loader  # dropping the inherited loader must not hang either
            report.write_text("\n".join(lines))
            code = 0
        finally:
            os._exit(code)
    assert wait_for(pid) == 0
    lines = report.read_text().splitlines()
    for line in lines[:4]:
        assert line.startswith("ShardStreamError: this Loader was created in process"), line
        assert "create the Loader inside the worker" in line
        assert "shardstream.torch.ShardStreamDataset" in line
    assert lines[4] == "fresh loader: 20 batches"
    # The parent's loader is unaffected.
    assert len(first["id"]) == 50
    assert 1 + sum(1 for _ in it) == 20
