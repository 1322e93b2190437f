//! Transport security off loopback: with `[tls] cert`/`key` the router and the data
//! server serve TLS only (a client with `[tls] ca` is served, a plaintext one and one
//! trusting another CA are not); a non-loopback listener with a token needs TLS or
//! `allow_plaintext` (exit 64 naming the key); NATS with an authorization block and TLS
//! refuses a client without the password or the CA; etcd with auth enabled and TLS
//! refuses a client without the user, with a wrong password or over plaintext, and
//! serves the configured one.
//!
//! Skips without `openssl`, `nats-server` or `etcd` ([`require_tool`]), fails under CI.

use handler_base::router_client::{Bearer, tls::ClientTls};
use ringrift_proto::wire;
use ringrift_system_tests::{
    Home, Proc, TlsFiles, command_works, free_port, http_get_with, require_tool, wait_for,
    wait_for_async,
};
use std::process::{Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "tok-5b1e0c9d7a42";

fn with_ca(tls: &TlsFiles, token: Option<&str>) -> Bearer {
    Bearer::new(token)
        .unwrap()
        .with_tls(Some(ClientTls::from_ca_file(&tls.ca).unwrap()), false)
}

/// A `Stats` call: `Ok`, or the error (connection or status) as text.
async fn stats(addr: &str, b: Bearer) -> Result<(), String> {
    let call = async {
        let mut c = handler_base::router_client::connect_with(addr, b)
            .await
            .map_err(|e| e.to_string())?;
        c.stats(wire::StatsRequest {})
            .await
            .map(|_| ())
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    };
    tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .unwrap_or_else(|_| Err("no answer within 20 s".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_with_tls_serves_clients_with_the_ca_and_refuses_plaintext() {
    let Some(tls) = TlsFiles::make() else {
        return;
    };
    let home = Home::with_token(TOKEN, &tls.toml());
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    assert_eq!(stats(&addr, with_ca(&tls, Some(TOKEN))).await, Ok(()));
    let wrong = stats(&addr, with_ca(&tls, Some("wrong")))
        .await
        .unwrap_err();
    assert!(wrong.starts_with("Unauthenticated"), "{wrong}");
    // A plaintext client (loopback, so it would send the token) is not served.
    let plain = stats(&addr, Bearer::new(Some(TOKEN)).unwrap()).await;
    assert!(plain.is_err(), "plaintext gRPC was served");
    // Nor plaintext HTTP: no HTTP answer at all, not even for /health.
    assert_eq!(http_get_with(&addr, "/health", None).await, None);
    // A client that trusts another CA refuses the server.
    let Some(other) = TlsFiles::make() else {
        return;
    };
    let foreign = stats(&addr, with_ca(&other, Some(TOKEN))).await;
    assert!(foreign.is_err(), "a server of another CA was trusted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_listener_with_a_token_needs_tls_or_allow_plaintext() {
    // A token and no TLS: configuration error naming the keys.
    let home = Home::with_token(TOKEN, "");
    let mut p = home.spawn(
        "ringrift-event-router",
        &["--set", "event_router.listen=0.0.0.0:0"],
    );
    let st = wait_for("router exit", Duration::from_secs(20), || p.try_exit());
    let log = home.log("ringrift-event-router");
    assert_eq!(st.code(), Some(64), "{log}");
    assert!(
        log.contains("event_router.listen") && log.contains("[tls] cert"),
        "{log}"
    );
    assert!(!log.contains(TOKEN), "{log}");
    // The deliberate choice to send it in clear is allowed.
    let open = Home::with_token(TOKEN, "[tls]\nallow_plaintext = true\n");
    let (_r1, addr) = open.start_router("0.0.0.0:0", &[]);
    assert!(addr.starts_with("0.0.0.0:"), "{addr}");
    // With TLS the listener starts and serves a client with the CA.
    let Some(tls) = TlsFiles::make() else {
        return;
    };
    let secure = Home::with_token(TOKEN, &tls.toml());
    let (_r2, addr) = secure.start_router("0.0.0.0:0", &[]);
    assert!(addr.starts_with("0.0.0.0:"), "{addr}");
    // Its address file says 0.0.0.0: clients reach it as 127.0.0.1 (the certificate's).
    assert_eq!(stats(&addr, with_ca(&tls, Some(TOKEN))).await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_server_with_tls_answers_https_only() {
    use ringrift_transfer::{DataClient, Peer, TransferError};
    let Some(tls) = TlsFiles::make() else {
        return;
    };
    let home = Home::with_token(TOKEN, &tls.toml());
    for d in ["data", "models"] {
        std::fs::create_dir_all(home.path().join(d)).unwrap();
    }
    let mut p = home.spawn(
        "ringrift-data-server",
        &[
            "--router",
            "127.0.0.1:1",
            "--set",
            "data_server.listen=127.0.0.1:0",
        ],
    );
    let addr = home.wait_addr("data_server", &mut p);
    let peer = Peer::at("self", &format!("http://{addr}"));
    let ca = ClientTls::from_ca_file(&tls.ca).unwrap();
    let t = Duration::from_secs(20);
    let q = "/manifest?root=data";
    let c = DataClient::with_tls(Some(TOKEN), t, Some(&ca), false).unwrap();
    assert!(c.url(&peer, q).starts_with("https://"));
    c.get_json::<serde_json::Value>(&peer, q)
        .await
        .expect("manifest over https with the token");
    let anon = DataClient::with_tls(None, t, Some(&ca), false).unwrap();
    match anon.get_json::<serde_json::Value>(&peer, q).await {
        Err(TransferError::Status { status: 401, .. }) => {}
        other => panic!("without the token: {other:?}"),
    }
    let plain = DataClient::new(Some(TOKEN), t).unwrap();
    assert!(
        plain.get_json::<serde_json::Value>(&peer, q).await.is_err(),
        "plaintext http was served"
    );
}

/// One nats-server from `conf` (its `listen` on `port`), logging under `dir`.
fn start_nats(dir: &std::path::Path, conf: &str, port: u16) -> Proc {
    let path = dir.join("nats.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("nats-server")
        .arg("-c")
        .arg(&path)
        .arg("-l")
        .arg(dir.join("nats.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nats-server");
    let p = Proc {
        name: "nats-server".into(),
        child,
    };
    wait_for("nats-server port", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_with_an_authorization_block_and_tls_refuses_clients_without_them() {
    use ringrift_cluster::{NatsAuth, Secret};
    use ringrift_nats::FirstConnect;
    if !require_tool("nats-server", command_works("nats-server", &["--version"])) {
        return;
    }
    let Some(tls) = TlsFiles::make() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = format!(
        "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?} }}\nauthorization {{ user: rr, password: \"nats-pw-3c7\" }}\ntls {{ cert_file: {:?}, key_file: {:?} }}\n",
        dir.path().join("js").display().to_string(),
        tls.cert.display().to_string(),
        tls.key.display().to_string()
    );
    let _server = start_nats(dir.path(), &conf, port);
    let servers = vec![format!("tls://127.0.0.1:{port}")];
    let connect = |auth: NatsAuth| {
        let servers = servers.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(20),
                ringrift_nats::connect(&servers, &auth, "tls-test", FirstConnect::FailFast),
            )
            .await
            .map_err(|_| "no answer within 20 s".to_owned())?
            .map_err(|e| e.to_string())
        }
    };
    let user = |pw: &str| Some(("rr".to_owned(), Secret::new(pw)));
    let ca = Some(tls.ca.clone());
    // Without credentials, with a wrong password, without the CA: refused.
    let e = connect(NatsAuth {
        user: None,
        tls_ca: ca.clone(),
    })
    .await
    .unwrap_err();
    assert!(e.to_lowercase().contains("author"), "{e}");
    let e = connect(NatsAuth {
        user: user("wrong-pw"),
        tls_ca: ca.clone(),
    })
    .await
    .unwrap_err();
    assert!(!e.contains("wrong-pw"), "the password shows: {e}");
    let e = connect(NatsAuth {
        user: user("nats-pw-3c7"),
        tls_ca: None,
    })
    .await;
    assert!(e.is_err(), "a server not verified against the CA was used");
    // With both: connected, and JetStream answers.
    let client = connect(NatsAuth {
        user: user("nats-pw-3c7"),
        tls_ca: ca,
    })
    .await
    .expect("connect with credentials and CA");
    // A round trip through the server: subscribe, publish, receive.
    use futures_util::StreamExt;
    let mut sub = client.subscribe("tls.test").await.expect("subscribe");
    client
        .publish("tls.test", "hello".into())
        .await
        .expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("a message within 20 s")
        .expect("the subscription is open");
    assert_eq!(&got.payload[..], b"hello");
}

/// Enables etcd's auth: role and user `root` (password `pw`), then auth on.
async fn enable_etcd_auth(ch: tonic::transport::Channel, pw: &str) {
    use ringrift_cluster::etcd::etcdserverpb::{self as pb, auth_client::AuthClient};
    let mut a = AuthClient::new(ch);
    a.role_add(pb::AuthRoleAddRequest {
        name: "root".into(),
    })
    .await
    .expect("role add");
    a.user_add(pb::AuthUserAddRequest {
        name: "root".into(),
        password: pw.into(),
        ..Default::default()
    })
    .await
    .expect("user add");
    a.user_grant_role(pb::AuthUserGrantRoleRequest {
        user: "root".into(),
        role: "root".into(),
    })
    .await
    .expect("grant root");
    a.auth_enable(pb::AuthEnableRequest {})
        .await
        .expect("auth enable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_auth_and_tls_serves_only_the_configured_user_over_tls() {
    use ringrift_cluster::etcd::etcdserverpb::{self as pb, kv_client::KvClient};
    use ringrift_cluster::{Campaign, ClusterConfig, Leadership};
    if !require_tool("etcd", command_works("etcd", &["--version"])) {
        return;
    }
    let Some(tls) = TlsFiles::make() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cport, pport) = (free_port(), free_port());
    let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
    let child = Command::new("etcd")
        .args([
            "--name=e0",
            &format!("--data-dir={}", dir.path().join("e0").display()),
            &format!("--listen-client-urls=https://127.0.0.1:{cport}"),
            &format!("--advertise-client-urls=https://127.0.0.1:{cport}"),
            &format!("--listen-peer-urls=http://127.0.0.1:{pport}"),
            &format!("--initial-advertise-peer-urls=http://127.0.0.1:{pport}"),
            &format!("--initial-cluster=e0=http://127.0.0.1:{pport}"),
            &format!("--cert-file={}", tls.cert.display()),
            &format!("--key-file={}", tls.key.display()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn etcd");
    let _etcd = Proc {
        name: "etcd".into(),
        child,
    };
    let ca_pem = std::fs::read(&tls.ca).unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{cport}"))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem))
                .assume_http2(true),
        )
        .unwrap();
    let ch = wait_for_async("etcd answers over TLS", Duration::from_secs(60), || {
        let ep = endpoint.clone();
        async move {
            let ch = ep.connect().await.ok()?;
            KvClient::new(ch.clone())
                .range(pb::RangeRequest {
                    key: b"probe".to_vec(),
                    ..Default::default()
                })
                .await
                .ok()?;
            Some(ch)
        }
    })
    .await;
    enable_etcd_auth(ch, "etcd-pw-9d1").await;

    let cluster = |leader: &str| {
        let text = format!(
            "[membership]\nrpc_timeout_s = 5\n[leader]\nmode = \"etcd\"\nttl_s = 5\n{leader}\n[[node]]\nname = \"n1\"\nroles = [\"coordinator\"]\naddress = \"127.0.0.1\"\n"
        );
        ClusterConfig::parse(&text, std::path::Path::new("cluster.toml"), "n1").expect("cluster")
    };
    let https = format!(
        "endpoints = [\"https://127.0.0.1:{cport}\"]\nca = {:?}",
        tls.ca.display().to_string()
    );
    // The configured user over TLS: reads, campaigns and leads.
    let good = cluster(&format!(
        "{https}\nuser = \"root\"\npassword = \"etcd-pw-9d1\""
    ));
    let l = Leadership::new(&good).expect("leadership");
    assert_eq!(l.current().await, Ok(None));
    let mut c = Campaign::new(&l, &good).expect("n1 campaigns");
    let led = c.round().await.expect("campaign round");
    assert_eq!(led.map(|x| x.node), Some("n1".to_owned()));
    c.resign().await;
    // No user: refused by etcd's auth.
    let anon = Leadership::new(&cluster(&https)).expect("leadership");
    let e = anon.current().await.expect_err("an unauthenticated read");
    assert!(!e.to_string().is_empty());
    // A wrong password: refused, and the password shows nowhere.
    let bad = cluster(&format!(
        "{https}\nuser = \"root\"\npassword = \"not-it-5e\""
    ));
    let e = Leadership::new(&bad)
        .expect("leadership")
        .current()
        .await
        .expect_err("a wrong password");
    assert!(!e.to_string().contains("not-it-5e"), "{e}");
    assert!(!format!("{bad:?}").contains("not-it-5e"));
    // Plaintext to the TLS port: no answer is taken for one.
    let plain = cluster(&format!(
        "endpoints = [\"http://127.0.0.1:{cport}\"]\nuser = \"root\"\npassword = \"etcd-pw-9d1\""
    ));
    assert!(
        Leadership::new(&plain)
            .expect("leadership")
            .current()
            .await
            .is_err()
    );
}

/// A whole node under TLS: every daemon's clients (router, peer API, launcher control)
/// verify against the CA. `/ready` of the health server turns 200 only when its own calls
/// to the router succeed; `--status` from a second process uses the control API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_under_tls_runs_with_every_client_verifying() {
    use ringrift_transfer::DataClient;
    let Some(tls) = TlsFiles::make() else {
        return;
    };
    let home = Home::with_token(
        TOKEN,
        &format!(
            "heartbeat_interval_s = 0.2\n[event_router]\nlisten = \"127.0.0.1:0\"\n[health_server]\nlisten = \"127.0.0.1:0\"\ncycle_interval_s = 0.2\n[p2p_backend]\nlisten = \"127.0.0.1:0\"\n[cluster_monitor]\nlisten = \"127.0.0.1:0\"\ncycle_interval_s = 0.2\n{}",
            tls.toml()
        ),
    );
    let mut l = home.spawn(
        "ringrift-launcher",
        &["--profile", "minimal", "--control", "127.0.0.1:0"],
    );
    let health = home.wait_addr("health_server", &mut l);
    let ca = ClientTls::from_ca_file(&tls.ca).unwrap();
    let https = DataClient::with_tls(None, Duration::from_secs(10), Some(&ca), false).unwrap();
    let url = format!("https://{health}/ready");
    wait_for_async("/ready 200 over https", Duration::from_secs(60), || async {
        let r = https.http().get(&url).send().await.ok()?;
        (r.status().as_u16() == 200).then_some(())
    })
    .await;
    let out = Command::new(ringrift_system_tests::bin("ringrift-launcher"))
        .arg("--home")
        .arg(home.path())
        .args(["--status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: handler_base::status_body::LauncherStatus = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--status --json is not a LauncherStatus: {e}"));
    assert!(st.daemon("health_server").is_some(), "{st:?}");
    l.term(Duration::from_secs(30));
}
