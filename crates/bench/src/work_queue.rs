//! `ringrift-bench-work-queue`: the JetStream work queue (`ringrift_nats`) at 100, 10,000
//! and 100,000 finished items on one nats-server, beside a raw async-nats KV get/put on
//! the same server (the peer line: what one JetStream round trip costs, so the ratios
//! show our overhead).
//!
//! Per size it prints p50/p99 of
//! * `depth` (the read NodeInfo and queue_monitor make: pending/claimed/completed/failed);
//! * `claim` and `complete` of one item (`--ops` of each, one item in flight);
//! * the whole-bucket read the queue's `depth` made before counts came from stream info
//!   (an ordered consumer over the finished bucket plus one get per key, as
//!   `kv.keys()` + `kv.entry()` did), `--scan-rounds` times (once at the largest size):
//!   what NodeInfo cost before.
//!
//! Finished items are seeded by publishing their records straight into the completed
//! bucket, `--in-flight` publishes awaiting their acks (the time and rate are printed).
//! Every loop is bounded; every wait has a deadline.

use anyhow::{Context as _, anyhow, bail};
use async_nats::jetstream::{self, kv};
use clap::Parser;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use ringrift_nats::work_queue::{COMPLETED_BUCKET, JetStreamWorkQueue, QueueOptions, StoredItem};
use ringrift_store::work_queue::{NewWork, WorkItem, WorkKind, WorkQueue, WorkStatus};
use std::time::{Duration, Instant};

/// Command-line flags.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ringrift-bench-work-queue",
    about = "Benchmark the JetStream work queue against raw KV round trips on one nats-server"
)]
pub struct Args {
    /// nats-server with JetStream, host:port.
    #[arg(long)]
    pub nats: String,
    /// Finished items present at each measurement (cumulative, ascending).
    #[arg(long, value_delimiter = ',', default_value = "100,10000,100000")]
    pub sizes: Vec<u64>,
    /// Claim/complete pairs measured per size.
    #[arg(long, default_value_t = 200)]
    pub ops: usize,
    /// `depth` calls measured per size.
    #[arg(long, default_value_t = 200)]
    pub reads: usize,
    /// Raw KV get/put pairs measured per size (the peer line).
    #[arg(long, default_value_t = 200)]
    pub peer_ops: usize,
    /// Whole-bucket reads (the old `depth`) per size; 1 at the largest size; 0 to skip.
    #[arg(long, default_value_t = 3)]
    pub scan_rounds: usize,
    /// Seed publishes awaiting their acks at once.
    #[arg(long, default_value_t = 512)]
    pub in_flight: usize,
}

/// p50 and p99 of a sample in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Pct {
    pub p50: f64,
    pub p99: f64,
    pub n: usize,
}

impl Pct {
    pub fn of(samples: &mut [Duration]) -> Option<Pct> {
        if samples.is_empty() {
            return None;
        }
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1e3
        };
        Some(Pct {
            p50: at(0.50),
            p99: at(0.99),
            n: samples.len(),
        })
    }
}

fn line(what: &str, p: Option<Pct>) -> String {
    match p {
        Some(p) => format!(
            "  {what:<44} p50 {:>9.3} ms  p99 {:>9.3} ms  (n={})",
            p.p50, p.p99, p.n
        ),
        None => format!("  {what:<44} (not measured)"),
    }
}

fn ratio(ours: Option<Pct>, peer: Option<f64>) -> String {
    match (ours, peer) {
        (Some(o), Some(p)) if p > 0.0 => format!("{:.1}x", o.p50 / p),
        _ => "-".into(),
    }
}

/// A finished item's record as the queue stores it.
fn finished(i: u64) -> StoredItem {
    let id = uuid::Uuid::new_v4().to_string();
    StoredItem {
        item: WorkItem {
            item_id: id,
            kind: WorkKind::Selfplay,
            config_key: None,
            priority: 0,
            payload: serde_json::json!({"games": 10, "seed": i}),
            status: WorkStatus::Completed,
            attempts: 0,
            max_attempts: 3,
            claimed_by: None,
            lease_expires_at: None,
            last_error: None,
        },
        created_ms: 0,
        updated_ms: 0,
        result: Some(serde_json::json!({"games": 10})),
        published: true,
        fence_token: None,
    }
}

/// Publishes `n` finished records into the completed bucket, `in_flight` at a time.
async fn seed(js: &jetstream::Context, from: u64, n: u64, in_flight: usize) -> anyhow::Result<()> {
    let mut acks = FuturesUnordered::new();
    for i in from..from + n {
        let r = finished(i);
        let body = serde_json::to_vec(&r)?;
        let subject = format!("$KV.{COMPLETED_BUCKET}.{}", r.item.item_id);
        acks.push(js.publish(subject, body.into()).await?.into_future());
        if acks.len() >= in_flight {
            if let Some(a) = acks.next().await {
                a.context("seed publish")?;
            }
        }
    }
    while let Some(a) = acks.next().await {
        a.context("seed publish")?;
    }
    Ok(())
}

/// What the queue's `depth` did before: every key of the bucket, then each key's value.
async fn whole_bucket_read(store: &kv::Store) -> anyhow::Result<u64> {
    let keys: Vec<String> = {
        let mut keys = store.keys().await?;
        let mut out = Vec::new();
        while let Some(k) = tokio::time::timeout(Duration::from_secs(30), keys.next())
            .await
            .map_err(|_| anyhow!("keys: no answer in 30 s"))?
        {
            out.push(k?);
        }
        out
    };
    let mut n = 0;
    for k in keys {
        if store.entry(k).await?.is_some() {
            n += 1;
        }
    }
    Ok(n)
}

/// Runs the benchmark and prints its table.
pub fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench/work-queue: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let mut sizes = args.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() || args.ops == 0 || args.reads == 0 {
        bail!("--sizes, --ops and --reads must not be empty or 0");
    }
    let url = format!("nats://{}", args.nats);
    let queue = JetStreamWorkQueue::open(
        std::slice::from_ref(&url),
        "bench-work-queue",
        QueueOptions::default(),
    )
    .map_err(|e| anyhow!("open the queue: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (js, done, peer) = rt.block_on(async {
        let client = async_nats::connect(&url).await?;
        let js = jetstream::new(client);
        let done = js.get_key_value(COMPLETED_BUCKET).await?;
        // The peer: a plain KV bucket of the same shape (R1, file storage, leader gets).
        js.get_or_create_stream(jetstream::stream::Config {
            name: "KV_bench_peer".into(),
            subjects: vec!["$KV.bench_peer.>".into()],
            max_messages_per_subject: 1,
            allow_rollup: true,
            allow_direct: false,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await?;
        let peer = js.get_key_value("bench_peer").await?;
        anyhow::Ok((js, done, peer))
    })?;

    println!(
        "JetStream work queue vs a raw KV round trip, one nats-server on loopback (file storage, R1; 2.9 acks before fsync)"
    );
    let lease = Duration::from_secs(60);
    let mut seeded = 0u64;
    let largest = *sizes.last().unwrap_or(&0);
    for &size in &sizes {
        // Seed up to `size` finished items (claim/complete below add --ops more each).
        let have = queue.depth().map_err(|e| anyhow!("depth: {e}"))?.completed;
        let add = size.saturating_sub(have);
        let t = Instant::now();
        rt.block_on(seed(&js, seeded, add, args.in_flight.max(1)))?;
        let took = t.elapsed();
        seeded += add;
        let d = queue.depth().map_err(|e| anyhow!("depth: {e}"))?;
        println!();
        println!(
            "== {} finished items (seeded {add} in {:.2} s, {:.0} records/s; depth says completed={}, pending={}, claimed={})",
            d.completed + d.failed,
            took.as_secs_f64(),
            add as f64 / took.as_secs_f64().max(1e-9),
            d.completed,
            d.pending,
            d.claimed
        );

        let mut depth = Vec::with_capacity(args.reads);
        for _ in 0..args.reads {
            let t = Instant::now();
            queue.depth().map_err(|e| anyhow!("depth: {e}"))?;
            depth.push(t.elapsed());
        }
        let (mut claims, mut completes) = (Vec::new(), Vec::new());
        let mut empty = 0usize;
        for _ in 0..args.ops {
            queue
                .enqueue(&NewWork::new(
                    WorkKind::Selfplay,
                    None,
                    0,
                    serde_json::json!({"games": 1}),
                ))
                .map_err(|e| anyhow!("enqueue: {e}"))?;
            // A claim right after the publish can find the consumer not yet told of the
            // message (the server answers "no messages" at once); it is asked again, and
            // the time until the item is claimed is what is measured.
            let t = Instant::now();
            let deadline = t + Duration::from_secs(10);
            let item = loop {
                match queue
                    .claim("bench", &[WorkKind::Selfplay], lease)
                    .map_err(|e| anyhow!("claim: {e}"))?
                {
                    Some(item) => break item,
                    None if Instant::now() < deadline => empty += 1,
                    None => bail!("claim: the item just queued was not claimable within 10 s"),
                }
            };
            claims.push(t.elapsed());
            let t = Instant::now();
            if !queue
                .complete(&item.item_id, "bench", &serde_json::json!({}))
                .map_err(|e| anyhow!("complete: {e}"))?
            {
                bail!("complete: the bench lost its own claim");
            }
            completes.push(t.elapsed());
        }
        let (mut gets, mut puts) = (Vec::new(), Vec::new());
        rt.block_on(async {
            for i in 0..args.peer_ops {
                let key = format!("k{}", i % 64);
                let t = Instant::now();
                peer.put(&key, vec![b'x'; 300].into()).await?;
                puts.push(t.elapsed());
                let t = Instant::now();
                peer.entry(&key)
                    .await?
                    .ok_or_else(|| anyhow!("peer get: key {key} missing"))?;
                gets.push(t.elapsed());
            }
            anyhow::Ok(())
        })?;
        let rounds = if size == largest {
            args.scan_rounds.min(1)
        } else {
            args.scan_rounds
        };
        let mut scans = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let n = rt.block_on(whole_bucket_read(&done))?;
            scans.push(t.elapsed());
            if n < size {
                bail!("whole-bucket read found {n} of at least {size} records");
            }
        }

        let depth = Pct::of(&mut depth);
        let claim = Pct::of(&mut claims);
        let complete = Pct::of(&mut completes);
        let get = Pct::of(&mut gets);
        let put = Pct::of(&mut puts);
        let scan = Pct::of(&mut scans);
        let get50 = get.map(|p| p.p50);
        let rt50 = match (get, put) {
            (Some(g), Some(p)) => Some(g.p50 + p.p50),
            _ => None,
        };
        println!("{}", line("ours: depth (what NodeInfo reads)", depth));
        println!("{}", line("ours: claim (until claimed)", claim));
        if empty > 0 {
            println!("  ({empty} of the claims first found no message and asked again)");
        }
        println!("{}", line("ours: complete", complete));
        println!("{}", line("before: depth as a whole-bucket read", scan));
        println!("{}", line("peer: raw KV get (leader)", get));
        println!("{}", line("peer: raw KV put", put));
        println!(
            "  ratios (p50): depth/get {}  claim/(get+put) {}  complete/(get+put) {}  whole-bucket/depth {}",
            ratio(depth, get50),
            ratio(claim, rt50),
            ratio(complete, rt50),
            ratio(scan, depth.map(|d| d.p50)),
        );
    }
    Ok(())
}
