//! Side-by-side benchmark of `ringrift-event-router` and NATS JetStream on loopback.
//!
//! For each side, with messages of the same encoded size (128 B by default) it measures:
//!
//! 1. one-at-a-time durable publish (await each ack): msgs/s, p50 and p99 latency;
//!    ours = unary `Publish` per event; NATS = request/ack per message;
//!    1s. ours again, one event at a time on one open `PublishStream` (NATS repeats (1));
//! 2. pipelined publish: ours = unary `Publish` with `--in-flight` calls outstanding on one
//!    channel; NATS = async publish with `--in-flight` acks outstanding;
//!    2s. ours = one `PublishStream` with `--in-flight` events not yet acked (NATS
//!    repeats (2));
//! 3. batched publish: ours = `PublishBatch` of `--batch` events, `--batches-in-flight`
//!    calls outstanding; NATS has no batch publish, so its line repeats (2);
//! 4. durable consumer read of the `--n` messages stored by (3) (NATS: by (2)), with acks:
//!    ours = named consumer, cumulative `Ack` every `--ack-every` events (one ack call in
//!    flight at a time); NATS = durable pull consumer, `AckPolicy::All`, acking every
//!    `--ack-every`-th message and the last;
//! 5. fan-out: `--fanout` durable consumers, each on its own connection, read the same
//!    stored messages concurrently; total msgs/s = consumers × n / wall time.
//!
//! `--router-jetstream` adds a column for our router on the JetStream backend and a
//! summary of its one-at-a-time latency against direct NATS publishing to a stream of the
//! same config (`--nats-replicas`, dedup window, `Nats-Msg-Id` on every message) and
//! against our SQLite router (`scripts/bench/router --backend jetstream`). Its line 0 is
//! not a bare round trip: `Stats` asks JetStream for stream and consumer info.
//!
//! Timers include consumer creation on both sides (ours: in `Subscribe`; NATS: the
//! create-consumer request). Every phase has a deadline, so the run always ends.
//! Our router fsyncs each commit unless started with `event_router.durability=relaxed`;
//! NATS 2.9 acks after writing to the page cache (fsync is periodic).

pub mod work_queue;

use anyhow::{Context as _, anyhow};
use async_nats::jetstream::{self, consumer::pull, stream as js_stream};
use clap::Parser;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use prost::Message as _;
use ringrift_proto::wire::{self, event::Payload, subscribe_request::Start};
use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, Instant};

/// Command-line flags.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ringrift-bench-router",
    about = "Benchmark the event router against NATS JetStream on loopback"
)]
pub struct Args {
    /// Router with the default (fsync) durability, host:port.
    #[arg(long)]
    pub router: Option<String>,
    /// Router started with `event_router.durability=relaxed`, host:port.
    #[arg(long)]
    pub router_relaxed: Option<String>,
    /// Router on the JetStream backend (`[events] backend = "jetstream"`), host:port.
    #[arg(long)]
    pub router_jetstream: Option<String>,
    /// nats-server with JetStream, host:port.
    #[arg(long)]
    pub nats: Option<String>,
    /// Replicas of the NATS side's stream (3 on a 3-node cluster, like the router's).
    #[arg(long, default_value_t = 1)]
    pub nats_replicas: usize,
    /// Messages per pipelined/batched publish phase, read and fan-out phase.
    #[arg(long, default_value_t = 50_000)]
    pub n: usize,
    /// Messages for the one-at-a-time publish phase.
    #[arg(long, default_value_t = 2_000)]
    pub n_sync: usize,
    /// Encoded message size in bytes.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Outstanding publishes in the pipelined phase.
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// Events per PublishBatch call.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Outstanding PublishBatch calls.
    #[arg(long, default_value_t = 4)]
    pub batches_in_flight: usize,
    /// Consumers ack (cumulatively) every this many messages.
    #[arg(long, default_value_t = 256)]
    pub ack_every: usize,
    /// Durable consumers in the fan-out phase.
    #[arg(long, default_value_t = 4)]
    pub fanout: usize,
    /// Rounds per side; the table shows the median of each figure.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Deadline of each phase, seconds.
    #[arg(long, default_value_t = 300)]
    pub phase_timeout_s: u64,
    /// Directory for the disk line: `--n-sync` records of `--size` bytes appended to
    /// one file with an fdatasync after each (use the fsync router's log directory).
    #[arg(long)]
    pub disk_dir: Option<std::path::PathBuf>,
}

/// The disk's own ceiling for one-at-a-time durable appends.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disk {
    pub rate: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Writes `n` records of `size` bytes one after another to a new file in `dir`,
/// fdatasync after each. `preallocate`: the file is written and synced full-size first,
/// so each record overwrites in place and no fdatasync has to commit a size change
/// (what a segment log that preallocates, or SQLite's reused WAL, sees).
pub fn disk_line(
    dir: &std::path::Path,
    n: usize,
    size: usize,
    preallocate: bool,
) -> anyhow::Result<Disk> {
    use std::io::{Seek, Write};
    let path = dir.join(format!("bench-disk-{}.log", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    if preallocate {
        f.write_all(&vec![0u8; n * size])?;
        f.sync_all()?;
        f.seek(std::io::SeekFrom::Start(0))?;
    }
    let rec = vec![0x5au8; size];
    let mut lat = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&rec)?;
        f.sync_data()?;
        lat.push(t.elapsed());
    }
    let total = t0.elapsed();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(Disk::of(lat, total))
}

impl Disk {
    /// Rate and percentiles of one-at-a-time writes that took `lat` each, `total` in all.
    fn of(mut lat: Vec<Duration>, total: Duration) -> Disk {
        lat.sort();
        Disk {
            rate: rate(lat.len(), total),
            p50_us: percentile_us(&lat, 0.5),
            p99_us: percentile_us(&lat, 0.99),
        }
    }
}

/// Our event log alone, in this process and without gRPC: `n` events of `size` bytes
/// published one at a time through `Store::publish` (SQLite WAL, `synchronous=FULL`, one
/// commit and fsync per event) into a fresh log under `dir`. Set beside the disk line it
/// says how much of the gap to the disk is storage and how much is the transport.
pub async fn store_line(
    dir: &std::path::Path,
    tag: &str,
    n: usize,
    size: usize,
) -> anyhow::Result<Disk> {
    use ringrift_event_router::store::{Durability, Store};
    let dir = dir.join(format!("bench-store-{tag}"));
    let (store, _) = Store::open(
        &dir,
        Durability::Fsync,
        Duration::from_secs(300),
        ringrift_event_router::recent::Bounds {
            events: 16,
            bytes: 1 << 20,
        },
        Box::new(|_| {}),
    )
    .with_context(|| format!("open event log in {}", dir.display()))?;
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        events.push(ringrift_proto::Event::try_from(make_event(tag, i, size))?);
    }
    let mut lat = Vec::with_capacity(n);
    let t0 = Instant::now();
    for ev in events {
        let t = Instant::now();
        store.publish(vec![ev]).await?;
        lat.push(t.elapsed());
    }
    let total = t0.elapsed();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Disk::of(lat, total))
}

/// One round's figures for one side.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    /// One round trip that stores nothing (ours: unary `Stats`; NATS: PING/PONG flush).
    pub floor_p50_us: f64,
    pub floor_p99_us: f64,
    pub sync_rate: f64,
    pub sync_p50_us: f64,
    pub sync_p99_us: f64,
    pub stream_sync_rate: f64,
    pub stream_sync_p50_us: f64,
    pub stream_sync_p99_us: f64,
    pub pipelined_rate: f64,
    pub stream_rate: f64,
    pub batch_rate: f64,
    pub read_rate: f64,
    pub fanout_rate: f64,
}

/// Entry point of the binary.
pub fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringrift-bench-router: tokio runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringrift-bench-router: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Runs every configured side `rounds` times and prints the table.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let ours = [
        ("ours fsync", &args.router, "f"),
        ("ours relaxed", &args.router_relaxed, "x"),
        ("ours on JS", &args.router_jetstream, "j"),
    ];
    if ours.iter().all(|(_, a, _)| a.is_none()) && args.nats.is_none() {
        return Err(anyhow!(
            "nothing to benchmark: give --router, --router-relaxed, --router-jetstream and/or --nats"
        ));
    }
    if args.n == 0
        || args.n_sync == 0
        || args.batch == 0
        || args.in_flight == 0
        || args.ack_every == 0
        || args.fanout == 0
        || args.rounds == 0
    {
        return Err(anyhow!(
            "--n, --n-sync, --batch, --in-flight, --ack-every, --fanout and --rounds must be at least 1"
        ));
    }
    let run_tag = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let mut figures: Vec<Vec<Figures>> = vec![Vec::new(); ours.len()];
    let mut nats = Vec::new();
    let (mut disk, mut disk_pre, mut store) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        if let Some(dir) = &args.disk_dir {
            eprintln!(
                "round {}: disk (write + fdatasync) in {}",
                round + 1,
                dir.display()
            );
            let (dir, n, size) = (dir.clone(), args.n_sync, args.size);
            disk.push(
                tokio::task::spawn_blocking({
                    let dir = dir.clone();
                    move || disk_line(&dir, n, size, false)
                })
                .await??,
            );
            disk_pre.push(
                tokio::task::spawn_blocking({
                    let dir = dir.clone();
                    move || disk_line(&dir, n, size, true)
                })
                .await??,
            );
            eprintln!("round {}: our event log alone, in process", round + 1);
            store.push(store_line(&dir, &format!("{run_tag}r{round}"), n, size).await?);
        }
        // Alternate the order so neither side always runs on a warmer (or fuller) disk.
        let mut order: Vec<usize> = (0..=ours.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for side in order {
            let tag = format!("{run_tag}r{round}");
            if let Some((label, Some(addr), suffix)) = ours.get(side) {
                eprintln!("round {}: {label} at {addr}", round + 1);
                figures[side].push(
                    bench_router(&args, addr, &format!("{tag}{suffix}"))
                        .await
                        .with_context(|| label.to_string())?,
                );
            } else if side == ours.len()
                && let Some(addr) = &args.nats
            {
                eprintln!("round {}: NATS JetStream at {addr}", round + 1);
                nats.push(bench_nats(&args, addr, &tag).await.context("NATS")?);
            }
        }
    }
    let columns: Vec<(&str, Option<Figures>)> = ours
        .iter()
        .zip(&figures)
        .filter(|((_, addr, _), _)| addr.is_some())
        .map(|((label, _, _), f)| (*label, median(f)))
        .collect();
    let nats = median(&nats);
    print!("{}", render(&args, &columns, &nats));
    let fsync = median(&figures[0]);
    let js = median(&figures[2]);
    if let Some(js) = &js {
        print!("{}", render_jetstream(js, &nats, &fsync));
    }
    if !disk.is_empty() {
        let med = |rounds: &[Disk]| {
            let m = |get: fn(&Disk) -> f64| {
                let mut v: Vec<f64> = rounds.iter().map(get).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            Disk {
                rate: m(|d| d.rate),
                p50_us: m(|d| d.p50_us),
                p99_us: m(|d| d.p99_us),
            }
        };
        print!(
            "{}",
            render_disk(&med(&disk), &med(&disk_pre), &med(&store), &fsync)
        );
    }
    Ok(())
}

async fn phase<T>(
    args: &Args,
    what: &str,
    f: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let t = Duration::from_secs(args.phase_timeout_s);
    tokio::time::timeout(t, f)
        .await
        .map_err(|_| anyhow!("{what}: no result within {t:?}"))?
        .with_context(|| what.to_owned())
}

/// An EXTERNAL event whose encoding is exactly `size` bytes (when `size` allows it).
pub fn make_event(tag: &str, i: usize, size: usize) -> wire::Event {
    let build = |pad: usize| wire::Event {
        id: format!("{tag}-{i:09}"),
        r#type: wire::EventType::External as i32,
        source: "bench@localhost".into(),
        payload: Some(Payload::Json(
            serde_json::json!({ "i": i, "p": "x".repeat(pad) }).to_string(),
        )),
        ..Default::default()
    };
    let mut pad = size.saturating_sub(build(0).encoded_len());
    // Length prefixes are varints: step down if crossing a boundary overshot.
    while pad > 0 && build(pad).encoded_len() > size {
        pad -= 1;
    }
    build(pad)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx].as_secs_f64() * 1e6
}

// ---------------------------------------------------------------- our router

async fn bench_router(args: &Args, addr: &str, tag: &str) -> anyhow::Result<Figures> {
    let client = handler_base::router_client::connect(addr)
        .await
        .with_context(|| format!("connect to router {addr}"))?;
    let mut f = Figures::default();

    // (0) the transport alone: a unary call that touches no storage
    phase(args, "ours: round trip", async {
        let mut c = client.clone();
        let mut lat = Vec::with_capacity(args.n_sync);
        for _ in 0..args.n_sync {
            let t = Instant::now();
            c.stats(wire::StatsRequest::default()).await?;
            lat.push(t.elapsed());
        }
        lat.sort();
        (f.floor_p50_us, f.floor_p99_us) = (percentile_us(&lat, 0.50), percentile_us(&lat, 0.99));
        Ok(())
    })
    .await?;

    // (1) one at a time
    let events: Vec<_> = (0..args.n_sync)
        .map(|i| make_event(&format!("{tag}s"), i, args.size))
        .collect();
    phase(args, "ours: one-at-a-time publish", async {
        let mut c = client.clone();
        let mut lat = Vec::with_capacity(events.len());
        let t0 = Instant::now();
        for ev in events {
            let t = Instant::now();
            let ack = c.publish(ev).await?.into_inner();
            if ack.duplicate {
                return Err(anyhow!("event {} was acked as a duplicate", ack.id));
            }
            lat.push(t.elapsed());
        }
        f.sync_rate = rate(args.n_sync, t0.elapsed());
        lat.sort();
        f.sync_p50_us = percentile_us(&lat, 0.50);
        f.sync_p99_us = percentile_us(&lat, 0.99);
        Ok(())
    })
    .await?;

    // (1s) one at a time on one PublishStream
    let events: Vec<_> = (0..args.n_sync)
        .map(|i| make_event(&format!("{tag}t"), i, args.size))
        .collect();
    phase(args, "ours: one-at-a-time PublishStream", async {
        let r = stream_publish(client.clone(), events, 1).await?;
        f.stream_sync_rate = r.0;
        f.stream_sync_p50_us = r.1;
        f.stream_sync_p99_us = r.2;
        Ok(())
    })
    .await?;

    // (2s) pipelined on one PublishStream
    let events: Vec<_> = (0..args.n)
        .map(|i| make_event(&format!("{tag}q"), i, args.size))
        .collect();
    f.stream_rate = phase(args, "ours: pipelined PublishStream", async {
        Ok(stream_publish(client.clone(), events, args.in_flight)
            .await?
            .0)
    })
    .await?;

    // (2) pipelined unary publishes
    let events: Vec<_> = (0..args.n)
        .map(|i| make_event(&format!("{tag}p"), i, args.size))
        .collect();
    phase(args, "ours: pipelined publish", async {
        let mut inflight = FuturesUnordered::new();
        let t0 = Instant::now();
        for ev in events {
            if inflight.len() >= args.in_flight
                && let Some(r) = inflight.next().await
            {
                r?;
            }
            let mut c = client.clone();
            inflight.push(async move { c.publish(ev).await.map(|_| ()) });
        }
        while let Some(r) = inflight.next().await {
            r?;
        }
        f.pipelined_rate = rate(args.n, t0.elapsed());
        Ok(())
    })
    .await?;

    // (3) PublishBatch
    let events: Vec<_> = (0..args.n)
        .map(|i| make_event(&format!("{tag}b"), i, args.size))
        .collect();
    let batches: Vec<Vec<wire::Event>> = events
        .chunks(args.batch)
        .map(<[wire::Event]>::to_vec)
        .collect();
    drop(events);
    let first_seq = phase(args, "ours: batched publish", async {
        let mut inflight = FuturesUnordered::new();
        let mut first = u64::MAX;
        let mut fold = |r: Result<
                tonic::Response<wire::PublishBatchResponse>,
                tonic::Status,
            >|
             -> anyhow::Result<()> {
                for a in r?.into_inner().acks {
                    first = first.min(a.seq);
                }
                Ok(())
            };
        let t0 = Instant::now();
        for b in batches {
            if inflight.len() >= args.batches_in_flight
                && let Some(r) = inflight.next().await
            {
                fold(r)?;
            }
            let mut c = client.clone();
            inflight.push(async move {
                c.publish_batch(wire::PublishBatchRequest { events: b })
                    .await
            });
        }
        while let Some(r) = inflight.next().await {
            fold(r)?;
        }
        f.batch_rate = rate(args.n, t0.elapsed());
        Ok(first)
    })
    .await?;

    // (4) one durable consumer reads the stored batch
    f.read_rate = phase(args, "ours: durable consumer read", async {
        let t0 = Instant::now();
        router_read(
            client.clone(),
            format!("read-{tag}"),
            first_seq,
            args.n,
            args.ack_every,
        )
        .await?;
        Ok(rate(args.n, t0.elapsed()))
    })
    .await?;

    // (5) fan-out
    f.fanout_rate = phase(args, "ours: fan-out", async {
        let mut clients = Vec::new();
        for _ in 0..args.fanout {
            clients.push(handler_base::router_client::connect(addr).await?);
        }
        let t0 = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (k, c) in clients.into_iter().enumerate() {
            let (name, n, every) = (format!("fan{k}-{tag}"), args.n, args.ack_every);
            tasks.spawn(router_read(c, name, first_seq, n, every));
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok(rate(args.n * args.fanout, t0.elapsed()))
    })
    .await?;
    Ok(f)
}

/// Publishes `events` on one `PublishStream` with at most `in_flight` not yet acked;
/// checks every ack (in order, stored, no error). Returns (msgs/s, p50 µs, p99 µs), the
/// latencies being send-to-ack of each event.
async fn stream_publish(
    mut client: handler_base::router_client::Client,
    events: Vec<wire::Event>,
    in_flight: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let n = events.len();
    let (tx, rx) = tokio::sync::mpsc::channel::<wire::Event>(in_flight.max(1));
    let t0 = Instant::now();
    let mut acks = client
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(in_flight);
    let mut lat = Vec::with_capacity(n);
    let mut events = events.into_iter();
    let mut tx = Some(tx);
    let (mut sent, mut acked) = (0usize, 0usize);
    while acked < n {
        while sent < n && sent - acked < in_flight {
            let (Some(ev), Some(t)) = (events.next(), tx.as_ref()) else {
                break;
            };
            sent_at.push_back(Instant::now());
            t.send(ev)
                .await
                .map_err(|_| anyhow!("PublishStream request stream closed"))?;
            sent += 1;
        }
        if sent == n {
            tx = None; // half-close: the router ends the ack stream after the last ack
        }
        let a = acks
            .message()
            .await?
            .ok_or_else(|| anyhow!("PublishStream ended after {acked} of {n} acks"))?;
        if !a.error.is_empty() {
            return Err(anyhow!("event {} rejected: {}", a.id, a.error));
        }
        if a.duplicate {
            return Err(anyhow!("event {} was acked as a duplicate", a.id));
        }
        if a.id != ids[acked] {
            return Err(anyhow!(
                "ack {acked} is for {} where {} was expected",
                a.id,
                ids[acked]
            ));
        }
        if let Some(t) = sent_at.pop_front() {
            lat.push(t.elapsed());
        }
        acked += 1;
    }
    let elapsed = t0.elapsed();
    if let Some(extra) = acks.message().await? {
        return Err(anyhow!("unexpected extra ack for {}", extra.id));
    }
    lat.sort();
    Ok((
        rate(n, elapsed),
        percentile_us(&lat, 0.50),
        percentile_us(&lat, 0.99),
    ))
}

/// Reads `n` events from seq `from` as durable consumer `name`, acking cumulatively.
async fn router_read(
    client: handler_base::router_client::Client,
    name: String,
    from: u64,
    n: usize,
    ack_every: usize,
) -> anyhow::Result<()> {
    let mut sub = client.clone();
    let req = wire::SubscribeRequest {
        consumer: name.clone(),
        start: Some(Start::FromSeq(from)),
        ..Default::default()
    };
    let mut stream = sub.subscribe(req).await?.into_inner();
    let mut acking: Option<tokio::task::JoinHandle<Result<(), tonic::Status>>> = None;
    let mut got = 0usize;
    let mut expect = from;
    while got < n {
        let ev = stream
            .message()
            .await?
            .ok_or_else(|| anyhow!("{name}: stream ended after {got} of {n} events"))?;
        if ev.seq != expect {
            return Err(anyhow!(
                "{name}: got seq {} where {expect} was expected",
                ev.seq
            ));
        }
        expect += 1;
        got += 1;
        if got.is_multiple_of(ack_every) || got == n {
            if let Some(h) = acking.take() {
                h.await??;
            }
            let mut c = client.clone();
            let req = wire::AckRequest {
                consumer: name.clone(),
                seq: ev.seq,
                cumulative: true,
                ..Default::default()
            };
            acking = Some(tokio::spawn(async move { c.ack(req).await.map(|_| ()) }));
        }
    }
    if let Some(h) = acking.take() {
        h.await??;
    }
    Ok(())
}

// ---------------------------------------------------------------- NATS JetStream

async fn bench_nats(args: &Args, addr: &str, tag: &str) -> anyhow::Result<Figures> {
    let client = async_nats::connect(addr)
        .await
        .with_context(|| format!("connect to NATS {addr}"))?;
    let nc = client.clone();
    let js = jetstream::new(client);
    let stream = js
        .get_or_create_stream(js_stream::Config {
            name: "BENCH".into(),
            subjects: vec!["bench.>".into()],
            storage: js_stream::StorageType::File,
            num_replicas: args.nats_replicas,
            // As the router's stream: dedup by Nats-Msg-Id over its dedup window.
            duplicate_window: Duration::from_secs(300),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("create stream BENCH: {e}"))?;
    // Each message carries its event id as Nats-Msg-Id, as the router's publishes do.
    let payloads = |kind: &str, n: usize| -> Vec<(async_nats::HeaderMap, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let ev = make_event(&format!("{tag}{kind}"), i, args.size);
                let mut h = async_nats::HeaderMap::new();
                h.insert(async_nats::header::NATS_MESSAGE_ID, ev.id.as_str());
                (h, ev.encode_to_vec())
            })
            .collect()
    };
    let mut f = Figures::default();

    // (0) a round trip to the server that stores nothing: a JetStream API info request
    phase(args, "NATS: round trip", async {
        let mut lat = Vec::with_capacity(args.n_sync);
        for _ in 0..args.n_sync {
            let t = Instant::now();
            // Raw request: the reply is not parsed, so only the round trip is timed.
            nc.request("$JS.API.INFO", Vec::new().into())
                .await
                .map_err(|e| anyhow!("$JS.API.INFO: {e}"))?;
            lat.push(t.elapsed());
        }
        lat.sort();
        (f.floor_p50_us, f.floor_p99_us) = (percentile_us(&lat, 0.50), percentile_us(&lat, 0.99));
        Ok(())
    })
    .await?;

    // (1) one at a time
    let subject = format!("bench.{tag}.sync");
    let msgs = payloads("s", args.n_sync);
    phase(args, "NATS: one-at-a-time publish", async {
        let mut lat = Vec::with_capacity(msgs.len());
        let t0 = Instant::now();
        for m in msgs {
            let t = Instant::now();
            js.publish_with_headers(subject.clone(), m.0, m.1.into())
                .await
                .map_err(|e| anyhow!("publish: {e}"))?
                .await
                .map_err(|e| anyhow!("publish ack: {e}"))?;
            lat.push(t.elapsed());
        }
        f.sync_rate = rate(args.n_sync, t0.elapsed());
        lat.sort();
        f.sync_p50_us = percentile_us(&lat, 0.50);
        f.sync_p99_us = percentile_us(&lat, 0.99);
        (
            f.stream_sync_rate,
            f.stream_sync_p50_us,
            f.stream_sync_p99_us,
        ) = (f.sync_rate, f.sync_p50_us, f.sync_p99_us);
        Ok(())
    })
    .await?;

    // (2) async publish, `in_flight` acks outstanding (also the batched line)
    let subject = format!("bench.{tag}.async");
    let msgs = payloads("p", args.n);
    phase(args, "NATS: async publish", async {
        let mut acks: VecDeque<jetstream::context::PublishAckFuture> =
            VecDeque::with_capacity(args.in_flight);
        let t0 = Instant::now();
        for m in msgs {
            if acks.len() >= args.in_flight
                && let Some(a) = acks.pop_front()
            {
                a.await.map_err(|e| anyhow!("publish ack: {e}"))?;
            }
            acks.push_back(
                js.publish_with_headers(subject.clone(), m.0, m.1.into())
                    .await
                    .map_err(|e| anyhow!("publish: {e}"))?,
            );
        }
        while let Some(a) = acks.pop_front() {
            a.await.map_err(|e| anyhow!("publish ack: {e}"))?;
        }
        f.pipelined_rate = rate(args.n, t0.elapsed());
        f.batch_rate = f.pipelined_rate;
        f.stream_rate = f.pipelined_rate;
        Ok(())
    })
    .await?;

    // (4) one durable pull consumer
    f.read_rate = phase(args, "NATS: durable consumer read", async {
        let t0 = Instant::now();
        nats_read(
            stream.clone(),
            format!("read-{tag}"),
            subject.clone(),
            args.n,
            args.ack_every,
        )
        .await?;
        Ok(rate(args.n, t0.elapsed()))
    })
    .await?;

    // (5) fan-out, one connection per consumer
    f.fanout_rate = phase(args, "NATS: fan-out", async {
        let mut streams = Vec::new();
        for _ in 0..args.fanout {
            let c = async_nats::connect(addr).await?;
            streams.push(
                jetstream::new(c)
                    .get_stream("BENCH")
                    .await
                    .map_err(|e| anyhow!("get stream: {e}"))?,
            );
        }
        let t0 = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (k, s) in streams.into_iter().enumerate() {
            tasks.spawn(nats_read(
                s,
                format!("fan{k}-{tag}"),
                subject.clone(),
                args.n,
                args.ack_every,
            ));
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok(rate(args.n * args.fanout, t0.elapsed()))
    })
    .await?;
    Ok(f)
}

/// Creates durable pull consumer `name` on `subject` and reads `n` messages, acking
/// (AckPolicy::All) every `ack_every`-th message and the last.
async fn nats_read(
    stream: js_stream::Stream,
    name: String,
    subject: String,
    n: usize,
    ack_every: usize,
) -> anyhow::Result<()> {
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: subject,
            ack_policy: jetstream::consumer::AckPolicy::All,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("create consumer {name}: {e}"))?;
    let mut msgs = consumer
        .stream()
        .max_messages_per_batch(500)
        .messages()
        .await
        .map_err(|e| anyhow!("{name}: pull: {e}"))?;
    let mut got = 0usize;
    while got < n {
        let m = msgs
            .next()
            .await
            .ok_or_else(|| anyhow!("{name}: stream ended after {got} of {n}"))?
            .map_err(|e| anyhow!("{name}: {e}"))?;
        got += 1;
        if got.is_multiple_of(ack_every) || got == n {
            m.ack().await.map_err(|e| anyhow!("{name}: ack: {e}"))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- report

/// Median of each figure over the rounds (all zero when there are none).
pub fn median(rounds: &[Figures]) -> Option<Figures> {
    if rounds.is_empty() {
        return None;
    }
    let med = |get: fn(&Figures) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(get).collect();
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    };
    Some(Figures {
        floor_p50_us: med(|f| f.floor_p50_us),
        floor_p99_us: med(|f| f.floor_p99_us),
        sync_rate: med(|f| f.sync_rate),
        sync_p50_us: med(|f| f.sync_p50_us),
        sync_p99_us: med(|f| f.sync_p99_us),
        stream_sync_rate: med(|f| f.stream_sync_rate),
        stream_sync_p50_us: med(|f| f.stream_sync_p50_us),
        stream_sync_p99_us: med(|f| f.stream_sync_p99_us),
        pipelined_rate: med(|f| f.pipelined_rate),
        stream_rate: med(|f| f.stream_rate),
        batch_rate: med(|f| f.batch_rate),
        read_rate: med(|f| f.read_rate),
        fanout_rate: med(|f| f.fanout_rate),
    })
}

/// The printed table. Ratios are "> 1.0 = ours better": ours/NATS for rates,
/// NATS/ours for latencies.
pub fn render(args: &Args, ours: &[(&str, Option<Figures>)], nats: &Option<Figures>) -> String {
    struct Row {
        name: String,
        get: fn(&Figures) -> f64,
        latency: bool,
    }
    let rows = [
        Row {
            name: "0. round trip storing nothing (Stats / JS INFO), p50 us".into(),
            get: |f| f.floor_p50_us,
            latency: true,
        },
        Row {
            name: "   p99 us (ratio NATS/ours)".into(),
            get: |f| f.floor_p99_us,
            latency: true,
        },
        Row {
            name: "1. one-at-a-time publish: ours unary Publish, msgs/s".into(),
            get: |f| f.sync_rate,
            latency: false,
        },
        Row {
            name: "   p50 latency, us (ratio NATS/ours)".into(),
            get: |f| f.sync_p50_us,
            latency: true,
        },
        Row {
            name: "   p99 latency, us (ratio NATS/ours)".into(),
            get: |f| f.sync_p99_us,
            latency: true,
        },
        Row {
            name: "1s. one-at-a-time: ours PublishStream, msgs/s".into(),
            get: |f| f.stream_sync_rate,
            latency: false,
        },
        Row {
            name: "   p50 latency, us (ratio NATS/ours)".into(),
            get: |f| f.stream_sync_p50_us,
            latency: true,
        },
        Row {
            name: "   p99 latency, us (ratio NATS/ours)".into(),
            get: |f| f.stream_sync_p99_us,
            latency: true,
        },
        Row {
            name: format!(
                "2. pipelined, {} in flight: ours unary Publish, msgs/s",
                args.in_flight
            ),
            get: |f| f.pipelined_rate,
            latency: false,
        },
        Row {
            name: format!(
                "2s. pipelined, {} in flight: ours PublishStream, msgs/s",
                args.in_flight
            ),
            get: |f| f.stream_rate,
            latency: false,
        },
        Row {
            name: format!(
                "2b. batched: ours PublishBatch {}x{} in flight, msgs/s",
                args.batch, args.batches_in_flight
            ),
            get: |f| f.batch_rate,
            latency: false,
        },
        Row {
            name: "3. durable consumer read + acks, msgs/s".into(),
            get: |f| f.read_rate,
            latency: false,
        },
        Row {
            name: format!(
                "4. fan-out to {} durable consumers, total msgs/s",
                args.fanout
            ),
            get: |f| f.fanout_rate,
            latency: false,
        },
    ];
    let cell = |f: &Option<Figures>, r: &Row| {
        f.as_ref()
            .map(|f| format!("{:.0}", (r.get)(f)))
            .unwrap_or_else(|| "-".into())
    };
    let ratio = |ours: &Option<Figures>, r: &Row| match (ours, nats) {
        (Some(o), Some(n)) => {
            let (o, n) = ((r.get)(o), (r.get)(n));
            let x = if r.latency { n / o } else { o / n };
            if x.is_finite() {
                format!("{x:.2}")
            } else {
                "-".into()
            }
        }
        _ => "-".into(),
    };
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(10);
    let mut s = String::new();
    s.push_str(&format!(
        "\nrouter vs NATS JetStream, loopback, {} B messages; n = {} (publish/read/fan-out), n_sync = {}; median of {} round(s)\n",
        args.size, args.n, args.n_sync, args.rounds
    ));
    s.push_str("durability: ours fsync = SQLite WAL synchronous=FULL, fsync before each ack (group commit);\n");
    s.push_str("            ours relaxed = synchronous=NORMAL, no fsync before the ack;\n");
    s.push_str("            ours on JS = the router on JetStream (ack after the stream's ack, R as configured);\n");
    s.push_str(&format!("            NATS 2.9 = ack after the page-cache write, periodic fsync (not before the ack); stream R{}.\n", args.nats_replicas));
    s.push_str(&format!("reads: ours = named consumer, cumulative Ack every {e}; NATS = durable pull consumer, AckPolicy::All, ack every {e}th + last.\n", e = args.ack_every));
    s.push_str("NATS publishes one way only: its line 1s repeats line 1, its lines 2s and 2b repeat line 2.\n\n");
    let mut head = format!("{:<w$} | {:>9}", "metric", "NATS");
    for (label, _) in ours {
        head.push_str(&format!(
            " | {label:>12} | {:>14}",
            format!("{}/NATS", label.trim_start_matches("ours "))
        ));
    }
    head.push('\n');
    s.push_str(&head);
    s.push_str(&format!("{}\n", "-".repeat(head.len() - 1)));
    for r in &rows {
        s.push_str(&format!("{:<w$} | {:>9}", r.name, cell(nats, r)));
        for (_, f) in ours {
            s.push_str(&format!(" | {:>12} | {:>14}", cell(f, r), ratio(f, r)));
        }
        s.push('\n');
    }
    s
}

/// The JetStream backend's summary: the overhead of our API over direct NATS publishing
/// on the same cluster (one-at-a-time p50 latency, target <= 1.3x) and the comparison
/// with the SQLite backend.
pub fn render_jetstream(js: &Figures, nats: &Option<Figures>, sqlite: &Option<Figures>) -> String {
    let mut s = String::from("
JetStream backend, one-at-a-time publish (unary Publish; ratios ours/other, latency: < 1 = ours faster):\n");
    s.push_str(&format!(
        "  ours on JetStream: p50 {:.0} us, p99 {:.0} us, {:.0} msgs/s\n",
        js.sync_p50_us, js.sync_p99_us, js.sync_rate
    ));
    if let Some(n) = nats {
        s.push_str(&format!(
            "  direct NATS:       p50 {:.0} us, p99 {:.0} us, {:.0} msgs/s\n",
            n.sync_p50_us, n.sync_p99_us, n.sync_rate
        ));
        s.push_str(&format!(
            "  latency ratio ours-on-JetStream / direct NATS (p50): {:.2}x (target <= 1.3x); rate ratio {:.2}\n",
            js.sync_p50_us / n.sync_p50_us,
            js.sync_rate / n.sync_rate
        ));
    }
    if let Some(q) = sqlite {
        s.push_str(&format!(
            "  ours on SQLite (fsync): p50 {:.0} us, p99 {:.0} us, {:.0} msgs/s\n",
            q.sync_p50_us, q.sync_p99_us, q.sync_rate
        ));
        s.push_str(&format!(
            "  latency ratio ours-on-JetStream / ours-on-SQLite (p50): {:.2}x; rate ratio {:.2}; batched rate ratio {:.2}\n",
            js.sync_p50_us / q.sync_p50_us,
            js.sync_rate / q.sync_rate,
            js.batch_rate / q.batch_rate
        ));
    }
    s
}

/// The disk lines beside ours: the fsync ceiling of one-at-a-time durable publishes.
pub fn render_disk(append: &Disk, pre: &Disk, store: &Disk, fsync: &Option<Figures>) -> String {
    let mut s = String::from(
        "\ndisk, same directory as the fsync router's log, one record + fdatasync at a time:\n",
    );
    for (what, d) in [
        ("append (file grows)", append),
        ("overwrite in a preallocated file", pre),
    ] {
        s.push_str(&format!(
            "  {what}: {:.0} records/s, p50 {:.0} us, p99 {:.0} us\n",
            d.rate, d.p50_us, d.p99_us
        ));
        if let Some(f) = fsync {
            s.push_str(&format!(
                "    ours fsync / this: line 1 (unary) {:.2}, line 1s (PublishStream) {:.2}\n",
                f.sync_rate / d.rate,
                f.stream_sync_rate / d.rate
            ));
        }
    }
    s.push_str(&format!(
        "our event log alone (in process, no gRPC; SQLite WAL FULL, a commit + fsync per event):\n  {:.0} events/s, p50 {:.0} us, p99 {:.0} us; / disk append: rate {:.2}, p50 {:.2} (an append-only segment log's best is 1.00)\n",
        store.rate,
        store.p50_us,
        store.p99_us,
        store.rate / append.rate,
        append.p50_us / store.p50_us
    ));
    if let Some(f) = fsync {
        s.push_str(&format!(
            "  line 1 p50 {:.0} us = log alone {:.0} + transport and hand-offs {:.0} (line 0, a gRPC round trip storing nothing: {:.0})\n",
            f.sync_p50_us,
            store.p50_us,
            f.sync_p50_us - store.p50_us,
            f.floor_p50_us
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_the_requested_size_and_validate() {
        for i in [0, 7, 12_345, 999_999] {
            let ev = make_event("abc123r0f", i, 128);
            assert_eq!(ev.encoded_len(), 128);
            assert!(ringrift_proto::Event::try_from(ev).is_ok());
        }
    }

    #[test]
    fn percentiles_pick_the_right_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile_us(&v, 0.5), 50.0);
        assert_eq!(percentile_us(&v, 0.99), 99.0);
    }
}
