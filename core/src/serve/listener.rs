//! The callback listener's connections: at most `max_connections` at once, a deadline for each
//! request's headers (which is also how long a connection may sit idle between requests), TLS
//! from PEM files that are re-read when they change, and a graceful stop.
//!
//! axum's own `serve` has none of these knobs, so connections are accepted here and served by
//! hyper's HTTP/1 connection (Tencent's callbacks are HTTP/1.1), with the axum router as the
//! service and the peer's address as axum's `ConnectInfo`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};

/// Limits on the callback listener's clients.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more wait in the kernel's accept queue until one closes.
    pub max_connections: usize,
    /// A client must send a request's headers (or its TLS handshake) within this long of the
    /// connection opening or of its previous answer, else it is disconnected: slow clients and
    /// idle connections do not hold a place for long. The body is bounded the same (the
    /// router's timeout).
    pub client_timeout: Duration,
}

/// A certificate and key file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// `--tls-cert` or `--tls-key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not what it should be.
    #[error("{path} ({what}) {why}")]
    Content {
        /// `--tls-cert` or `--tls-key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the pair.
    #[error("the certificate in {cert} and the key in {key} cannot be used together: {why}")]
    Pair {
        /// `--tls-cert`.
        cert: PathBuf,
        /// `--tls-key`.
        key: PathBuf,
        /// rustls's reason.
        why: String,
    },
}

/// `--tls-cert`/`--tls-key`: the server configuration in use, and what it was made from, so
/// that a change of either file is noticed.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(blake3::Hash, Arc<rustls::ServerConfig>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// How often the certificate files are looked at for a change.
pub const TLS_POLL: Duration = Duration::from_secs(2);

impl Tls {
    /// Reads both files (PEM: the certificate chain, then a PKCS#8, PKCS#1 or SEC1 key).
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let (digest, config) = read_pair(cert, key)?;
        Ok(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new((digest, Arc::new(config))),
        })
    }

    /// Reads both files again; when their content changed, the new pair serves every new
    /// connection from now on (connections open keep theirs). `Ok(true)` when it changed; on an
    /// error the pair in use stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let digest = digest_of(&self.cert, &self.key)?;
        if digest == self.current.read().unwrap_or_else(|p| p.into_inner()).0 {
            return Ok(false);
        }
        let (digest, config) = read_pair(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (digest, Arc::new(config));
        Ok(true)
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn digest_of(cert: &Path, key: &Path) -> Result<blake3::Hash, TlsError> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&read(cert, "--tls-cert")?);
    hasher.update(&read(key, "--tls-key")?);
    Ok(hasher.finalize())
}

fn read_pair(cert: &Path, key: &Path) -> Result<(blake3::Hash, rustls::ServerConfig), TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_pem = read(cert, "--tls-cert")?;
    let key_pem = read(key, "--tls-key")?;
    let content = |path: &Path, what, why: String| TlsError::Content {
        what,
        path: path.to_owned(),
        why,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| content(cert, "--tls-cert", format!("is not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(content(
            cert,
            "--tls-cert",
            "holds no certificate".to_owned(),
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        content(
            key,
            "--tls-key",
            format!("holds no usable private key: {e}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let pair = |why: String| TlsError::Pair {
        cert: cert.to_owned(),
        key: key.to_owned(),
        why,
    };
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| pair(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| pair(e.to_string()))?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(&cert_pem);
    hasher.update(&key_pem);
    Ok((hasher.finalize(), config))
}

/// Serves `router` on `listener` until `shutdown` turns true, then stops accepting, lets each
/// connection finish the request it is on (idle ones close at once) and returns when all are
/// closed. The caller bounds the wait.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let max = limits.max_connections.max(1);
    let places = Arc::new(Semaphore::new(max));
    loop {
        let place = tokio::select! {
            p = places.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stopped(&mut shutdown) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a callback connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let (router, tls, shutdown) = (router.clone(), tls.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _place = place;
            match tls {
                None => connection(stream, peer, router, limits, shutdown).await,
                Some(tls) => {
                    let handshake = tls.acceptor().accept(stream);
                    match tokio::time::timeout(limits.client_timeout, handshake).await {
                        Ok(Ok(stream)) => connection(stream, peer, router, limits, shutdown).await,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer.ip(), error = %e, "a TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer.ip(), "a TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    // Every connection holds a place until it closes.
    let _ = places.acquire_many(max as u32).await;
}

async fn connection<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tower = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        tower.call(request)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.client_timeout)
        .keep_alive(true);
    let conn = http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(peer = %peer.ip(), error = %e, "a callback connection ended");
            }
        }
        () = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Waits until `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
