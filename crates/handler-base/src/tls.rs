//! Transport security of every listener and client, from ringrift.toml `[tls]`: `cert`
//! and `key` (PEM) make the listeners serve TLS, `ca` (PEM) is what clients verify our
//! servers against (and makes them speak https), `allow_plaintext` lets the token cross
//! the network in clear (a deliberate choice, e.g. a private link).
//!
//! [`Tls::incoming`] is the one accept path of every listener (router, launcher control,
//! health server, cluster monitor, data server, peer API): TCP_NODELAY on each
//! connection and, with TLS, the handshake in its own task under a deadline (a client
//! that stalls or speaks plaintext delays nobody else). The result serves axum
//! (`axum::serve::Listener`) and tonic (`serve_with_incoming`) alike. The rustls configs
//! themselves are built in `crate::router_client::tls`.

use crate::ConfigError;
use crate::router_client::tls::ClientTls;
use crate::settings::Settings;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `[tls]` settings, loaded and checked ([`Tls::load`]).
#[derive(Clone, Default)]
pub struct Tls {
    server: Option<Arc<rustls::ServerConfig>>,
    client: Option<ClientTls>,
    allow_plaintext: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("serves_tls", &self.server.is_some())
            .field("client_ca", &self.client.is_some())
            .field("allow_plaintext", &self.allow_plaintext)
            .finish()
    }
}

impl Tls {
    /// No TLS anywhere (tests on loopback).
    pub fn none() -> Tls {
        Tls::default()
    }

    /// `tls.cert` + `tls.key` (both or neither; with them `tls.ca` too, since our
    /// clients verify the other nodes' servers against it), `tls.ca` alone (a client
    /// only, e.g. the CLI), `tls.allow_plaintext` (default false). A file that cannot
    /// be read or parsed is a [`ConfigError`] naming the key.
    pub fn load(settings: &Settings) -> Result<Tls, ConfigError> {
        let path = |k: &str| {
            settings
                .string(k)
                .filter(|s| !s.is_empty())
                .map(std::path::PathBuf::from)
        };
        let (cert, key, ca) = (path("tls.cert"), path("tls.key"), path("tls.ca"));
        let allow_plaintext = settings
            .get::<bool>("tls.allow_plaintext")?
            .unwrap_or(false);
        let usage = |e: crate::router_client::tls::TlsError| ConfigError::Usage(e.to_string());
        let server = match (&cert, &key) {
            (Some(c), Some(k)) => {
                Some(crate::router_client::tls::server_config(c, k).map_err(usage)?)
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Usage(
                    "tls.cert is set without tls.key (the server's private key, PEM)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::Usage(
                    "tls.key is set without tls.cert (the server's certificate, PEM)".into(),
                ));
            }
        };
        if server.is_some() && ca.is_none() {
            return Err(ConfigError::Usage(
                "tls.cert is set without tls.ca: our clients verify the other servers against tls.ca (PEM)".into(),
            ));
        }
        let client = ca
            .map(|p| ClientTls::from_ca_file(&p))
            .transpose()
            .map_err(usage)?;
        Ok(Tls {
            server,
            client,
            allow_plaintext,
        })
    }

    /// Whether the listeners serve TLS.
    pub fn serves_tls(&self) -> bool {
        self.server.is_some()
    }

    /// `tls.allow_plaintext`.
    pub fn allow_plaintext(&self) -> bool {
        self.allow_plaintext
    }

    /// The client side (`tls.ca`), when set.
    pub fn client(&self) -> Option<&ClientTls> {
        self.client.as_ref()
    }

    /// The credentials of our clients: the token (if any) and this TLS.
    pub fn bearer(&self, token: Option<&crate::auth::Token>) -> crate::router_client::Bearer {
        crate::auth::Token::bearer(token).with_tls(self.client.clone(), self.allow_plaintext)
    }

    /// Accepts on `listener` (TLS when `tls.cert` is set) until the result is dropped.
    /// Needs a tokio runtime.
    pub fn incoming(&self, listener: TcpListener) -> io::Result<Incoming> {
        let local = listener.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = self.server.clone().map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(accept_loop(listener, acceptor, tx));
        Ok(Incoming { rx, local, task })
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    tx: tokio::sync::mpsc::Sender<(Conn, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = tx.closed() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: the next accept may work.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        match &acceptor {
            None => {
                if tx.send((Conn::Plain(tcp), peer)).await.is_err() {
                    return;
                }
            }
            Some(a) => {
                let (a, tx) = (a.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, a.accept(tcp)).await {
                        Ok(Ok(s)) => {
                            // A send error means the server stopped: nothing to do.
                            let _ = tx.send((Conn::Tls(Box::new(s)), peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// Accepted connections of one listener ([`Tls::incoming`]): an axum `Listener` and a
/// tonic incoming stream. Dropping it stops accepting.
pub struct Incoming {
    rx: tokio::sync::mpsc::Receiver<(Conn, SocketAddr)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Incoming {
    /// The address the listener is bound to.
    pub fn local(&self) -> SocketAddr {
        self.local
    }
}

impl axum::serve::Listener for Incoming {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task is gone (it only ends when this is dropped): no more
            // connections will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl tokio_stream::Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|o| o.map(|(c, _)| Ok(c)))
    }
}

/// The remote address of a connection accepted by [`Incoming`], for axum's
/// `into_make_service_with_connect_info::<Remote>()`.
#[derive(Debug, Clone, Copy)]
pub struct Remote(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Incoming>> for Remote {
    fn connect_info(s: axum::serve::IncomingStream<'_, Incoming>) -> Remote {
        Remote(*s.remote_addr())
    }
}

/// One accepted connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Conn::Plain(s) => s.connect_info(),
            Conn::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Tls, ConfigError> {
        Tls::load(&Settings::from_toml(toml).expect("toml"))
    }

    #[test]
    fn bad_tls_settings_are_config_errors_naming_the_key() {
        let none = load("").expect("no [tls]");
        assert!(!none.serves_tls() && none.client().is_none() && !none.allow_plaintext());
        let e = load("[tls]\ncert = \"/x/c.pem\"\n")
            .err()
            .expect("cert alone");
        assert!(e.to_string().contains("tls.key"), "{e}");
        let e = load("[tls]\nkey = \"/x/k.pem\"\n")
            .err()
            .expect("key alone");
        assert!(e.to_string().contains("tls.cert"), "{e}");
        let e = load(
            "[tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\nca = \"/x\"\n",
        )
        .err()
        .expect("missing files");
        assert!(
            e.to_string().contains("tls.cert") && e.to_string().contains("/nonexistent/c.pem"),
            "{e}"
        );
        let e = load("[tls]\nca = \"/nonexistent/ca.pem\"\n")
            .err()
            .expect("missing CA");
        assert!(e.to_string().contains("tls.ca"), "{e}");
        let e = load("[tls]\nallow_plaintext = \"perhaps\"\n")
            .err()
            .expect("not a bool");
        assert!(e.to_string().contains("tls.allow_plaintext"), "{e}");
    }
}
