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
        raise RuntimeError(f"{path} not built: run `cargo test --workspace` (scripts/test does)")
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


# ---- fixtures for the Python package's tests (tests/python/test_python_*.py) ----

import dataclasses
import subprocess as _subprocess
import sys as _sys
import textwrap as _textwrap


def _splitmix64(x: int) -> int:
    mask = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return x ^ (x >> 31)


@dataclasses.dataclass
class GeneratedDataset:
    """A `shard-index generate` dataset: sample `i` has `id` i, `text` f"sample {i} says hello"
    and `tokens` as `expected_tokens(i)`."""

    dir: pathlib.Path
    manifest: str
    samples: int
    tokens_min: int
    tokens_max: int

    def expected_tokens(self, i: int) -> list:
        span = self.tokens_max - self.tokens_min + 1
        n = self.tokens_min + _splitmix64(i) % span
        return [(i * 31 + j * 7) % 50_000 for j in range(n)]


def generate_dataset(directory: pathlib.Path, samples: int, shards: int, *, tokens=(4, 24), row_group_rows=64) -> None:
    res = run_index(
        "generate", str(directory), "--format", "parquet", "--samples", str(samples), "--shards", str(shards),
        "--tokens", f"{tokens[0]}..{tokens[1]}", "--row-group-rows", str(row_group_rows),
    )
    assert res.returncode == 0, res.stderr


@pytest.fixture(scope="session")
def ss_dataset(tmp_path_factory) -> GeneratedDataset:
    """1000 samples in 6 uneven Parquet shards with small row groups, indexed by the binding."""
    import shardstream

    root = tmp_path_factory.mktemp("ss-data")
    generate_dataset(root / "data", 1000, 6)
    shardstream.index(str(root / "data"), str(root / "manifest.parquet"))
    return GeneratedDataset(root / "data", str(root / "manifest.parquet"), 1000, 4, 24)


class S3TestServer:
    """`s3-test-server` (s3s-fs) serving a directory on loopback until stopped."""

    def __init__(self, root: pathlib.Path, bucket: str = "test-bucket", latency_ms: int = 0):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.bucket = bucket
        args = [str(bin_path("s3-test-server")), str(root), "--bucket", bucket]
        if latency_ms:
            args += ["--latency-ms", str(latency_ms)]
        self.proc = _subprocess.Popen(args, stdin=_subprocess.PIPE, stdout=_subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line, "s3-test-server did not start"
        info = json.loads(line)
        self.endpoint = info["endpoint"]
        self.storage_options = {
            "aws_endpoint": info["endpoint"],
            "aws_access_key_id": info["access_key"],
            "aws_secret_access_key": info["secret_key"],
            "aws_region": info["region"],
            "aws_allow_http": "true",
        }

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # the server exits when stdin closes
            try:
                self.proc.wait(timeout=10)
            except _subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def s3_dataset(tmp_path_factory):
    """(server, manifest URL, GeneratedDataset): 600 samples in 4 shards served over S3 on
    loopback, indexed through S3 by the binding."""
    import shardstream

    root = tmp_path_factory.mktemp("ss-s3")
    generate_dataset(root / "test-bucket" / "ds", 600, 4)
    server = S3TestServer(root)
    try:
        manifest = server.url("ds/manifest.parquet")
        shardstream.index(server.url("ds/"), manifest, storage_options=server.storage_options)
        yield server, manifest, GeneratedDataset(root / "test-bucket" / "ds", manifest, 600, 4, 24)
    finally:
        server.stop()


@pytest.fixture
def run_python():
    """Runs Python code in a fresh interpreter of this venv; returns the CompletedProcess."""

    def run(code: str, *args: str, timeout: float = 120, check: bool = True) -> _subprocess.CompletedProcess:
        res = _subprocess.run(
            [_sys.executable, "-c", _textwrap.dedent(code), *args], capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
        return res

    return run
