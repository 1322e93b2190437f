//! The data server's accept loop: caps on open connections (per remote IP and in total;
//! one over a cap is closed at once) and a deadline for each request's headers (an idle
//! keep-alive connection included), so clients that connect and stay slow or silent
//! cannot hold what a peer's sync needs. Request bodies have their own deadline
//! ([`super::app`]'s body timeout).

use axum::extract::ConnectInfo;
use handler_base::tls::{Incoming, Remote};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The caps and the header deadline (`[data_server]` settings).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_timeout: Duration,
}

/// Connections open now, per remote IP and in total; and how many were refused.
#[derive(Default)]
pub struct Admission {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    refused: AtomicU64,
}

/// One admitted connection's place; given back when dropped.
struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .admission
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

impl Admission {
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let from_ip = open.1.get(&ip).copied().unwrap_or(0);
        if open.0 >= limits.max_connections || from_ip >= limits.max_connections_per_ip {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        Some(Slot {
            admission: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Connections closed at once since start (a cap was reached).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown`; then lets open requests
/// finish for at most 5 s.
pub async fn serve(
    mut listener: Incoming,
    app: axum::Router,
    limits: Limits,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
) {
    use axum::serve::Listener;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut last_warned: Option<std::time::Instant> = None;
    loop {
        let (conn, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            c = listener.accept() => c,
        };
        let Some(slot) = admission.admit(remote.ip(), &limits) else {
            // Closed at once; logged at most once a minute (a flood must not flood the log).
            if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                last_warned = Some(std::time::Instant::now());
                tracing::warn!(%remote, open = admission.open(), refused = admission.refused(),
                    max_connections = limits.max_connections,
                    max_connections_per_ip = limits.max_connections_per_ip,
                    "connection refused: a connection cap is reached");
            }
            continue;
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut().insert(ConnectInfo(Remote(remote)));
            tower::ServiceExt::oneshot(app.clone(), req)
        });
        let conn = builder
            .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(conn), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still open 5 s after shutdown; closing them");
    }
}
