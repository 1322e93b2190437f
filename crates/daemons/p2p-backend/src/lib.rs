//! `p2p_backend`: the node's peer API on 127.0.0.1:8770 (gRPC `ringrift.v1.P2p` and JSON
//! `GET /status` on one port, `run/p2p_backend.addr`), behind the shared token.
//!
//! Every `membership.heartbeat_interval_s` it calls `Heartbeat` on each peer of
//! `cluster.toml`; an answer, or a heartbeat a peer sends us, counts as hearing from it.
//! The membership state machine of `ringrift-cluster` turns silence into suspect (90 s)
//! and dead (180 s), and each transition into one event on the router: HOST_JOINED,
//! NODE_UNHEALTHY, NODE_RECOVERED, HOST_LEFT. `NodeInfo` / `/status` tell who this node
//! is (name, roles, version), its resources (CPU, load, memory, disk of the home, GPUs),
//! the daemons its launcher runs (`run/launcher.addr`), its running jobs
//! (`data/jobs.db`), its work-queue depth, the leader and its view of every member.
//!
//! Leadership: static, the coordinator of cluster.toml. Under `[leader] mode = "etcd"` a
//! coordinator campaigns for the lease (`ringrift_cluster::leader::Campaign`, one round
//! every TTL/4; the lease is revoked on a clean stop), any other node watches the key on
//! the same period; each change of leader or token is one LEADER_CHANGED (`leader`,
//! `previous`, `term` = the new fencing token; id `leader:<observer>:<node>:<token>`).

use handler_base::auth::Token;
use handler_base::scope::Scope;
use handler_base::{ConfigError, Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_cluster::client::PeerClient;
use ringrift_cluster::view::{DaemonView, JobView, MemberView, NodeInfo, QueueView};
use ringrift_cluster::{
    Campaign, Change, ClusterConfig, Leader, Leadership, MemberState, Membership, resources,
};
use ringrift_proto::wire::{self, p2p_server::P2pServer};
use ringrift_proto::{Event, wire::event::Payload};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

pub const INFO: DaemonInfo = DaemonInfo {
    name: "p2p_backend",
    about: "The node's peer API: membership by heartbeat, leader view, node status",
    cycle_interval_s: Some(30.0),
    scope: Some(Scope::Node),
};

/// `[p2p_backend]` in ringrift.toml. Timeouts, peers and ports are cluster.toml's.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct P2pConfig {
    /// Bind address; default this node's p2p port from cluster.toml (127.0.0.1:8770
    /// without one). Port 0 picks one (tests).
    pub listen: Option<String>,
}

/// A client of the peer API at `addr` with the credentials (token and `[tls]`).
pub fn peer_client(
    addr: &str,
    bearer: handler_base::router_client::Bearer,
) -> anyhow::Result<PeerClient> {
    Ok(ringrift_cluster::client::peer_client(addr, bearer)?)
}

struct Shared {
    cluster: ClusterConfig,
    started_unix_ms: i64,
    membership: Mutex<Membership>,
    token: Option<Token>,
    /// Our clients' credentials: the token and `[tls]`.
    bearer: handler_base::router_client::Bearer,
    tls: handler_base::tls::Tls,
    leadership: Leadership,
    /// The leader as last seen (static: the coordinator from the start).
    leader: Mutex<Option<Leader>>,
    /// The cluster's shared work queue (JetStream), once opened in the background; on
    /// SQLite the node's `data/work_queue.db` is read instead.
    shared_queue: std::sync::OnceLock<Arc<dyn ringrift_store::work_queue::WorkQueue>>,
    /// This process's GPU probe (`[gpu]`), waited for at most [`GPU_WAIT`] per NodeInfo.
    gpu: resources::NvidiaSmi,
}

/// How long NodeInfo waits for the GPU probe before it answers with the last result and
/// its age: a hung driver must not make the node look down to the peers asking.
const GPU_WAIT: Duration = Duration::from_secs(2);

impl Shared {
    fn membership(&self) -> std::sync::MutexGuard<'_, Membership> {
        self.membership.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn leader(&self) -> Option<Leader> {
        self.leader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub struct P2pBackend {
    listen: String,
    shared: Arc<Shared>,
    heartbeats: Mutex<Option<tokio::task::JoinHandle<()>>>,
    leader_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: P2pConfig = ctx.settings.section("p2p_backend")?;
    let cluster =
        ClusterConfig::load(&ctx.home, &ctx.node).map_err(handler_base::ConfigError::from)?;
    let token = handler_base::auth::load(&ctx.settings)?;
    handler_base::ensure_config!(
        !cluster.require_token || token.is_some(),
        "{} says [auth] require_token = true: set [auth] token in ringrift.toml or RINGRIFT_TOKEN",
        cluster.source()
    );
    let listen = cfg
        .listen
        .unwrap_or_else(|| cluster.this_node().p2p_listen());
    handler_base::ensure_config!(
        listen.parse::<std::net::SocketAddr>().is_ok(),
        "p2p_backend.listen = {listen:?} is not host:port"
    );
    let tls = handler_base::tls::Tls::load(&ctx.settings)?;
    handler_base::auth::check_listen("p2p_backend.listen", &listen, token.as_ref(), &tls)?;
    let gpu = resources::NvidiaSmi::from_settings(&ctx.settings)?;
    let gpu = gpu.waiting_at_most(GPU_WAIT.min(gpu.timeout()));
    let leadership = Leadership::new(&cluster).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let leader = cluster.static_leader().map(|n| Leader {
        node: n.name.clone(),
        token: ringrift_cluster::leader::STATIC_TOKEN,
    });
    let membership = Membership::new(
        cluster.peers().map(|n| n.name.clone()),
        cluster.timeouts,
        Instant::now(),
    );
    Ok(Arc::new(P2pBackend {
        listen,
        shared: Arc::new(Shared {
            cluster,
            started_unix_ms: handler_base::router_client::now_ms(),
            membership: Mutex::new(membership),
            bearer: tls.bearer(token.as_ref()),
            token,
            tls,
            leadership,
            leader: Mutex::new(leader),
            shared_queue: std::sync::OnceLock::new(),
            gpu,
        }),
        heartbeats: Mutex::new(None),
        leader_task: Mutex::new(None),
    }))
}

/// Why a change happened, for the event and the log.
fn reason(
    change: Change,
    silent: Option<Duration>,
    cluster: &ClusterConfig,
    restart: bool,
) -> String {
    let t = cluster.timeouts;
    let silent = silent.map(|d| format!("{:.1}s", d.as_secs_f64()));
    match (change, restart) {
        (Change::Joined, true) => "restarted (new incarnation)".into(),
        (Change::Left, true) => "restarted: the previous incarnation is gone".into(),
        (Change::Joined, false) => "heartbeat received".into(),
        (Change::Recovered, _) => "heartbeat received again".into(),
        (Change::Unhealthy, _) => format!(
            "no heartbeat for {} (suspect after {}s)",
            silent.unwrap_or_else(|| "ever".into()),
            t.suspect_after.as_secs_f64()
        ),
        (Change::Left, false) => match silent {
            Some(s) => format!(
                "no heartbeat for {s} (dead after {}s)",
                t.dead_after.as_secs_f64()
            ),
            None => format!(
                "never heard from within {}s (dead timeout)",
                t.dead_after.as_secs_f64()
            ),
        },
    }
}

/// The event of one membership change of `peer`, with an id unique to the transition.
pub fn change_event(
    cluster: &ClusterConfig,
    peer: &str,
    change: Change,
    why: String,
    incarnation: i64,
    now_ms: i64,
) -> Event {
    let node = cluster.node(peer);
    let membership = || wire::HostMembership {
        node: peer.to_owned(),
        address: node.map(|n| n.p2p_addr()).unwrap_or_default(),
        roles: node.map(|n| n.role_names()).unwrap_or_default(),
        observer: cluster.this.clone(),
        reason: why.clone(),
        started_unix_ms: incarnation,
    };
    let status = || wire::NodeStatus {
        node: peer.to_owned(),
        reason: why.clone(),
    };
    let payload = match change {
        Change::Joined => Payload::HostJoined(membership()),
        Change::Left => Payload::HostLeft(membership()),
        Change::Unhealthy => Payload::NodeUnhealthy(status()),
        Change::Recovered => Payload::NodeRecovered(status()),
    };
    let mut ev = Event::new(payload).with_id(format!(
        "p2p:{}:{peer}:{}:{now_ms}",
        cluster.this,
        change.name()
    ));
    ev.time_unix_ms = now_ms;
    ev
}

async fn announce(ctx: &Context, sh: &Shared, peer: &str, changes: Vec<Change>, now: Instant) {
    let restart = changes.len() > 1;
    for change in changes {
        let (silent, incarnation) = {
            let m = sh.membership();
            (
                m.silent_for(peer, now),
                m.get(peer).map(|x| x.incarnation).unwrap_or(0),
            )
        };
        let why = reason(change, silent, &sh.cluster, restart);
        tracing::info!(peer, change = change.name(), reason = %why, "membership change");
        let mut ev = change_event(
            &sh.cluster,
            peer,
            change,
            why,
            incarnation,
            handler_base::router_client::now_ms(),
        );
        ev.source = ctx.source();
        if let Err(e) = ctx.publish(ev).await {
            ctx.errors
                .record(&format!("publishing {} of {peer}", change.name()), &e);
        }
    }
}

/// One round: heartbeat every peer (concurrently, each bounded by the RPC timeout), then
/// apply the timeouts.
async fn heartbeat_round(ctx: &Context, sh: &Arc<Shared>, peers: &[(String, PeerClient)]) {
    let req = wire::PeerHeartbeat {
        node: sh.cluster.this.clone(),
        started_unix_ms: sh.started_unix_ms,
        time_unix_ms: handler_base::router_client::now_ms(),
    };
    let limit = sh.cluster.timeouts.rpc_timeout;
    let mut set = tokio::task::JoinSet::new();
    for (name, client) in peers {
        let (name, mut client, req) = (name.clone(), client.clone(), req.clone());
        set.spawn(async move {
            let r = tokio::time::timeout(limit, client.heartbeat(req)).await;
            (name, r)
        });
    }
    while let Some(joined) = set.join_next().await {
        let Ok((name, r)) = joined else { continue };
        match r {
            Ok(Ok(ack)) => {
                let ack = ack.into_inner();
                if ack.node != name {
                    ctx.errors.record(
                        &format!("heartbeat to {name}"),
                        &format!(
                            "answered as {:?}: check its `node` setting and cluster.toml",
                            ack.node
                        ),
                    );
                    continue;
                }
                let now = Instant::now();
                let changes = sh.membership().heard_from(&name, ack.started_unix_ms, now);
                announce(ctx, sh, &name, changes, now).await;
            }
            Ok(Err(e)) => tracing::debug!(peer = %name, error = %e.message(), "heartbeat failed"),
            Err(_) => tracing::debug!(peer = %name, "heartbeat timed out"),
        }
    }
    let now = Instant::now();
    let ticked = sh.membership().tick(now);
    for (peer, change) in ticked {
        announce(ctx, sh, &peer, vec![change], now).await;
    }
}

async fn heartbeat_loop(ctx: Context, sh: Arc<Shared>) {
    let mut peers = Vec::new();
    for n in sh.cluster.peers() {
        match peer_client(&n.p2p_addr(), sh.bearer.clone()) {
            Ok(c) => peers.push((n.name.clone(), c)),
            Err(e) => ctx.errors.record(&format!("peer {}", n.name), &e),
        }
    }
    let mut iv = tokio::time::interval(sh.cluster.timeouts.heartbeat_interval);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = iv.tick() => {}
        }
        heartbeat_round(&ctx, &sh, &peers).await;
    }
}

/// The LEADER_CHANGED event of one change seen by `observer`.
pub fn leader_event(observer: &str, previous: Option<&Leader>, now: Option<&Leader>) -> Event {
    let (node, token) = now.map(|l| (l.node.clone(), l.token)).unwrap_or_default();
    Event::new(Payload::LeaderChanged(wire::LeaderChanged {
        leader: node.clone(),
        previous: previous.map(|l| l.node.clone()).unwrap_or_default(),
        term: token,
    }))
    .with_id(format!("leader:{observer}:{node}:{token}"))
}

/// Under etcd: campaign (a coordinator) or watch (any other node) every TTL/4 and
/// publish each change. Ends at shutdown, revoking the lease it held.
async fn leader_loop(ctx: Context, sh: Arc<Shared>) {
    let mut campaign = Campaign::new(&sh.leadership, &sh.cluster);
    let period = match &sh.cluster.leader {
        ringrift_cluster::LeaderMode::Etcd { ttl_s, .. } => {
            Duration::from_secs_f64(f64::from(*ttl_s) / 4.0).max(Duration::from_millis(100))
        }
        ringrift_cluster::LeaderMode::Static => return,
    };
    let mut iv = tokio::time::interval(period);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = iv.tick() => {}
        }
        let seen = match campaign.as_mut() {
            Some(c) => c.round().await,
            None => sh.leadership.current().await,
        };
        let seen = match seen {
            Ok(l) => l,
            Err(e) => {
                ctx.errors.record("leader election", &e);
                continue;
            }
        };
        let previous = sh.leader();
        if previous == seen {
            continue;
        }
        tracing::info!(
            leader = seen.as_ref().map(|l| l.node.as_str()).unwrap_or("(none)"),
            token = seen.as_ref().map(|l| l.token).unwrap_or(0),
            previous = previous
                .as_ref()
                .map(|l| l.node.as_str())
                .unwrap_or("(none)"),
            "leader changed"
        );
        *sh.leader.lock().unwrap_or_else(|p| p.into_inner()) = seen.clone();
        let mut ev = leader_event(&sh.cluster.this, previous.as_ref(), seen.as_ref());
        ev.source = ctx.source();
        if let Err(e) = ctx.publish(ev).await {
            ctx.errors.record("publishing LEADER_CHANGED", &e);
        }
    }
    if let Some(c) = campaign.as_mut() {
        c.resign().await;
    }
}

/// What the launcher of this home says (its control API), or why there is nothing.
async fn launcher_daemons(
    ctx: &Context,
    bearer: &handler_base::router_client::Bearer,
) -> (Vec<DaemonView>, String) {
    let home = ctx.home.clone();
    let addr = tokio::task::spawn_blocking(move || handler_base::read_addr_file(&home, "launcher"))
        .await
        .ok()
        .flatten();
    let Some(addr) = addr else {
        return (Vec::new(), "no launcher (run/launcher.addr absent)".into());
    };
    let call = async {
        let ch = bearer.endpoint(&addr)?.connect().await?;
        let mut c = wire::supervisor_client::SupervisorClient::with_interceptor(ch, bearer.clone());
        anyhow::Ok(c.status(wire::StatusRequest {}).await?.into_inner())
    };
    match tokio::time::timeout(Duration::from_secs(2), call).await {
        Ok(Ok(s)) => (
            s.daemons.iter().map(DaemonView::from_supervisor).collect(),
            String::new(),
        ),
        Ok(Err(e)) => (Vec::new(), format!("launcher at {addr}: {e}")),
        Err(_) => (
            Vec::new(),
            format!("launcher at {addr}: no answer within 2 s"),
        ),
    }
}

/// Resources, running jobs and queue depth of `home` (blocking: /proc, SQLite, nvidia-smi).
fn local_facts(
    home: &std::path::Path,
    shared_queue: Option<Arc<dyn ringrift_store::work_queue::WorkQueue>>,
    gpu: &resources::NvidiaSmi,
) -> (
    resources::Resources,
    Vec<JobView>,
    String,
    Option<QueueView>,
) {
    use ringrift_store::work_queue::WorkQueue;
    let res = resources::sample(home, gpu);
    let jobs_db = home.join("data/jobs.db");
    let (jobs, jobs_note) = if jobs_db.exists() {
        match job_runner::JobRunner::open(&jobs_db).and_then(|r| r.running()) {
            Ok(js) => (
                js.into_iter()
                    .map(|j| JobView {
                        job_id: j.job_id,
                        job_key: j.job_key,
                        pid: j.pid,
                        deadline_unix_ms: j.deadline_ms,
                    })
                    .collect(),
                String::new(),
            ),
            Err(e) => (Vec::new(), format!("{}: {e}", jobs_db.display())),
        }
    } else {
        (Vec::new(), "no data/jobs.db".into())
    };
    let qdb = ringrift_store::paths::work_queue_db(home);
    let queue = match shared_queue {
        Some(q) => Some(q.depth()),
        None => qdb.exists().then(|| {
            ringrift_store::work_queue::SqliteWorkQueue::open(&qdb).and_then(|q| q.depth())
        }),
    };
    let queue = queue.and_then(|r| r.ok()).map(|d| QueueView {
        pending: d.pending,
        claimed: d.claimed,
        completed: d.completed,
        failed: d.failed,
    });
    (res, jobs, jobs_note, queue)
}

async fn node_info(ctx: &Context, sh: &Shared) -> anyhow::Result<NodeInfo> {
    let home = ctx.home.clone();
    let q = sh.shared_queue.get().cloned();
    let gpu = sh.gpu.clone();
    let facts = tokio::task::spawn_blocking(move || local_facts(&home, q, &gpu));
    let (daemons, daemons_note) = launcher_daemons(ctx, &sh.bearer).await;
    let (resources, jobs, jobs_note, queue) = facts.await?;
    let c = &sh.cluster;
    let me = c.this_node();
    let now = Instant::now();
    let mut members = vec![MemberView {
        node: me.name.clone(),
        address: me.p2p_addr(),
        roles: me.role_names(),
        state: MemberState::Alive,
        last_seen_s_ago: Some(0.0),
        started_unix_ms: sh.started_unix_ms,
    }];
    {
        let m = sh.membership();
        for n in c.peers() {
            let Some(x) = m.get(&n.name) else { continue };
            members.push(MemberView {
                node: n.name.clone(),
                address: n.p2p_addr(),
                roles: n.role_names(),
                state: x.state,
                last_seen_s_ago: m.silent_for(&n.name, now).map(|d| d.as_secs_f64()),
                started_unix_ms: x.incarnation,
            });
        }
    }
    Ok(NodeInfo {
        node: me.name.clone(),
        roles: me.role_names(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_unix_ms: sh.started_unix_ms,
        resources,
        daemons,
        daemons_note,
        jobs,
        jobs_note,
        queue,
        leader: sh.leader().map(|l| l.node).unwrap_or_default(),
        leader_mode: c.leader.name().into(),
        members,
    })
}

struct Api {
    ctx: Context,
    sh: Arc<Shared>,
}

#[tonic::async_trait]
impl wire::p2p_server::P2p for Api {
    async fn heartbeat(
        &self,
        r: Request<wire::PeerHeartbeat>,
    ) -> Result<Response<wire::PeerHeartbeatAck>, Status> {
        let h = r.into_inner();
        if self.sh.cluster.node(&h.node).is_none() || h.node == self.sh.cluster.this {
            return Err(Status::failed_precondition(format!(
                "PeerHeartbeat.node {:?} is not a peer in this node's cluster config ({})",
                h.node,
                self.sh.cluster.source()
            )));
        }
        let now = Instant::now();
        let changes = self
            .sh
            .membership()
            .heard_from(&h.node, h.started_unix_ms, now);
        announce(&self.ctx, &self.sh, &h.node, changes, now).await;
        Ok(Response::new(wire::PeerHeartbeatAck {
            node: self.sh.cluster.this.clone(),
            started_unix_ms: self.sh.started_unix_ms,
        }))
    }

    async fn node_info(
        &self,
        _r: Request<wire::NodeInfoRequest>,
    ) -> Result<Response<wire::NodeInfo>, Status> {
        let n = node_info(&self.ctx, &self.sh)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(wire::NodeInfo::from(&n)))
    }
}

#[async_trait::async_trait]
impl Handler for P2pBackend {
    async fn on_start(&self, ctx: &Context) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(&self.listen)
            .await
            .map_err(|e| anyhow::anyhow!("bind p2p_backend.listen {}: {e}", self.listen))?;
        let listener = self.shared.tls.incoming(listener)?;
        let addr = listener.local();
        let (c2, s2) = (ctx.clone(), self.shared.clone());
        let http = axum::Router::new()
            .route("/health", axum::routing::get(|| async { "ok\n" }))
            .route(
                "/status",
                axum::routing::get(move || {
                    let (ctx, sh) = (c2.clone(), s2.clone());
                    async move {
                        match node_info(&ctx, &sh).await {
                            Ok(n) => Ok(axum::Json(n)),
                            Err(e) => {
                                Err((axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
                            }
                        }
                    }
                }),
            );
        let api = Api {
            ctx: ctx.clone(),
            sh: self.shared.clone(),
        };
        let app = tonic::service::Routes::new(P2pServer::new(api))
            .into_axum_router()
            .merge(http);
        let app = handler_base::auth::protect(app, self.shared.token.clone());
        let shutdown = ctx.shutdown.clone();
        tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .accept_http1(true)
                .add_routes(tonic::service::Routes::from(app))
                .serve_with_incoming_shutdown(listener, async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "p2p server failed");
            }
        });
        {
            // The shared queue's depth for NodeInfo (JetStream only), opened off the start
            // path: the peer API must answer while NATS is still coming up.
            let (sh, name) = (self.shared.clone(), ctx.source());
            tokio::task::spawn_blocking(
                move || match ringrift_nats::JetStreamWorkQueue::for_cluster(&sh.cluster, &name) {
                    Some(Ok(q)) => {
                        let _ = sh.shared_queue.set(Arc::new(q));
                    }
                    Some(Err(e)) => tracing::warn!(
                        error = %e,
                        "shared work queue not opened; NodeInfo shows no queue depth"
                    ),
                    None => {}
                },
            );
        }
        let loop_task = tokio::spawn(heartbeat_loop(ctx.clone(), self.shared.clone()));
        let leader_task = tokio::spawn(leader_loop(ctx.clone(), self.shared.clone()));
        *self.leader_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(leader_task);
        *self.heartbeats.lock().unwrap_or_else(|p| p.into_inner()) = Some(loop_task);
        handler_base::write_addr_file(&ctx.home, "p2p_backend", &addr.to_string())?;
        let c = &self.shared.cluster;
        tracing::info!(
            %addr,
            node = %c.this,
            peers = c.peers().count(),
            cluster = %c.source(),
            "p2p backend listening"
        );
        Ok(())
    }

    /// The membership runs on its own heartbeat interval; the cycle only logs a summary.
    async fn on_stop(&self, _ctx: &Context) {
        // The leader loop revokes the lease once shutdown is signalled; wait for it (bounded).
        let task = self
            .leader_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = task {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
    }

    async fn run_cycle(&self, _ctx: &Context) -> anyhow::Result<()> {
        let m = self.shared.membership();
        let states: Vec<String> = m
            .members()
            .map(|(n, x)| format!("{n}={:?}", x.state))
            .collect();
        tracing::debug!(members = %states.join(" "), "membership");
        Ok(())
    }

    fn health_check(&self) -> HealthCheckResult {
        let loop_ended = self
            .heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|h| h.is_finished());
        if loop_ended {
            return HealthCheckResult::error("the heartbeat loop ended");
        }
        let m = self.shared.membership();
        let alive = m
            .members()
            .filter(|(_, x)| x.state == MemberState::Alive)
            .count();
        let leader = self.shared.leader();
        let mut h = HealthCheckResult::running(format!(
            "{alive} of {} peers alive; leader {} ({})",
            m.members().count(),
            leader.as_ref().map(|l| l.node.as_str()).unwrap_or("(none)"),
            self.shared.leadership.mode()
        ));
        if let Some(l) = &leader {
            h = h.detail("leader", &l.node).detail("leader_token", l.token);
        }
        for (n, x) in m.members() {
            h = h.detail(format!("peer.{n}"), format!("{:?}", x.state).to_lowercase());
        }
        h
    }
}

#[cfg(test)]
mod tests;
