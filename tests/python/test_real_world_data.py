"""shard-index against files written by other tools (apache/parquet-testing, webdataset's own
test shards), checked against the reference readers: pyarrow and the webdataset library."""

import json

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from conftest import run_index

# Panics exit with 101; every failure must be a clean error instead.
PANIC = 101


def parquet_files(testdata, sub):
    return sorted((testdata / "parquet-testing" / sub).rglob("*.parquet"))


# Files pyarrow reads but the Rust parquet decoder (arrow-rs 60) does not: each must still be a
# clean, named error, and the list must not grow unnoticed.
UNSUPPORTED_BY_ARROW_RS = {
    # Its column metadata stores a list field with the wrong Thrift element type; arrow-rs's
    # strict footer decoder rejects it ("Expected list element type of I64 but got I16").
    "dict-page-offset-zero.parquet",
}


def pyarrow_rows(path):
    """Rows a reader gets: the sum over row groups (the file-level count is 0 in some old files)."""
    md = pq.ParquetFile(path).metadata
    return sum(md.row_group(i).num_rows for i in range(md.num_row_groups))


def test_every_readable_parquet_file_has_pyarrows_row_count(testdata, tmp_path):
    files = parquet_files(testdata, "data")
    assert len(files) > 50
    agreed, both_refused = 0, []
    for f in files:
        try:
            expected = pyarrow_rows(f)
        except Exception as e:  # pyarrow cannot read it either (e.g. encrypted footers)
            expected = e
        res = run_index("build", str(f), "-o", str(tmp_path / "m.parquet"), "--json")
        assert res.returncode != PANIC, f"{f.name}: panic\n{res.stderr}"
        if f.name in UNSUPPORTED_BY_ARROW_RS:
            assert res.returncode == 1 and f.name in res.stderr, res.stderr
            continue
        if isinstance(expected, Exception):
            # Nothing to compare with (e.g. pyarrow rejects a map schema arrow-rs accepts);
            # either outcome is fine as long as it is clean.
            assert res.returncode == 0 or f.name in res.stderr, res.stderr
            both_refused.append(f.name)
            continue
        assert res.returncode == 0, f"{f.name}: pyarrow reads {expected} rows, we failed: {res.stderr}"
        assert json.loads(res.stdout)["samples"] == expected, f.name
        agreed += 1
    assert agreed >= 50, (agreed, both_refused)


def test_bad_parquet_files_give_clear_errors(testdata, tmp_path):
    files = parquet_files(testdata, "bad_data")
    assert len(files) >= 8
    for f in files:
        manifest = tmp_path / f"{f.stem}.manifest.parquet"
        res = run_index("build", str(f), "-o", str(manifest))
        assert res.returncode != PANIC, f"{f.name}: panic\n{res.stderr}"
        if res.returncode != 0:
            assert f.name in res.stderr and "error:" in res.stderr, res.stderr
            assert not manifest.exists()
            continue
        # The footer was fine; the damage is in the pages, which a deep verify decodes.
        res = run_index("verify", str(manifest), "--deep", "--json")
        assert res.returncode in (0, 2), f"{f.name}: {res.stderr}"
        report = json.loads(res.stdout)
        if res.returncode == 2:
            assert f.name in report["mismatches"][0]["path"], report
            continue
        # We decoded it all: then the reference reader must agree that it is readable after all
        # (some of these files document bugs that readers have since learnt to tolerate).
        assert pq.read_table(f).num_rows == pyarrow_rows(f), f"{f.name}: we decode it, pyarrow does not"


def webdataset_count(path):
    ds = wds.WebDataset(str(path), shardshuffle=False, empty_check=False)
    return sum(1 for _ in ds)


@pytest.mark.parametrize("name", ["mpdata.tar", "tendata.tar", "testgz.tar", "compressed.tar", "sample.tgz"])
def test_webdataset_shards_match_the_webdataset_library(testdata, tmp_path, name):
    path = testdata / "webdataset" / "testdata" / name
    expected = webdataset_count(path)
    res = run_index("build", str(path), "-o", str(tmp_path / "m.parquet"), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["samples"] == expected
