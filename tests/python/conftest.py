"""Shared fixtures: where the built binaries and the shared real-world test data are."""

import json
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TESTDATA = pathlib.Path(os.environ.get("SHARDSTREAM_TESTDATA", ROOT.parent / "shared" / "testdata"))


def bin_path(name: str) -> pathlib.Path:
    base = pathlib.Path(os.environ.get("SHARDSTREAM_BIN_DIR", ROOT / "target" / "debug"))
    path = base / name
    if not path.exists():
        raise RuntimeError(f"{path} not built: run `cargo build --workspace --bins` (scripts/test does)")
    return path


def run_index(*args: str) -> subprocess.CompletedProcess:
    """Runs shard-index; never raises on a non-zero exit (tests look at the result)."""
    return subprocess.run([str(bin_path("shard-index")), *args], capture_output=True, text=True, timeout=120)


def build_json(source: str, output: pathlib.Path, *extra: str) -> dict:
    res = run_index("build", source, "-o", str(output), "--json", *extra)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture
def testdata() -> pathlib.Path:
    assert TESTDATA.is_dir(), f"shared test data not found at {TESTDATA}"
    return TESTDATA
