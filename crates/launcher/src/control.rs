//! The launcher's control API (gRPC `Supervisor`, HTTP `GET /health` and `GET /status` on
//! one port, 127.0.0.1:8790 by default) and the client side used by `--status`,
//! `--watch`, `stop` and `restart`. `/health` is open (no token) and says only whether
//! every daemon is in order: 200 `ok`, or 503 `failed` while one is FAILED; the status
//! table (pids, exits, health messages with error text) is `/status`, behind the token.

use crate::supervise::{Control, Entry, Shared};
use handler_base::status_body::{DaemonState, LauncherStatus};
use ringrift_proto::wire::{
    self,
    supervisor_client::SupervisorClient,
    supervisor_server::{Supervisor, SupervisorServer},
};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

fn status_of(name: &str, e: &Entry) -> wire::DaemonStatus {
    wire::DaemonStatus {
        name: name.to_owned(),
        pid: e.pid,
        state: e.state as i32,
        restarts: e.restarts,
        uptime_s: e
            .since
            .map(|t| t.elapsed().as_secs_f64())
            .filter(|_| e.pid != 0)
            .unwrap_or(0.0),
        last_exit: e.last_exit.clone(),
        health: e.health.clone(),
        note: e.note.clone(),
    }
}

pub fn snapshot(sh: &Shared) -> wire::StatusResponse {
    wire::StatusResponse {
        profile: sh.profile.clone(),
        launcher_pid: std::process::id(),
        daemons: sh.entries().iter().map(|(n, e)| status_of(n, e)).collect(),
    }
}

struct Api(Arc<Shared>);

impl Api {
    async fn act(&self, name: &str, c: Control) -> Result<Response<wire::DaemonResponse>, Status> {
        self.0.control(name, c).await.map_err(Status::not_found)?;
        let e = self.0.entries();
        let d = e.get(name).map(|e| status_of(name, e));
        Ok(Response::new(wire::DaemonResponse { daemon: d }))
    }
}

#[tonic::async_trait]
impl Supervisor for Api {
    async fn status(
        &self,
        _r: Request<wire::StatusRequest>,
    ) -> Result<Response<wire::StatusResponse>, Status> {
        Ok(Response::new(snapshot(&self.0)))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<wire::StatusResponse, Status>> + Send>>;

    async fn watch(
        &self,
        _r: Request<wire::StatusRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let sh = self.0.clone();
        let mut rx = sh.version.subscribe();
        let (tx, out) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                rx.borrow_and_update();
                if tx.send(Ok(snapshot(&sh))).await.is_err() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
                // Coalesce bursts of changes into one redraw.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    async fn stop(
        &self,
        r: Request<wire::DaemonRequest>,
    ) -> Result<Response<wire::DaemonResponse>, Status> {
        self.act(&r.into_inner().name, Control::Stop).await
    }

    async fn restart(
        &self,
        r: Request<wire::DaemonRequest>,
    ) -> Result<Response<wire::DaemonResponse>, Status> {
        self.act(&r.into_inner().name, Control::Restart).await
    }
}

/// The full status as its typed JSON body, for `GET /status` and `--status --json`.
pub fn status_body(s: &wire::StatusResponse) -> LauncherStatus {
    LauncherStatus::from(s)
}

/// The open `/health` answer: a status code and one word, nothing from the table.
fn bare_health(s: &wire::StatusResponse) -> (axum::http::StatusCode, &'static str) {
    let failed = s
        .daemons
        .iter()
        .any(|d| d.state == wire::DaemonState::Failed as i32);
    if failed {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "failed")
    } else {
        (axum::http::StatusCode::OK, "ok")
    }
}

/// Serves the control API on `listener` until `shutdown` (behind `token`, if any).
pub async fn serve(
    sh: Arc<Shared>,
    listener: handler_base::tls::Incoming,
    shutdown: tokio_util::sync::CancellationToken,
    token: Option<handler_base::auth::Token>,
) -> anyhow::Result<()> {
    let (hs, ss) = (sh.clone(), sh.clone());
    let http = axum::Router::new()
        .route(
            "/health",
            axum::routing::get(move || {
                let sh = hs.clone();
                async move { bare_health(&snapshot(&sh)) }
            }),
        )
        .route(
            "/status",
            axum::routing::get(move || {
                let sh = ss.clone();
                async move { axum::Json(status_body(&snapshot(&sh))) }
            }),
        );
    let app = tonic::service::Routes::new(SupervisorServer::new(Api(sh)))
        .into_axum_router()
        .merge(http);
    let app = handler_base::auth::protect(app, token);
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(app))
        .serve_with_incoming_shutdown(listener, async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

/// A control API client (sending the token, if any).
pub type Client = SupervisorClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        handler_base::router_client::Bearer,
    >,
>;

/// Connects to a running launcher or says clearly that none runs there.
pub async fn connect(
    addr: &str,
    bearer: handler_base::router_client::Bearer,
) -> anyhow::Result<Client> {
    let ep = bearer.endpoint(addr)?;
    match ep.connect().await {
        Ok(ch) => Ok(SupervisorClient::with_interceptor(ch, bearer)),
        Err(_) => anyhow::bail!(
            "no launcher is running (nothing answers on {addr}; start one with `ringrift-launcher --profile standard`)"
        ),
    }
}

fn fmt_uptime(s: f64) -> String {
    let s = s as u64;
    if s == 0 {
        "-".into()
    } else if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else {
        format!("{}h{}m", s / 3600, (s % 3600) / 60)
    }
}

/// The `--status` table.
pub fn table(s: &wire::StatusResponse) -> String {
    let mut out = format!("profile {}  launcher pid {}\n", s.profile, s.launcher_pid);
    out.push_str(&format!(
        "{:<28} {:<9} {:>8} {:>8} {:>8} {:<12} {:<9} {}\n",
        "DAEMON", "STATE", "PID", "RESTARTS", "UPTIME", "LAST EXIT", "HEALTH", "MESSAGE"
    ));
    for d in &s.daemons {
        let (health, msg) = match &d.health {
            Some(h) => (
                wire::HealthStatus::try_from(h.status)
                    .map(|s| s.as_str_name())
                    .unwrap_or("?"),
                h.message.as_str(),
            ),
            None => ("-", d.note.as_str()),
        };
        let pid = if d.pid == 0 {
            "-".to_owned()
        } else {
            d.pid.to_string()
        };
        let last = if d.last_exit.is_empty() {
            "-"
        } else {
            d.last_exit.as_str()
        };
        out.push_str(&format!(
            "{:<28} {:<9} {:>8} {:>8} {:>8} {:<12} {:<9} {}\n",
            d.name,
            DaemonState::from_wire(d.state).as_str(),
            pid,
            d.restarts,
            fmt_uptime(d.uptime_s),
            last,
            health,
            msg
        ));
    }
    out
}
