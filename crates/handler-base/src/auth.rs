//! The shared-token authentication of every listener (router, launcher control API,
//! health server): loading the token, refusing a non-loopback listener without one, the
//! server-side check for axum and tonic routes alike, and the client-side header.
//! With a token, a non-loopback listener also needs TLS (`[tls] cert`/`key`, see
//! [`crate::tls`]) unless `[tls] allow_plaintext = true`: the token would cross the
//! network in clear.
//!
//! The token comes from `auth.token` in the settings, else the `RINGRIFT_TOKEN`
//! environment variable. With a token, every gRPC call and HTTP route except `/health`
//! and `/ready` needs `authorization: Bearer <token>` (compared in constant time);
//! without one, HTTP answers 401 and gRPC UNAUTHENTICATED. The token is never logged:
//! [`Token`]'s `Debug` hides it.

use crate::ConfigError;
use crate::settings::Settings;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Paths served without a token (liveness and readiness probes).
pub const OPEN_PATHS: [&str; 2] = ["/health", "/ready"];

/// The shared secret of a deployment.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    /// A token of visible ASCII characters (it travels in an HTTP header).
    pub fn new(s: &str) -> Result<Token, ConfigError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::Usage(
                "auth.token must be non-empty visible ASCII (no spaces)".into(),
            ));
        }
        Ok(Token(s.into()))
    }

    /// Whether an `authorization` header value carries this token.
    pub fn accepts(&self, header: Option<&[u8]>) -> bool {
        header
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .is_some_and(|got| bool::from(got.ct_eq(self.0.as_bytes())))
    }

    /// The secret itself, for handing it to child processes (`RINGRIFT_TOKEN`); never
    /// log it.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// The client-side header for router and launcher clients.
    pub fn bearer(token: Option<&Token>) -> crate::router_client::Bearer {
        crate::router_client::Bearer::new(token.map(|t| &*t.0)).unwrap_or_default()
    }
}

/// `auth.token`, else `RINGRIFT_TOKEN`; `None` when neither is set (or both are empty).
pub fn load(settings: &Settings) -> Result<Option<Token>, ConfigError> {
    let from_settings = settings.string("auth.token").filter(|s| !s.is_empty());
    let raw = from_settings.or_else(|| {
        std::env::var("RINGRIFT_TOKEN")
            .ok()
            .filter(|s| !s.is_empty())
    });
    raw.as_deref().map(Token::new).transpose()
}

/// A listener that is not loopback-only needs a token, and then TLS (the token would
/// otherwise cross the network in clear) unless `tls.allow_plaintext`: configuration
/// error otherwise. `what` names the setting (e.g. `event_router.listen`).
pub fn check_listen(
    what: &str,
    listen: &str,
    token: Option<&Token>,
    tls: &crate::tls::Tls,
) -> Result<(), ConfigError> {
    let loopback = match listen.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().is_loopback(),
        Err(_) => listen
            .rsplit_once(':')
            .is_some_and(|(host, _)| host == "localhost"),
    };
    if loopback {
        return Ok(());
    }
    if token.is_none() {
        return Err(ConfigError::Usage(format!(
            "{what} = {listen:?} is not loopback: set [auth] token (or RINGRIFT_TOKEN) so only holders of the token are served"
        )));
    }
    if tls.serves_tls() || tls.allow_plaintext() {
        return Ok(());
    }
    Err(ConfigError::Usage(format!(
        "{what} = {listen:?} is not loopback: set [tls] cert and [tls] key (and ca) so the token does not cross the network in clear, or [tls] allow_plaintext = true"
    )))
}

/// Puts every route of `app` except [`OPEN_PATHS`] behind the token (nothing changes
/// without one). Works for tonic services merged into the router too: they get a gRPC
/// UNAUTHENTICATED answer instead of a 401.
pub fn protect(app: axum::Router, token: Option<Token>) -> axum::Router {
    match token {
        None => app,
        Some(t) => app.layer(axum::middleware::from_fn_with_state(t, check)),
    }
}

/// Serves a daemon's HTTP `app` behind [`protect`] on `listener` (TLS when `tls` has a
/// certificate) until the daemon stops (a server failure is logged as `name`'s), and
/// writes `run/<name>.addr`.
pub fn serve_http(
    ctx: &crate::Context,
    name: &str,
    listener: tokio::net::TcpListener,
    app: axum::Router,
    token: Option<Token>,
    tls: &crate::tls::Tls,
) -> std::io::Result<std::net::SocketAddr> {
    let incoming = tls.incoming(listener)?;
    let addr = incoming.local();
    let app = protect(app, token);
    let shutdown = ctx.shutdown.clone();
    let what = name.to_owned();
    tokio::spawn(async move {
        let r = axum::serve(incoming, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "{what} HTTP server failed");
        }
    });
    crate::write_addr_file(&ctx.home, name, &addr.to_string())?;
    Ok(addr)
}

async fn check(
    axum::extract::State(token): axum::extract::State<Token>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    let header_value = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if OPEN_PATHS.contains(&req.uri().path()) || token.accepts(header_value) {
        return next.run(req).await;
    }
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        // A trailers-only gRPC answer: status 16 = UNAUTHENTICATED.
        let mut r = axum::response::Response::new(axum::body::Body::empty());
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static("16"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("missing or wrong bearer token"),
        );
        return r;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "missing or wrong bearer token\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Tls;

    #[test]
    fn accepts_only_the_exact_bearer_token() {
        let t = Token::new("s3cret").unwrap();
        assert!(t.accepts(Some(b"Bearer s3cret")));
        for bad in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cret2",
            b"bearer s3cret",
            b"s3cret",
            b"",
        ] {
            assert!(!t.accepts(Some(bad)), "{bad:?}");
        }
        assert!(!t.accepts(None));
        assert_eq!(format!("{t:?}"), "Token(***)");
        assert!(Token::new("has space").is_err() && Token::new("").is_err());
    }

    #[test]
    fn non_loopback_listen_needs_a_token() {
        let t = Token::new("x").unwrap();
        let open = open_tls();
        assert!(check_listen("l", "127.0.0.1:0", None, &Tls::none()).is_ok());
        assert!(check_listen("l", "[::1]:80", None, &Tls::none()).is_ok());
        assert!(check_listen("l", "localhost:80", None, &Tls::none()).is_ok());
        assert!(check_listen("l", "127.0.0.1:0", Some(&t), &Tls::none()).is_ok());
        assert!(check_listen("l", "0.0.0.0:80", None, &open).is_err());
        assert!(check_listen("l", "10.1.2.3:80", None, &open).is_err());
        assert!(check_listen("l", "0.0.0.0:80", Some(&t), &open).is_ok());
    }

    fn open_tls() -> Tls {
        let s = crate::Settings::from_toml("[tls]\nallow_plaintext = true\n").unwrap();
        Tls::load(&s).unwrap()
    }

    #[test]
    fn non_loopback_listen_with_a_token_needs_tls_or_allow_plaintext() {
        let t = Token::new("x").unwrap();
        let e = check_listen("event_router.listen", "0.0.0.0:80", Some(&t), &Tls::none())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("event_router.listen") && e.contains("[tls] cert"),
            "{e}"
        );
        assert!(e.contains("allow_plaintext"), "{e}");
        assert!(check_listen("l", "10.1.2.3:80", Some(&t), &Tls::none()).is_err());
        assert!(check_listen("l", "10.1.2.3:80", Some(&t), &open_tls()).is_ok());
    }
}
