//! Batch assembly on worker threads, handed out in plan order.
//!
//! Collating a batch (see [`crate::collate`]) reads only that batch's decoded units and
//! writes only its own pooled buffers, so consecutive batches can be gathered at the same
//! time. On PLAIN Parquet from the page cache the gather is the loader's whole cost — one copy
//! per payload byte — and a single thread doing it leaves the second core idle once the I/O
//! side has mapped the look-ahead. [`Assembly`] runs `threads` workers that take jobs from one
//! queue (whichever worker is free takes the next batch, so a worker descheduled by a busy
//! machine delays the others only once `threads` later batches are finished behind the one it
//! holds: see the limit below) and gives finished batches back strictly in submission order,
//! which keeps the batch sequence deterministic.
//!
//! At most `threads + 1` batches are outstanding — at a worker, or finished and waiting in the
//! reorder buffer to be sent — so the extra memory is bounded by that many batches; a job holds
//! `Arc`s of its units, which keeps them alive after the producer has released their
//! look-ahead slots. Finished batches count too: while a slow consumer keeps the producer
//! waiting to send, the workers would otherwise go on filling the reorder buffer, one batch of
//! pooled memory after another, as far as the look-ahead reaches (seen with a GPU training loop
//! as consumer: ~240 batches, 500 MB, held, and the pool allocating all the while).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam::channel::{self, Receiver, Sender};

use crate::collate::{Batch, Collator, SampleId};
use crate::decode::DecodedUnit;
use crate::error::panic_message;
use crate::stats::Counters;
use crate::{Error, Result};

/// One batch to gather: its units, its `(unit, row)` pairs and what the batch reports.
pub(crate) struct Job {
    pub units: Vec<Arc<DecodedUnit>>,
    pub rows: Vec<(usize, usize)>,
    pub epoch: u64,
    pub index: u64,
    pub padded: Vec<bool>,
    pub samples: Vec<SampleId>,
}

/// The workers and the reorder buffer in front of the batch channel.
pub(crate) struct Assembly {
    jobs: Option<Sender<(u64, Job)>>,
    results: Receiver<(u64, Result<Batch>)>,
    workers: Vec<JoinHandle<()>>,
    max_in_flight: usize,
    in_flight: usize,
    next_seq: u64,
    next_out: u64,
    ready: BTreeMap<u64, Result<Batch>>,
}

impl Assembly {
    /// Starts `threads` (at least 1) workers collating with `collator`.
    pub fn start(threads: usize, collator: Arc<Collator>, counters: Arc<Counters>) -> Assembly {
        let threads = threads.max(1);
        let (jobs, queue) = channel::unbounded::<(u64, Job)>();
        let (done, results) = channel::unbounded();
        let workers = (0..threads)
            .map(|i| {
                let queue = queue.clone();
                let done = done.clone();
                let collator = collator.clone();
                let counters = counters.clone();
                std::thread::Builder::new()
                    .name(format!("shardstream-collate-{i}"))
                    .spawn(move || {
                        // Ends when the producer drops the job sender.
                        for (seq, job) in queue {
                            let batch = run(&collator, &counters, job);
                            if done.send((seq, batch)).is_err() {
                                return;
                            }
                        }
                    })
                    .expect("spawning a collate thread")
            })
            .collect();
        Assembly {
            jobs: Some(jobs),
            results,
            workers,
            max_in_flight: threads + 1,
            in_flight: 0,
            next_seq: 0,
            next_out: 0,
            ready: BTreeMap::new(),
        }
    }

    /// Whether another job may be submitted now: fewer than `threads + 1` batches are at the
    /// workers or waiting to be sent.
    pub fn has_room(&self) -> bool {
        self.in_flight + self.ready.len() < self.max_in_flight
    }

    /// Nothing submitted is still owed.
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.ready.is_empty()
    }

    pub fn submit(&mut self, job: Job) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight += 1;
        let sent = self.jobs.as_ref().map(|j| j.send((seq, job)));
        if !matches!(sent, Some(Ok(()))) {
            // Workers only stop when the job sender is dropped, which happens in `drop`.
            self.accept((
                seq,
                Err(Error::Stopped("the collate threads stopped".into())),
            ));
        }
    }

    /// Finished batches arrive here (in any order); pass each to [`Assembly::accept`].
    pub fn results(&self) -> &Receiver<(u64, Result<Batch>)> {
        &self.results
    }

    pub fn accept(&mut self, (seq, batch): (u64, Result<Batch>)) {
        self.in_flight -= 1;
        self.ready.insert(seq, batch);
    }

    /// Takes finished results without blocking.
    pub fn poll(&mut self) {
        while let Ok(r) = self.results.try_recv() {
            self.accept(r);
        }
    }

    /// The next batch in submission order, once it is finished.
    pub fn next_ready(&mut self) -> Option<Result<Batch>> {
        let batch = self.ready.remove(&self.next_out)?;
        self.next_out += 1;
        Some(batch)
    }
}

impl Drop for Assembly {
    fn drop(&mut self) {
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Gathers one batch; a panic becomes an error for that batch.
fn run(collator: &Collator, counters: &Counters, job: Job) -> Result<Batch> {
    let started = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let refs: Vec<&DecodedUnit> = job.units.iter().map(|u| u.as_ref()).collect();
        collator.collate(&refs, &job.rows)
    }));
    Counters::add_time(&counters.collate_ns, started);
    let columns = match result {
        Ok(columns) => columns?,
        Err(panic) => {
            return Err(Error::Stopped(format!(
                "internal error while collating batch {}: {}",
                job.index,
                panic_message(panic.as_ref())
            )));
        }
    };
    Ok(Batch {
        epoch: job.epoch,
        index: job.index,
        columns,
        padded: job.padded,
        samples: job.samples,
    })
}
