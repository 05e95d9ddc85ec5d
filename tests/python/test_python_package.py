"""The installed package: public names documented, type stubs that match the extension, the
`shard-index` command, and inspect()."""

import json
import os
import shutil
import subprocess
import sys
import pathlib

import pytest

import shardstream


def test_every_public_name_has_a_docstring():
    pytest.importorskip("torch")
    import shardstream.torch

    missing = []
    for name in shardstream.__all__:
        obj = getattr(shardstream, name)
        if callable(obj) and not (obj.__doc__ or "").strip():
            missing.append(name)
    for cls in (shardstream.Loader, shardstream.torch.ShardStreamDataset):
        for attr, value in vars(cls).items():
            if not attr.startswith("_") and callable(getattr(value, "fget", value)):
                if not (getattr(value, "__doc__", None) or getattr(getattr(value, "fget", None), "__doc__", None)):
                    missing.append(f"{cls.__name__}.{attr}")
    assert not missing, missing


def test_typed_package_and_stubs_present():
    root = pathlib.Path(shardstream.__file__).parent
    assert (root / "py.typed").exists()
    assert (root / "_native.pyi").exists()


def test_stubs_match_the_extension(tmp_path):
    pytest.importorskip("mypy")
    res = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "shardstream._native", "--ignore-missing-stub"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=dict(os.environ, MYPY_CACHE_DIR=str(tmp_path / "mypy-cache")),
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_shard_index_command(ss_dataset, tmp_path):
    exe = shutil.which("shard-index", path=os.path.dirname(sys.executable))
    assert exe, "pip install puts a shard-index command next to the interpreter"
    out = tmp_path / "m.parquet"
    res = subprocess.run([exe, "build", str(ss_dataset.dir), "-o", str(out), "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["samples"] == 1000 and summary["shards"] == 6
    res = subprocess.run([exe, "inspect", str(out)], capture_output=True, text=True)
    assert res.returncode == 0 and "samples      1000" in res.stdout, res.stdout + res.stderr
    res = subprocess.run([exe, "inspect", str(tmp_path / "missing.parquet")], capture_output=True, text=True)
    assert res.returncode == 1 and "missing.parquet" in res.stderr
    # The whole command line is there, not just build/inspect: verify, plan, bad arguments.
    res = subprocess.run([exe, "verify", str(out), "--deep", "--json"], capture_output=True, text=True)
    assert res.returncode == 0 and json.loads(res.stdout)["ok"] == 6, res.stdout + res.stderr
    res = subprocess.run([exe, "plan", str(out), "--batch-size", "8", "--json"], capture_output=True, text=True)
    assert res.returncode == 0 and json.loads(res.stdout)["total_samples"] == 1000, res.stderr
    res = subprocess.run([exe, "plan", str(out)], capture_output=True, text=True)
    assert res.returncode == 2 and "--batch-size" in res.stderr


def test_inspect_matches_the_rust_cli(ss_dataset):
    from conftest import run_index

    ours = shardstream.inspect(ss_dataset.manifest)
    res = run_index("inspect", ss_dataset.manifest, "--json")
    assert res.returncode == 0, res.stderr
    assert ours == json.loads(res.stdout)


def test_numpy_output_does_not_import_torch(ss_dataset, run_python):
    res = run_python(
        """
        import sys
        import shardstream
        loader = shardstream.Loader(sys.argv[1], batch_size=100, output="numpy")
        assert sum(len(b["id"]) for b in loader) == 1000
        print("torch" in sys.modules)
        """,
        ss_dataset.manifest,
    )
    assert res.stdout.strip() == "False"
