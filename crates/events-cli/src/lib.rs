//! `ringrift-events`: publish, tail and inspect the dead-letter queue of the router.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ringrift_proto::{EventType, payload_to_json, type_name, wire};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "ringrift-events",
    about = "Publish, tail and inspect events of the RingRift event router"
)]
struct Cli {
    /// Router address host:port (default: $RINGRIFT_HOME/run/event_router.addr, else 127.0.0.1:8780).
    #[arg(long, global = true)]
    router: Option<String>,
    /// State directory used to find the router address.
    #[arg(long, global = true)]
    home: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Publish one event, e.g. `emit NEW_GAMES_AVAILABLE --payload '{"new_games": 10}'`.
    Emit {
        /// Event type name from the catalogue.
        r#type: String,
        /// Payload as a JSON object; it must fit the type's payload message.
        #[arg(long, default_value = "{}")]
        payload: String,
        #[arg(long = "config-key", default_value = "")]
        config_key: String,
        /// Dedup id (default: a new UUID).
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "ringrift-events@cli")]
        source: String,
    },
    /// Print events as they arrive.
    Tail {
        /// Only these types (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
        /// Only types starting with this prefix (repeatable), e.g. DAEMON_.
        #[arg(long)]
        prefix: Vec<String>,
        /// Start at this seq (default: only new events; 1 = everything retained).
        #[arg(long)]
        from: Option<u64>,
        /// Durable consumer name: resume after its last ack, ack what is printed.
        #[arg(long)]
        consumer: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Dead-letter queue.
    Dlq {
        #[command(subcommand)]
        cmd: DlqCmd,
    },
    /// Router counters and consumers.
    Stats {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCmd {
    /// List dead letters.
    List {
        #[arg(long)]
        consumer: Option<String>,
        /// Include delivered and given-up letters.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Redeliver one dead letter now.
    Retry { id: u64 },
    /// Delete dead letters (not those being retried).
    Purge {
        #[arg(long)]
        consumer: Option<String>,
    },
}

pub fn main() -> ExitCode {
    let cli = match handler_base::cli::parse_args::<Cli>() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringrift-events: start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringrift-events: {e:#}");
            if e.downcast_ref::<handler_base::ConfigError>().is_some() {
                ExitCode::from(64)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn parse_type(name: &str) -> anyhow::Result<EventType> {
    match EventType::from_str_name(&name.to_ascii_uppercase()) {
        Some(EventType::Unspecified) | None => {
            Err(handler_base::ConfigError::Usage(format!("unknown event type {name:?}")).into())
        }
        Some(t) => Ok(t),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let home = handler_base::settings::resolve_home(cli.home.as_deref());
    let addr = cli
        .router
        .or_else(|| handler_base::read_addr_file(&home, "event_router"))
        .unwrap_or_else(|| "127.0.0.1:8780".into());
    // The token: `auth.token` of the home's settings, else RINGRIFT_TOKEN.
    let settings = handler_base::Settings::load(&handler_base::settings::Sources::standard(
        &home,
        None,
        Vec::new(),
    ))?;
    let token = handler_base::auth::load(&settings)?;
    let bearer = handler_base::tls::Tls::load(&settings)?.bearer(token.as_ref());
    let mut client = handler_base::router_client::connect_with(&addr, bearer)
        .await
        .with_context(|| format!("connect to router at {addr}"))?;
    match cli.cmd {
        Cmd::Emit {
            r#type,
            payload,
            config_key,
            id,
            source,
        } => {
            let kind = parse_type(&r#type)?;
            let ev = wire::Event {
                id: id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                r#type: kind as i32,
                source,
                time_unix_ms: handler_base::router_client::now_ms(),
                config_key,
                seq: 0,
                payload: Some(wire::event::Payload::Json(payload)),
            };
            let ack = client
                .publish(ev)
                .await
                .map_err(|s| anyhow::anyhow!("{}: {}", code_name(&s), s.message()))?
                .into_inner();
            println!(
                "seq={} id={}{}",
                ack.seq,
                ack.id,
                if ack.duplicate { " duplicate" } else { "" }
            );
        }
        Cmd::Tail {
            types,
            prefix,
            from,
            consumer,
            json,
            count,
        } => {
            let types = types
                .iter()
                .map(|t| parse_type(t).map(|t| t as i32))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let start = match from {
                Some(s) => wire::subscribe_request::Start::FromSeq(s),
                None => wire::subscribe_request::Start::Latest(true),
            };
            let req = wire::SubscribeRequest {
                consumer: consumer.clone().unwrap_or_default(),
                types,
                prefixes: prefix,
                start: Some(start),
                ..Default::default()
            };
            let mut stream = client
                .subscribe(req)
                .await
                .map_err(|s| anyhow::anyhow!("subscribe: {}", s.message()))?
                .into_inner();
            let mut seen = 0u64;
            while let Some(ev) = stream.message().await.context("event stream")? {
                print_event(&ev, json);
                if let Some(name) = &consumer {
                    client
                        .ack(wire::AckRequest {
                            consumer: name.clone(),
                            seq: ev.seq,
                            cumulative: true,
                            ..Default::default()
                        })
                        .await
                        .context("ack")?;
                }
                seen += 1;
                if count.is_some_and(|c| seen >= c) {
                    break;
                }
            }
        }
        Cmd::Dlq {
            cmd:
                DlqCmd::List {
                    consumer,
                    all,
                    json,
                },
        } => {
            let r = client
                .list_dead_letters(wire::ListDeadLettersRequest {
                    consumer: consumer.unwrap_or_default(),
                    include_resolved: all,
                })
                .await?
                .into_inner();
            if !json {
                println!(
                    "{:>6} {:<24} {:>8} {:<24} {:>8} {:>7} {:<9} reason",
                    "id", "consumer", "seq", "type", "failures", "retries", "state"
                );
            }
            for l in r.letters {
                let t = EventType::try_from(l.r#type).map(type_name).unwrap_or("?");
                let state = wire::DeadLetterState::try_from(l.state)
                    .map(|s| s.as_str_name())
                    .unwrap_or("?");
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"id": l.id, "consumer": l.consumer, "seq": l.seq, "type": t, "reason": l.reason, "failures": l.failures, "retries": l.retries, "dead_at_unix_ms": l.dead_at_unix_ms, "last_retry_unix_ms": l.last_retry_unix_ms, "state": state})
                    );
                } else {
                    println!(
                        "{:>6} {:<24} {:>8} {:<24} {:>8} {:>7} {:<9} {}",
                        l.id, l.consumer, l.seq, t, l.failures, l.retries, state, l.reason
                    );
                }
            }
        }
        Cmd::Dlq {
            cmd: DlqCmd::Retry { id },
        } => {
            let r = client
                .retry_dead_letter(wire::RetryDeadLetterRequest { id })
                .await
                .map_err(|s| anyhow::anyhow!("retry {id}: {}", s.message()))?
                .into_inner();
            let l = r.letter.context("router returned no letter")?;
            println!(
                "dead letter {} queued for redelivery to {} (retry {})",
                l.id, l.consumer, l.retries
            );
        }
        Cmd::Dlq {
            cmd: DlqCmd::Purge { consumer },
        } => {
            let r = client
                .purge_dead_letters(wire::PurgeDeadLettersRequest {
                    consumer: consumer.unwrap_or_default(),
                })
                .await?
                .into_inner();
            println!("purged {} dead letters", r.purged);
        }
        Cmd::Stats { json } => {
            let s = client.stats(wire::StatsRequest {}).await?.into_inner();
            if json {
                let consumers: Vec<_> = s.consumers.iter().map(|c| serde_json::json!({"name": c.name, "ack_floor": c.ack_floor, "lag": c.lag, "pending": c.pending, "connected": c.connected})).collect();
                println!(
                    "{}",
                    serde_json::json!({"head_seq": s.head_seq, "published": s.published, "duplicates": s.duplicates, "delivered": s.delivered, "dead_lettered": s.dead_lettered, "consumers": consumers})
                );
            } else {
                println!(
                    "head={} published={} duplicates={} delivered={} dead_lettered={}",
                    s.head_seq, s.published, s.duplicates, s.delivered, s.dead_lettered
                );
                for c in s.consumers {
                    println!(
                        "  consumer {:<28} floor={:<8} lag={:<8} pending={:<6} {}",
                        c.name,
                        c.ack_floor,
                        c.lag,
                        c.pending,
                        if c.connected { "connected" } else { "-" }
                    );
                }
            }
        }
    }
    Ok(())
}

fn code_name(s: &tonic::Status) -> String {
    format!("{:?}", s.code())
}

fn print_event(ev: &wire::Event, json: bool) {
    let t = EventType::try_from(ev.r#type).map(type_name).unwrap_or("?");
    let payload = ev
        .payload
        .as_ref()
        .map(payload_to_json)
        .unwrap_or(serde_json::Value::Null);
    if json {
        println!(
            "{}",
            serde_json::json!({"seq": ev.seq, "id": ev.id, "type": t, "source": ev.source, "time_unix_ms": ev.time_unix_ms, "config_key": ev.config_key, "payload": payload})
        );
    } else {
        println!(
            "{:>8} {} {:<24} {:<28} {:<12} {}",
            ev.seq, ev.time_unix_ms, t, ev.source, ev.config_key, payload
        );
    }
}
