//! The `shard-index` binary end to end, on local data: generate, build, inspect, verify, update,
//! and the promise that a failed build leaves no file at the output path.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shard-index"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run shard-index")
}

fn ok_json(args: &[&str]) -> Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "shard-index {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON from {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn generate(dir: &Path, format: &str, samples: u64, shards: u32) -> Value {
    ok_json(&[
        "generate",
        s(dir),
        "--format",
        format,
        "--samples",
        &samples.to_string(),
        "--shards",
        &shards.to_string(),
        "--json",
    ])
}

#[test]
fn every_format_indexes_with_exact_counts() {
    let tmp = tempfile::tempdir().unwrap();
    for format in ["parquet", "tar", "tar.zst", "jsonl", "jsonl.zst"] {
        let dir = tmp.path().join(format.replace('.', "_"));
        let gen = generate(&dir, format, 2345, 7);
        let manifest = tmp.path().join(format!("{format}.manifest.parquet"));
        let summary = ok_json(&["build", s(&dir), "-o", s(&manifest), "--json"]);
        assert_eq!(summary["shards"], 7, "{format}");
        assert_eq!(summary["samples"], 2345, "{format}");
        assert_eq!(summary["bytes"], gen["bytes"], "{format}");
        let inspect = ok_json(&["inspect", s(&manifest), "--json"]);
        assert_eq!(inspect["samples"], 2345);
        assert_eq!(inspect["formats"][format], 7);
        let fields: Vec<&str> = inspect["schema"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        let want: &[&str] = match format {
            "parquet" => &["id", "tokens", "text"],
            "tar" | "tar.zst" => &["__key__", "json", "tokens"],
            _ => &["id", "text", "tokens"],
        };
        let mut got = fields.clone();
        got.sort();
        let mut want = want.to_vec();
        want.sort();
        assert_eq!(got, want, "{format}");
        let verify = ok_json(&["verify", s(&manifest), "--deep", "--json"]);
        assert_eq!(verify["ok"], 7, "{format}: {verify}");
    }
}

#[test]
fn manifests_are_byte_identical_across_concurrency() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    generate(&dir, "parquet", 5000, 40);
    let a = tmp.path().join("a.parquet");
    let b = tmp.path().join("b.parquet");
    ok_json(&[
        "build",
        s(&dir),
        "-o",
        s(&a),
        "--concurrency",
        "1",
        "--json",
    ]);
    ok_json(&[
        "build",
        s(&dir),
        "-o",
        s(&b),
        "--concurrency",
        "64",
        "--json",
    ]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn markers_and_non_shards_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    generate(&dir, "jsonl", 100, 2);
    std::fs::write(dir.join("_SUCCESS"), b"").unwrap();
    std::fs::write(dir.join(".part-00000.jsonl.crc"), b"xx").unwrap();
    std::fs::write(dir.join("README.txt"), b"hello").unwrap();
    let out = tmp.path().join("m.parquet");
    let summary = ok_json(&["build", s(&dir), "-o", s(&out), "--json"]);
    assert_eq!(summary["shards"], 2);
    assert_eq!(summary["objects_ignored"], 3);
}

fn assert_fails_without_output(args: &[&str], output: &Path, expect: &str) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        stderr.contains(expect),
        "{args:?}: stderr {stderr:?} lacks {expect:?}"
    );
    assert!(
        !output.exists(),
        "{} must not exist after a failed build",
        output.display()
    );
    let leftovers: Vec<PathBuf> = std::fs::read_dir(output.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn bad_shards_fail_cleanly_or_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    generate(&dir, "parquet", 500, 3);
    std::fs::write(
        dir.join("part-99999.parquet"),
        b"PAR1 this is not parquet PAR1",
    )
    .unwrap();
    let outdir = tmp.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("m.parquet");
    assert_fails_without_output(
        &["build", s(&dir), "-o", s(&out)],
        &out,
        "part-99999.parquet",
    );
    let summary = ok_json(&["build", s(&dir), "-o", s(&out), "--skip-bad", "--json"]);
    assert_eq!(summary["shards"], 3);
    assert_eq!(summary["bad"].as_array().unwrap().len(), 1);
    assert!(summary["bad"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("part-99999.parquet"));
}

#[test]
fn truncated_tar_and_invalid_json_name_the_object() {
    let tmp = tempfile::tempdir().unwrap();
    let tar_dir = tmp.path().join("tar");
    generate(&tar_dir, "tar", 50, 2);
    let victim = tar_dir.join("part-00001.tar");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2 + 100]).unwrap();
    let out = tmp.path().join("out-tar.parquet");
    assert_fails_without_output(
        &["build", s(&tar_dir), "-o", s(&out)],
        &out,
        "part-00001.tar",
    );

    let json_dir = tmp.path().join("jsonl");
    generate(&json_dir, "jsonl", 50, 2);
    std::fs::write(json_dir.join("part-00002.jsonl"), "{\"id\": 1}\n{oops\n").unwrap();
    let out = tmp.path().join("out-json.parquet");
    assert_fails_without_output(
        &["build", s(&json_dir), "-o", s(&out)],
        &out,
        "part-00002.jsonl at line 2",
    );
}

#[test]
fn different_parquet_schemas_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    generate(&dir, "parquet", 100, 2);
    let other = tmp.path().join("other");
    ok_json(&[
        "generate",
        s(&other),
        "--samples",
        "10",
        "--shards",
        "1",
        "--blob-bytes",
        "8",
        "--json",
    ]);
    std::fs::copy(other.join("part-00000.parquet"), dir.join("zz.parquet")).unwrap();
    let out = tmp.path().join("m.parquet");
    assert_fails_without_output(&["build", s(&dir), "-o", s(&out)], &out, "schema of");
}

#[test]
fn empty_prefix_and_bad_locations_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = tmp.path().join("m.parquet");
    assert_fails_without_output(
        &["build", s(&empty), "-o", s(&out)],
        &out,
        "no shards found",
    );
    assert_fails_without_output(
        &["build", "ftp://x/y", "-o", s(&out)],
        &out,
        "unsupported scheme",
    );

    // Nothing listens on this port: connection refused, retried briefly, then a clear error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("aws_endpoint=http://127.0.0.1:{port}");
    let o = |kv: &'static str| ["--storage-option", kv];
    let mut args = vec![
        "build",
        "s3://bucket/prefix",
        "-o",
        s(&out),
        "--storage-option",
        &endpoint,
    ];
    for kv in [
        "aws_access_key_id=k",
        "aws_secret_access_key=s",
        "aws_allow_http=true",
        "max_retries=1",
        "retry_timeout_secs=2",
    ] {
        args.extend(o(kv));
    }
    assert_fails_without_output(&args, &out, "s3://bucket/prefix");
}

#[test]
fn missing_credentials_fail_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.parquet");
    let output = bin()
        .args(["build", "s3://bucket/prefix", "-o", s(&out)])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env_remove("AWS_SKIP_SIGNATURE")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no credentials"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn update_reports_added_removed_changed_and_verify_sees_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    generate(&dir, "jsonl", 300, 3);
    let m = tmp.path().join("m.parquet");
    ok_json(&["build", s(&dir), "-o", s(&m), "--json"]);
    let clean = ok_json(&["verify", s(&m), "--json"]);
    assert_eq!(clean["mismatches"].as_array().unwrap().len(), 0);

    std::fs::remove_file(dir.join("part-00000.jsonl")).unwrap();
    std::fs::write(dir.join("part-00001.jsonl"), "{\"id\": 1}\n{\"id\": 2}\n").unwrap();
    std::fs::write(dir.join("part-00009.jsonl"), "{\"id\": 9}\n").unwrap();

    let out = run(&["verify", s(&m), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "verify must exit 2 on mismatches"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["mismatches"].as_array().unwrap().len(),
        2,
        "{report}"
    );

    let summary = ok_json(&["update", s(&m), "--json"]);
    assert_eq!(summary["unchanged"], 1);
    assert_eq!(summary["added"].as_array().unwrap().len(), 1);
    assert_eq!(summary["removed"].as_array().unwrap().len(), 1);
    assert_eq!(summary["changed"].as_array().unwrap().len(), 1);
    let inspect = ok_json(&["inspect", s(&m), "--json"]);
    assert_eq!(inspect["shards"], 3);
    let clean = ok_json(&["verify", s(&m), "--deep", "--json"]);
    assert_eq!(clean["ok"], 3);
}

#[test]
fn a_single_object_can_be_a_source() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    generate(&dir, "parquet", 100, 2);
    let m = tmp.path().join("m.parquet");
    let one = dir.join("part-00001.parquet");
    let summary = ok_json(&["build", s(&one), "-o", s(&m), "--json"]);
    assert_eq!(summary["shards"], 1);
    let inspect = ok_json(&["inspect", s(&m), "--json"]);
    assert!(inspect["largest"]["path"]
        .as_str()
        .unwrap()
        .ends_with("data/part-00001.parquet"));
}

#[test]
fn newer_manifest_versions_are_refused() {
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("future.parquet");
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("x", arrow::datatypes::DataType::Int32, false),
    ]));
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "shardstream.manifest_version".into(),
            "2.0".to_string(),
        )]))
        .build();
    let f = std::fs::File::create(&path).unwrap();
    let w = ArrowWriter::try_new(f, schema, Some(props)).unwrap();
    w.close().unwrap();
    let out = run(&["inspect", s(&path)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("upgrade shardstream"), "{stderr}");
    let plain = tmp.path().join("plain.parquet");
    std::fs::copy(dir_of_generated(&tmp), &plain).unwrap();
    let out = run(&["inspect", s(&plain)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a shardstream manifest"));
}

fn dir_of_generated(tmp: &tempfile::TempDir) -> PathBuf {
    let dir = tmp.path().join("gen");
    generate(&dir, "parquet", 10, 1);
    dir.join("part-00000.parquet")
}

#[test]
fn plan_dump_delivers_every_sample_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    generate(&dir, "parquet", 1001, 9);
    let m = tmp.path().join("m.parquet");
    ok_json(&["build", s(&dir), "-o", s(&m), "--json"]);
    let dump = tmp.path().join("plan.jsonl");
    let summary = ok_json(&[
        "plan",
        s(&m),
        "--nodes",
        "3",
        "--ranks-per-node",
        "2",
        "--workers",
        "2",
        "--batch-size",
        "7",
        "--window",
        "64",
        "--seed",
        "5",
        "--rank",
        "4",
        "--json",
        "--dump",
        s(&dump),
    ]);
    assert_eq!(summary["total_samples"], 1001);
    assert_eq!(summary["first_samples"].as_array().unwrap().len(), 20);
    let mut seen = vec![0u32; 1001];
    let mut batches_per_rank = std::collections::BTreeMap::<u64, u64>::new();
    let mut padded = 0;
    for line in std::fs::read_to_string(&dump).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        *batches_per_rank
            .entry(v["rank"].as_u64().unwrap())
            .or_default() += 1;
        let samples = v["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 7);
        for (s, p) in samples.iter().zip(v["padded"].as_array().unwrap()) {
            if p.as_bool().unwrap() {
                padded += 1;
            } else {
                seen[s.as_u64().unwrap() as usize] += 1;
            }
        }
    }
    assert!(seen.iter().all(|&c| c == 1), "every sample exactly once");
    assert_eq!(batches_per_rank.len(), 6);
    let counts: std::collections::BTreeSet<u64> = batches_per_rank.values().copied().collect();
    assert_eq!(
        counts.len(),
        1,
        "every rank the same number of batches: {batches_per_rank:?}"
    );
    assert_eq!(padded, summary["padded_samples"].as_u64().unwrap());

    // Another epoch is another order; the same epoch is the same order.
    let again = tmp.path().join("again.jsonl");
    let other = tmp.path().join("other.jsonl");
    let base = [
        "plan",
        s(&m),
        "--nodes",
        "3",
        "--ranks-per-node",
        "2",
        "--workers",
        "2",
        "--batch-size",
        "7",
        "--window",
        "64",
        "--seed",
        "5",
    ];
    ok_json(&[&base[..], &["--json", "--dump", s(&again)]].concat());
    ok_json(&[&base[..], &["--json", "--epoch", "1", "--dump", s(&other)]].concat());
    let a = std::fs::read(&dump).unwrap();
    assert_eq!(a, std::fs::read(&again).unwrap());
    assert_ne!(a, std::fs::read(&other).unwrap());

    let out = run(&["plan", s(&m), "--batch-size", "0"]);
    assert!(!out.status.success());
    let out = run(&["plan", s(&m), "--batch-size", "4", "--weights", "1,2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--weights needs 1"));
}

#[test]
fn sources_file_parts_and_merge_reproduce_the_single_build() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    generate(&a, "jsonl", 300, 7);
    generate(&b, "jsonl", 200, 4);
    let list = tmp.path().join("sources.txt");
    std::fs::write(
        &list,
        format!("# two sources\n{}\n\n  {}  \n", s(&a), s(&b)),
    )
    .unwrap();
    let config = tmp.path().join("storage.json");
    std::fs::write(
        &config,
        r#"{"defaults": {}, "sources": [{"match": "s3://elsewhere-*", "options": {"aws_region": "eu-west-1"}}]}"#,
    )
    .unwrap();
    let single = tmp.path().join("single.parquet");
    let summary = ok_json(&[
        "build",
        "--sources-file",
        s(&list),
        "--storage-config",
        s(&config),
        "-o",
        s(&single),
        "--json",
    ]);
    assert_eq!(summary["sources"], 2);
    assert_eq!(summary["shards"], 11);
    let mut parts = Vec::new();
    for i in 0..3 {
        let p = tmp.path().join(format!("part-{i}.parquet"));
        let summary = ok_json(&[
            "build",
            "--sources-file",
            s(&list),
            "--part",
            &format!("{i}/3"),
            "-o",
            s(&p),
            "--json",
        ]);
        assert_eq!(summary["part"]["count"], 3);
        parts.push(p);
    }
    let inspect = ok_json(&["inspect", s(&parts[0]), "--json"]);
    assert_eq!(inspect["part"]["index"], 0);
    let merged = tmp.path().join("merged.parquet");
    let mut args = vec!["merge"];
    args.extend(parts.iter().rev().map(|p| s(p)));
    args.extend(["-o", s(&merged), "--json"]);
    let summary = ok_json(&args);
    assert_eq!(summary["parts"], 3);
    assert_eq!(summary["shards"], 11);
    assert_eq!(
        std::fs::read(&single).unwrap(),
        std::fs::read(&merged).unwrap()
    );
    // A missing part is refused, with no output written.
    let out = tmp.path().join("out").join("m.parquet");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    assert_fails_without_output(
        &["merge", s(&parts[0]), s(&parts[2]), "-o", s(&out)],
        &out,
        "parts [1] of 3 are missing",
    );
    let bad_part = run(&["build", s(&a), "--part", "3/3", "-o", s(&out)]);
    assert!(!bad_part.status.success());
    assert!(String::from_utf8_lossy(&bad_part.stderr).contains("0 <= I < N"));
}

#[test]
fn list_reports_how_parts_split_the_listing() {
    let tmp = tempfile::tempdir().unwrap();
    // 24 prefixes of 3 shards each: enough units for 2 parts (16).
    let root = tmp.path().join("ds");
    for p in 0..24 {
        let d = root.join(format!("p{p:02}"));
        std::fs::create_dir_all(&d).unwrap();
        for k in 0..3 {
            std::fs::write(d.join(format!("s-{k}.jsonl")), "{\"id\": 1}\n").unwrap();
        }
    }
    let whole = ok_json(&["list", s(&root), "--json"]);
    assert_eq!(whole["objects_listed"], 72);
    assert_eq!(whole["listing"]["scheme"], Value::Null);
    let mut owned = 0;
    let mut selected = 0;
    for i in 0..2 {
        let part = format!("{i}/2");
        let l = ok_json(&["list", s(&root), "--part", &part, "--json"]);
        assert_eq!(l["listing"]["scheme"], "prefix-fanout");
        assert_eq!(l["listing"]["units_total"], 24);
        assert_eq!(l["listing"]["units_owned"], 12);
        assert_eq!(l["objects_listed"], 36, "a part lists its own 12 prefixes");
        owned += l["listing"]["units_owned"].as_u64().unwrap();
        selected += l["selected"].as_u64().unwrap();
        let full = ok_json(&[
            "list",
            s(&root),
            "--part",
            &part,
            "--no-split-listing",
            "--json",
        ]);
        assert_eq!(full["listing"]["scheme"], "key-hash");
        assert_eq!(full["objects_listed"], 72);
        assert_eq!(full["listing"]["fallback_sources"], 1);
    }
    assert_eq!((owned, selected), (24, 72));
    // Parts built with and without the split do not merge.
    let p0 = tmp.path().join("p0.parquet");
    let p1 = tmp.path().join("p1.parquet");
    ok_json(&["build", s(&root), "--part", "0/2", "-o", s(&p0), "--json"]);
    ok_json(&[
        "build",
        s(&root),
        "--part",
        "1/2",
        "--no-split-listing",
        "-o",
        s(&p1),
        "--json",
    ]);
    let out = tmp.path().join("m.parquet");
    assert_fails_without_output(
        &["merge", s(&p0), s(&p1), "-o", s(&out)],
        &out,
        "--no-split-listing",
    );
    let refused = run(&["build", s(&root), "--no-split-listing", "-o", s(&out)]);
    assert!(!refused.status.success(), "--no-split-listing needs --part");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `shard-index inspect M | head -1` once panicked with "failed printing to stdout".
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    generate(&dir, "parquet", 100, 2);
    let manifest = tmp.path().join("m.parquet");
    ok_json(&["build", s(&dir), "-o", s(&manifest), "--json"]);
    // A pipe whose reading end is already closed: the first write fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = bin()
        .args(["inspect", s(&manifest)])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run shard-index");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    // Ended by SIGPIPE (13 on Linux), as `cat` would be.
    assert_eq!(out.status.signal(), Some(13), "{:?}", out.status);
}
