//! A scripted HTTP(S) server over a real loopback socket, for client tests that need a
//! misbehaviour fake-tim does not have.

#![allow(dead_code)] // Each test file uses a different part of it.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server that answers the `n`th request (from 0), whose target (path and query) it is
/// given, with the bytes `respond` returns, then closes the connection.
pub(crate) struct Scripted {
    pub(crate) url: String,
    targets: Arc<Mutex<Vec<String>>>,
}

/// The answer to request `n` (from 0), given its target and body.
pub(crate) type Respond = dyn Fn(usize, &str, &[u8]) -> Vec<u8> + Send + Sync;

impl Scripted {
    pub(crate) async fn start(
        respond: impl Fn(usize, &str) -> Vec<u8> + Send + Sync + 'static,
    ) -> Self {
        Self::start_with(None, Arc::new(move |n, target, _| respond(n, target))).await
    }

    /// A server that reads each request's body as JSON.
    pub(crate) async fn start_json(
        respond: impl Fn(usize, serde_json::Value) -> Vec<u8> + Send + Sync + 'static,
    ) -> Self {
        Self::start_with(
            None,
            Arc::new(move |n, _, body| {
                respond(n, serde_json::from_slice(body).unwrap_or_default())
            }),
        )
        .await
    }

    pub(crate) async fn start_with(
        tls: Option<tokio_rustls::TlsAcceptor>,
        respond: Arc<Respond>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = targets.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (respond, seen, tls) = (respond.clone(), seen.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(tls) => {
                            // A client that refuses the certificate ends the handshake here.
                            if let Ok(stream) = tls.accept(socket).await {
                                answer(stream, &*respond, &seen).await;
                            }
                        }
                        None => answer(socket, &*respond, &seen).await,
                    }
                });
            }
        });
        Scripted {
            url: format!("{scheme}://{addr}"),
            targets,
        }
    }

    pub(crate) fn requests(&self) -> usize {
        self.targets.lock().unwrap().len()
    }
}

/// Reads one request (head and `Content-Length` body) and writes the scripted answer.
async fn answer(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    respond: &Respond,
    seen: &Mutex<Vec<String>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let target = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let n = {
        let mut seen = seen.lock().unwrap();
        seen.push(target.clone());
        seen.len() - 1
    };
    let body = &buf[head_end..head_end + length];
    let _ = stream.write_all(&respond(n, &target, body)).await;
    let _ = stream.shutdown().await;
}

pub(crate) fn http(status: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}
