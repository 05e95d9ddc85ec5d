//! The loader end to end on generated datasets: contents, exactly-once, determinism, resume,
//! errors and shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{assert_exactly_once, check_batch, config, dataset, read_epoch, synth};
use shardstream_loader::collate::Column;
use shardstream_loader::config::{
    ListMode, LoaderConfig, Mix, PinMemory, Window, LOCAL_IO_CONCURRENCY,
};
use shardstream_loader::engine::Loader;
use shardstream_loader::pinned::MemoryKind;
use shardstream_loader::{Error, NextBatch};

#[test]
fn every_format_decodes_to_the_expected_samples() {
    for kind in ["parquet", "tar", "tar.zst", "tar.gz", "jsonl", "jsonl.zst"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = synth(kind, 700, 5, 60);
        let m = dataset(dir.path(), &cfg);
        let mut loader = Loader::new(config(&m, 32)).unwrap();
        let watcher = loader.stats_handle();
        let batches = read_epoch(&mut loader, &cfg);
        assert_eq!(batches.len(), 700usize.div_ceil(32), "{kind}");
        // A handle taken before the epoch, read on another thread, sees its counts.
        let watched = std::thread::spawn(move || watcher.read()).join().unwrap();
        assert_eq!(watched.batches, 22, "{kind}");
        assert!(batches.iter().all(|(_, rows)| rows.len() == 32));
        assert_exactly_once(batches.into_iter().flat_map(|(_, r)| r), 0, 700);
        let stats = loader.stats();
        assert_eq!(stats.batches, 22, "{kind}");
        assert_eq!(stats.samples, 22 * 32);
        assert_eq!(stats.padded_samples, 22 * 32 - 700);
        assert!(
            stats.bytes_fetched > 0 && stats.bytes_needed > 0,
            "{stats:?}"
        );
        assert!(stats.read_amplification >= 1.0, "{stats:?}");
        assert!(stats.units_loaded > 0);
    }
}

#[test]
fn parquet_reads_only_the_projected_columns() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = synth("parquet", 800, 4, 100);
    cfg.blob_bytes = 2000;
    let m = dataset(dir.path(), &cfg);
    let total: u64 = m.sizes().iter().sum();
    let mut loader = Loader::new(config(&m, 50).with_columns(["text", "id"])).unwrap();
    let batches = read_epoch(&mut loader, &cfg);
    assert_exactly_once(batches.into_iter().flat_map(|(_, r)| r), 0, 800);
    let stats = loader.stats();
    // The blob column dominates the files; skipping it reads a small fraction.
    assert!(
        stats.bytes_fetched * 4 < total,
        "{} of {total}",
        stats.bytes_fetched
    );
    assert_eq!(loader.columns(), ["text", "id"]);
}

#[test]
fn ragged_lists_and_column_order() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth("parquet", 300, 3, 50);
    let m = dataset(dir.path(), &cfg);
    let mut loader = Loader::new(
        config(&m, 20)
            .with_columns(["tokens", "id"])
            .with_list_mode("tokens", ListMode::Ragged),
    )
    .unwrap();
    for b in loader.iter() {
        let b = b.unwrap();
        assert_eq!(b.columns[0].0, "tokens");
        assert!(matches!(
            b.columns[0].1,
            shardstream_loader::collate::Column::Ragged { .. }
        ));
        check_batch(&b, |_| &cfg);
    }
}

#[test]
fn exactly_once_across_two_ranks_and_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth("parquet", 1001, 6, 70);
    let m = dataset(dir.path(), &cfg);
    let mut all = Vec::new();
    let mut lens = Vec::new();
    for (nodes, per_node) in [(2, 1), (1, 2)] {
        all.clear();
        lens.clear();
        for rank in 0..2 {
            let mut per_rank = 0;
            for worker in 0..2 {
                let c = config(&m, 16)
                    .with_topology(nodes, per_node, rank)
                    .with_worker(worker, 2);
                let mut loader = Loader::new(c).unwrap();
                let batches = read_epoch(&mut loader, &cfg);
                for (k, _) in &batches {
                    assert_eq!(k % 2, u64::from(worker), "worker takes k % workers == w");
                }
                per_rank += batches.len();
                all.extend(batches.into_iter().flat_map(|(_, r)| r));
            }
            lens.push(per_rank);
        }
        assert_eq!(lens[0], lens[1], "ranks get the same number of batches");
        assert_exactly_once(all.iter().copied(), 0, 1001);
        let padded = all.iter().filter(|r| r.2).count();
        assert_eq!(all.len(), 1001 + padded);
        assert!(
            padded > 0 && padded < 32,
            "1001 pads up to a multiple of 32: {padded}"
        );
    }
}

#[test]
fn drop_last_drops_the_partial_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth("jsonl", 250, 3, 50);
    let m = dataset(dir.path(), &cfg);
    let mut loader = Loader::new(config(&m, 16).with_drop_last(true)).unwrap();
    let rows: Vec<_> = read_epoch(&mut loader, &cfg)
        .into_iter()
        .flat_map(|(_, r)| r)
        .collect();
    assert_eq!(rows.len(), 240);
    assert!(rows.iter().all(|r| !r.2));
}

#[test]
fn order_does_not_depend_on_cache_concurrency_or_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth("parquet", 1500, 7, 40);
    let m = dataset(dir.path(), &cfg);
    let cache = dir.path().join("cache");
    let base = || config(&m, 24).with_window(shardstream_loader::config::Window::Samples(500));
    let variants: Vec<(&str, LoaderConfig)> = vec![
        ("default", base()),
        (
            "io=1,decode=1",
            base().with_io_concurrency(1).with_decode_threads(1),
        ),
        (
            "io=16,decode=4",
            base().with_io_concurrency(16).with_decode_threads(4),
        ),
        // Batches assembled out of order by several threads still arrive in plan order.
        ("collate=1", base().with_collate_threads(1)),
        ("collate=4", base().with_collate_threads(4)),
        ("tiny budget", base().with_prefetch_bytes(1)),
        ("queue=1", base().with_batch_queue(1).with_io_threads(1)),
        ("cache cold", base().with_cache_dir(&cache)),
        ("cache warm", base().with_cache_dir(&cache)),
    ];
    let mut reference = None;
    for (name, c) in variants {
        let mut loader = Loader::new(c).unwrap();
        let seq = read_epoch(&mut loader, &cfg);
        let stats = loader.stats();
        if name == "tiny budget" {
            assert!(
                stats.units_reread > 0,
                "a 1-byte budget re-reads units: {stats:?}"
            );
            assert!(stats.read_amplification > 1.0);
        }
        if name == "cache warm" {
            let cache = stats.cache.expect("cache stats");
            assert!(cache.hits > 0, "{cache:?}");
            assert_eq!(
                stats.bytes_fetched, 0,
                "everything came from the cache: {stats:?}"
            );
        }
        match &reference {
            None => reference = Some(seq),
            Some(r) => assert!(r == &seq, "{name} changed the order"),
        }
    }
}

#[test]
fn local_files_are_fetched_a_few_units_at_a_time() {
    // 75 row groups, all inside one shuffle window and the budget: the producer asks for all
    // of them right after the first batch.
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth("parquet", 3000, 8, 40);
    let m = dataset(dir.path(), &cfg);
    let base = || {
        config(&m, 24)
            .with_window(Window::Samples(3000))
            .with_prefetch_bytes(256 << 20)
            .with_io_concurrency(32)
    };
    // Mapped in place: no latency to hide, so at most LOCAL_IO_CONCURRENCY at once.
    let mut loader = Loader::new(base()).unwrap();
    read_epoch(&mut loader, &cfg);
    let peak = loader.stats().units_fetching_peak;
    assert!(
        (1..=LOCAL_IO_CONCURRENCY as u64).contains(&peak),
        "local files: {peak} units fetching at once"
    );
    // Through the cache the same files are copied, and `io_concurrency` applies.
    let mut loader = Loader::new(base().with_cache_dir(dir.path().join("cache"))).unwrap();
    read_epoch(&mut loader, &cfg);
    let peak = loader.stats().units_fetching_peak;
    assert!(
        peak > LOCAL_IO_CONCURRENCY as u64 && peak <= 32,
        "through the cache: {peak} units fetching at once"
    );
}

#[test]
fn a_look_ahead_below_two_windows_is_warned_about_and_fetches_units_again() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth("parquet", 3000, 8, 40);
    let m = dataset(dir.path(), &cfg);
    let window = 1000u64;
    let base = || config(&m, 24).with_window(Window::Samples(window));
    // What the rule asks for: two windows at the average stored bytes per sample, plus the
    // largest row group.
    let per_sample = m.sizes().iter().sum::<u64>() / 3000;
    let largest = (0..m.len())
        .flat_map(|i| m.row_groups(i))
        .map(|rg| rg.length)
        .max()
        .unwrap();
    let needed = 2 * window * per_sample + largest;

    let mut enough = Loader::new(base().with_prefetch_bytes(needed)).unwrap();
    assert!(enough.warnings().is_empty(), "{:?}", enough.warnings());
    read_epoch(&mut enough, &cfg);
    let fetched_once = enough.stats().bytes_fetched;

    let just_below = Loader::new(base().with_prefetch_bytes(needed - 1)).unwrap();
    assert_eq!(just_below.warnings().len(), 1);
    assert!(
        just_below.warnings()[0].contains(&format!("at least {needed}")),
        "{}",
        just_below.warnings()[0]
    );

    // Half a window: still every sample exactly once, but units fall out of the look-ahead
    // while their window still needs them, and are fetched again.
    let half = window * per_sample / 2;
    let mut small = Loader::new(base().with_prefetch_bytes(half)).unwrap();
    assert_eq!(small.warnings().len(), 1);
    let batches = read_epoch(&mut small, &cfg);
    assert_exactly_once(batches.into_iter().flat_map(|(_, r)| r), 0, 3000);
    let stats = small.stats();
    assert!(
        stats.units_reread > 0 && stats.bytes_fetched > fetched_once,
        "{} units read again, {} bytes fetched against {fetched_once}",
        stats.units_reread,
        stats.bytes_fetched
    );
}

#[test]
fn epochs_differ_and_each_is_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth("tar", 400, 4, 50);
    let m = dataset(dir.path(), &cfg);
    let mut loader = Loader::new(config(&m, 25)).unwrap();
    let e0 = read_epoch(&mut loader, &cfg);
    assert!(loader.iter().next().is_none(), "the epoch is over");
    loader.set_epoch(1).unwrap();
    assert_eq!(loader.epoch(), 1);
    let e1 = read_epoch(&mut loader, &cfg);
    assert_ne!(e0, e1, "a new epoch is a new order");
    assert_exactly_once(e1.into_iter().flat_map(|(_, r)| r), 0, 400);
}

#[test]
fn resume_mid_epoch_delivers_exactly_the_remaining_batches() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth("parquet", 900, 5, 60);
    let m = dataset(dir.path(), &cfg);
    let mut full_loader = Loader::new(config(&m, 30).with_epoch(2)).unwrap();
    let full = read_epoch(&mut full_loader, &cfg);

    let mut first = Loader::new(config(&m, 30).with_epoch(2)).unwrap();
    let head: Vec<_> = first.iter().take(7).map(|b| b.unwrap()).collect();
    let json = first.state().unwrap().to_json().unwrap();
    assert_eq!(
        first.state().unwrap().samples_consumed,
        7 * 30,
        "state counts delivered batches, not prefetched ones"
    );
    drop(first);
    let state = shard_index::plan::ResumeState::from_json(&json).unwrap();
    let mut second = Loader::new(config(&m, 30).with_resume(state)).unwrap();
    assert_eq!(second.epoch(), 2);
    second.set_epoch(2).unwrap(); // the usual epoch loop must not restart a resumed epoch
    assert_eq!(second.len() as usize, full.len() - 7);
    let tail = read_epoch(&mut second, &cfg);
    let mut resumed: Vec<Vec<common::Row>> = head.iter().map(common::rows).collect();
    resumed.extend(tail.into_iter().map(|(_, r)| r));
    let full: Vec<Vec<common::Row>> = full.into_iter().map(|(_, r)| r).collect();
    assert_eq!(resumed, full);
}

#[test]
fn waits_that_time_out_take_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth("parquet", 600, 4, 50);
    let m = dataset(dir.path(), &cfg);
    let mut a = Loader::new(config(&m, 20)).unwrap();
    let full: Vec<_> = read_epoch(&mut a, &cfg)
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    // A zero timeout: the first wait starts the pipeline and usually finds no batch ready. On a
    // loaded machine the consumer can be descheduled long enough for the producer to stay
    // ahead for a whole (small) epoch, so the epoch is read again until some wait timed out;
    // every attempt must deliver the same batches.
    let mut pending = 0;
    for _attempt in 0..20 {
        let mut b = Loader::new(config(&m, 20)).unwrap();
        let mut got = Vec::new();
        loop {
            match b.next_batch_within(Duration::ZERO) {
                NextBatch::Pending => pending += 1,
                NextBatch::Ready(batch) => got.push(common::rows(&batch.unwrap())),
                NextBatch::End => break,
            }
        }
        assert_eq!(got, full, "the same batches, none lost or repeated");
        assert!(b.next_batch().is_none(), "the epoch is over");
        if pending > 0 {
            break;
        }
    }
    assert!(pending > 0, "no wait timed out in 20 epochs");
}

#[test]
fn iterating_again_continues_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth("jsonl.zst", 300, 3, 50);
    let m = dataset(dir.path(), &cfg);
    let mut a = Loader::new(config(&m, 10)).unwrap();
    let full = read_epoch(&mut a, &cfg);
    let mut b = Loader::new(config(&m, 10)).unwrap();
    let mut got: Vec<_> = b
        .iter()
        .take(4)
        .map(|x| common::rows(&x.unwrap()))
        .collect();
    assert_eq!(b.remaining(), full.len() as u64 - 4);
    got.extend(b.iter().map(|x| common::rows(&x.unwrap())));
    assert_eq!(got, full.into_iter().map(|(_, r)| r).collect::<Vec<_>>());
}

#[test]
fn a_shard_modified_after_indexing_is_shard_changed() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["parquet", "tar"] {
        let cfg = synth(kind, 300, 3, 50);
        let sub = dir.path().join(kind);
        let m = dataset(&sub, &cfg);
        // Same size, different bytes and mtime: only the etag can tell.
        let victim = m.url(1);
        let path = sub.join("data").join(m.path(1));
        std::thread::sleep(Duration::from_millis(20));
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        for cache in [false, true] {
            let mut c = config(&m, 16);
            if cache {
                c = c.with_cache_dir(sub.join("cache"));
            }
            let mut loader = Loader::new(c).unwrap();
            let mut it = loader.iter();
            let err = loop {
                match it.next().expect("the error arrives before the end") {
                    Ok(_) => continue,
                    Err(e) => break e,
                }
            };
            match &err {
                Error::ShardChanged { url, .. } => assert_eq!(url, &victim, "{err}"),
                other => panic!("{kind}: expected ShardChanged, got {other}"),
            }
            assert!(it.next().is_none(), "the iterator ends after an error");
        }
    }
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth("parquet", 100, 2, 50);
    let m = dataset(dir.path(), &cfg);
    let err = Loader::new(config(&m, 8).with_columns(["id", "nope"])).unwrap_err();
    match err {
        Error::ColumnNotFound { column, available } => {
            assert_eq!(column, "nope");
            assert_eq!(available, ["id", "tokens", "text"]);
        }
        other => panic!("{other}"),
    }
    let err = Loader::new(config(&m, 0)).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let err = Loader::new(config(&m, 8).with_topology(1, 2, 5)).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let err = Loader::new(LoaderConfig::new(
        "/definitely/not/here/manifest.parquet",
        8,
    ))
    .unwrap_err();
    assert!(matches!(err, Error::Index(_)), "{err}");
    let err = Loader::new(config(&m, 8).with_pin_memory(PinMemory::Never))
        .unwrap()
        .stats();
    assert_eq!(err.memory, MemoryKind::Pageable);
    assert!(err.memory_reason.contains("never"));
}

#[test]
fn two_streams_mix_with_their_own_contents() {
    let dir = tempfile::tempdir().unwrap();
    let a = synth("parquet", 300, 3, 40);
    let mut b = synth("jsonl", 200, 2, 40);
    b.seed = 5;
    let ma = dataset(&dir.path().join("a"), &a);
    let mb = dataset(&dir.path().join("b"), &b);
    let c = config(&ma, 20)
        .with_manifest(mb, Mix::Repeat(1.0))
        .with_columns(["id", "text"]);
    let mut loader = Loader::new(c).unwrap();
    let mut rows = Vec::new();
    for batch in loader.iter() {
        let batch = batch.unwrap();
        check_batch(&batch, |s| if s == 0 { &a } else { &b });
        rows.extend(common::rows(&batch));
    }
    assert_exactly_once(rows.iter().copied(), 0, 300);
    assert_exactly_once(rows.iter().copied(), 1, 200);
}

#[test]
fn dropping_mid_epoch_returns_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth("tar.zst", 2000, 8, 50);
    let m = dataset(dir.path(), &cfg);
    for take in [0, 1, 3] {
        let mut loader = Loader::new(config(&m, 8).with_batch_queue(1)).unwrap();
        for b in loader.iter().take(take) {
            b.unwrap();
        }
        let t = Instant::now();
        drop(loader);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "drop took {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn memory_stays_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth("parquet", 3000, 10, 50);
    let m = dataset(dir.path(), &cfg);
    let budget = 256 << 10;
    let mut loader = Loader::new(config(&m, 16).with_prefetch_bytes(budget)).unwrap();
    let n = read_epoch(&mut loader, &cfg).len();
    let stats = loader.stats();
    assert_eq!(n, 3000usize.div_ceil(16));
    // The look-ahead may exceed the budget by the units of one batch (and one planning step).
    assert!(
        stats.lookahead_peak_bytes < budget + (2 << 20),
        "peak {} for a budget of {budget}",
        stats.lookahead_peak_bytes
    );
    assert!(
        stats.pool.reuses > 0,
        "batch buffers are recycled: {:?}",
        stats.pool
    );
}

#[test]
fn a_slow_consumer_holds_only_a_bounded_number_of_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = synth("parquet", 6000, 6, 200);
    (cfg.tokens_min, cfg.tokens_max) = (256, 256);
    let m = dataset(dir.path(), &cfg);
    let (queue, threads) = (1, 2);
    let config = config(&m, 16)
        .with_columns(["id", "tokens"])
        .with_window(Window::Samples(6000))
        .with_prefetch_bytes(64 << 20)
        .with_batch_queue(queue)
        .with_collate_threads(threads);
    let mut loader = Loader::new(config).unwrap();
    // Bytes of batches alive: handed out, queued, being assembled or waiting to be sent.
    let in_use = |l: &Loader| {
        let p = l.stats().pool;
        p.allocated_bytes - p.retained_bytes
    };
    let mut batch_bytes = 0;
    let mut peak = 0;
    // A consumer slower than the loader: each batch takes it a few milliseconds, so the
    // producer always has batches ready and waits to send them.
    for i in 0..120 {
        let batch = loader.next_batch().unwrap().unwrap();
        if i == 0 {
            // Pooled bytes of one batch, with room for size classes and page rounding.
            batch_bytes = batch
                .columns
                .iter()
                .flat_map(|(_, c)| match c {
                    Column::Tensor(t) => vec![t.byte_len()],
                    Column::Padded { values, lengths } => {
                        vec![values.byte_len(), lengths.byte_len()]
                    }
                    other => panic!("unexpected column {other:?}"),
                })
                .map(|n| (n + n / 4 + 4096) as u64)
                .sum();
        }
        std::thread::sleep(Duration::from_millis(3));
        peak = peak.max(in_use(&loader));
    }
    // The consumer's batch, the queue, the one the producer waits to send, and `threads + 1`
    // assembled or waiting in the reorder buffer.
    let bound = (1 + queue + 1 + threads + 1) as u64 * batch_bytes;
    assert!(
        peak <= bound,
        "{peak} bytes of batches held, more than {bound} ({} batches of {batch_bytes})",
        peak / batch_bytes
    );
    let mut rest = 0;
    for batch in loader.iter() {
        batch.unwrap();
        rest += 1;
    }
    assert_eq!(
        rest,
        6000usize.div_ceil(16) - 120,
        "the epoch still completes"
    );
}

#[test]
fn a_cache_limit_below_the_working_set_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth("tar", 300, 3, 50);
    let m = dataset(dir.path(), &cfg);
    let err = Loader::new(
        config(&m, 8)
            .with_cache_dir(dir.path().join("cache"))
            .with_cache_limit(1000),
    )
    .unwrap_err();
    assert!(matches!(err, Error::CacheTooSmall { .. }), "{err}");
    assert!(err.to_string().contains("largest unit"), "{err}");
}

#[test]
fn a_shard_with_fewer_samples_than_indexed_is_a_decode_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth("jsonl", 200, 2, 50);
    let m = dataset(dir.path(), &cfg);
    // A manifest that claims one more sample in the last shard than it holds.
    let mut entries: Vec<_> = m.entries().collect();
    entries.last_mut().unwrap().num_samples += 1;
    let bad = shard_index::Manifest::from_entries(
        m.meta.sources.clone(),
        m.meta.schema.clone(),
        entries,
        None,
    )
    .unwrap();
    let victim = bad.url(bad.len() - 1);
    let mut loader = Loader::new(config(&bad, 8)).unwrap();
    let err = loader
        .iter()
        .find_map(|b| b.err())
        .expect("an error before the end");
    match &err {
        Error::Decode { url, reason } => {
            assert_eq!(url, &victim);
            assert!(reason.contains("manifest says"), "{reason}");
        }
        other => panic!("expected Decode, got {other}"),
    }
}

#[test]
fn works_when_created_inside_an_async_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth("parquet", 100, 2, 50);
    let m = dataset(dir.path(), &cfg);
    let path = dir.path().join("manifest.parquet");
    m.write_to(path.to_str().unwrap(), &Default::default())
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let n = rt.block_on(async {
        let mut loader = Loader::new(LoaderConfig::new(path.to_str().unwrap(), 10)).unwrap();
        let n = loader.iter().map(|b| b.unwrap().len()).sum::<usize>();
        drop(loader);
        n
    });
    assert_eq!(n, 100);
}
