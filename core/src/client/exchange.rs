//! One HTTP exchange: send a signed request, read a bounded reply, classify it.

use std::time::Duration;

use super::Client;
use super::outcome::Fatal;
use super::retry::Answer;
use crate::api::{ApiError, Endpoint};

/// The most bytes a reply may have. Real replies are a few hundred bytes (delete) to a few tens
/// of KiB (a get_list page of 100 conversations); a gateway or a hostile server sending more
/// is answered as a transient failure instead of filling memory. A declared `Content-Length`
/// above it is refused before any byte of the body is read, and a body without one is read
/// chunk by chunk and dropped as soon as it passes the cap.
pub const MAX_RESPONSE_BYTES: usize = 512 * 1024;

impl Client {
    /// Sends one request of endpoint `E` signed with `sig` and classifies the answer. Every
    /// piece of foreign text in the result is already scrubbed of secrets.
    pub(super) async fn exchange<E: Endpoint>(
        &self,
        body: &[u8],
        sig: &str,
    ) -> Answer<E::Response> {
        let sent = self
            .inner
            .http
            .post(self.url_for::<E>(sig))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => return self.transport(e),
        };
        let status = response.status().as_u16();
        match status {
            401 | 403 => {
                return Answer::Fatal(Fatal {
                    code: None,
                    message: format!(
                        "the endpoint refused the call with HTTP {status}: check --endpoint/TIMCTL_ENDPOINT and this machine's access to it"
                    ),
                });
            }
            429 => {
                return Answer::Transient {
                    reason: "HTTP 429 (too many requests)".into(),
                    frequency_limited: true,
                    retry_after: retry_after(&response),
                };
            }
            408 | 500..=599 => {
                return Answer::Transient {
                    reason: format!("HTTP {status}"),
                    frequency_limited: false,
                    retry_after: retry_after(&response),
                };
            }
            200..=299 => {}
            _ => {
                // 3xx (redirects are not followed) and other 4xx: the URL is wrong for every
                // call.
                return Answer::Fatal(Fatal {
                    code: None,
                    message: format!(
                        "the endpoint answered HTTP {status} to {}: check --endpoint/TIMCTL_ENDPOINT and app.region",
                        E::PATH
                    ),
                });
            }
        }
        if let Some(len) = response.content_length()
            && len > MAX_RESPONSE_BYTES as u64
        {
            return too_large(Some(len));
        }
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return too_large(None);
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return self.transport(e),
            }
        }
        let parsed: E::Response = match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(_) => {
                return Answer::Transient {
                    reason: format!("an unparseable response body ({} bytes)", bytes.len()),
                    frequency_limited: false,
                    retry_after: None,
                };
            }
        };
        match E::into_result(parsed) {
            Ok(r) => Answer::Done(r),
            Err(e) => Answer::Api {
                code: e.code(),
                class: e.class(),
                meaning: e.meaning(),
                action: e.action(),
                info: self.inner.signer.scrub(e.info()),
            },
        }
    }

    /// Describes a transport error without the URL (which carries the UserSig). A certificate
    /// that does not verify is fatal: every call would fail the same way.
    fn transport<R>(&self, e: reqwest::Error) -> Answer<R> {
        let e = e.without_url();
        let mut chain = String::new();
        let mut certificate = None;
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            if certificate.is_none() {
                certificate = certificate_problem(s);
            }
            source = s.source();
        }
        if let Some(cause) = certificate {
            return Answer::Fatal(Fatal {
                code: None,
                message: self.inner.signer.scrub(&format!(
                    "the TLS certificate of {} does not verify ({cause}): if the endpoint uses a private certificate authority, set SSL_CERT_FILE to a PEM file holding it (and the public roots, if other hosts are called); otherwise check --endpoint/TIMCTL_ENDPOINT and the system's root certificates",
                    self.inner.base_url.host()
                )),
            });
        }
        let what = if e.is_timeout() {
            format!(
                "timed out (limit {} s)",
                self.inner.request_timeout.as_secs_f32()
            )
        } else if e.is_connect() {
            "could not connect".to_owned()
        } else if e.is_body() || e.is_decode() {
            "the response was cut off".to_owned()
        } else {
            "the connection failed".to_owned()
        };
        Answer::Transient {
            reason: self.inner.signer.scrub(&format!("{what}{chain}")),
            frequency_limited: false,
            retry_after: None,
        }
    }
}

/// A too-large reply, as a transient failure.
fn too_large<R>(declared: Option<u64>) -> Answer<R> {
    let size = declared.map_or_else(String::new, |n| format!(" ({n} bytes)"));
    Answer::Transient {
        reason: format!(
            "the reply{size} was over the limit of {} KiB; it was not read",
            MAX_RESPONSE_BYTES / 1024
        ),
        frequency_limited: false,
        retry_after: None,
    }
}

/// A `Retry-After` header's delay from now, in either of its forms (see
/// [`super::retry::retry_after_delay`]); absent, unreadable or garbage is `None`.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    super::retry::retry_after_delay(value, jiff::Timestamp::now())
}

/// The rustls verdict on the server's certificate, if that is what `e` is (directly or inside
/// an I/O error, whose `source()` skips the error it wraps). The layers between reqwest and
/// rustls may box it in ways a downcast cannot see through, so rustls's own wording for it is
/// recognised too.
fn certificate_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
        e.downcast_ref::<std::io::Error>()?
            .get_ref()?
            .downcast_ref::<rustls::Error>()
    });
    match tls {
        Some(
            tls @ (rustls::Error::InvalidCertificate(_)
            | rustls::Error::InvalidCertRevocationList(_)),
        ) => Some(tls.to_string()),
        Some(_) => None,
        None => {
            let text = e.to_string();
            text.starts_with("invalid peer certificate").then_some(text)
        }
    }
}
