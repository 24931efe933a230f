//! The two listeners' routers: callbacks (`POST /callback`) and ops (`/healthz`, `/readyz`,
//! `/metrics`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt as _;
use tower_http::timeout::TimeoutLayer;

use crate::apply::Deleter;
use crate::callback::{AuthError, CallbackQuery, CallbackToken, parse_body};
use crate::ledger::history::EventReason;

use super::cidr::Cidr;
use super::enforcer::{Cause, Enforcer, Enqueued};
use super::metrics::{CallbackOutcome, Metrics, command_label};
use super::reload::{Current, Pending};

/// The largest callback body taken: a `Content-Length` over it is answered 413 before the body
/// is read, and a body without one is cut there.
pub const MAX_BODY: usize = 1024 * 1024;

/// The answer Tencent expects (it ignores it for the "after" callbacks).
pub const OK_ANSWER: &str = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;

/// What the callback listener needs.
pub struct Callbacks<D> {
    /// The adopted manifests and their index of forbidden conversations.
    pub adopted: Current,
    /// Where the users of overflowed callbacks go, for a targeted resync.
    pub pending: Arc<Pending>,
    /// The console's token; `None` only with `--insecure-no-callback-auth`.
    pub token: Option<CallbackToken>,
    /// The manifests' app.
    pub sdkappid: u64,
    /// `--callback-allow`; empty allows every peer.
    pub allow: Vec<Cidr>,
    /// Where queued conversations go.
    pub enforcer: Enforcer<D>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// The callback listener's router: a request must be handled (its body read) within
/// `request_timeout`. Serve it through [`super::listener::serve`], which gives it the peer's
/// address.
///
/// The handler takes the request whole and does its own checks, the body limit included: each
/// layer or extractor in front of it would cost every callback an allocation or a boxed
/// future, and a callback is answered at tens of thousands a second.
pub fn callback_router<D: Deleter + Clone + 'static>(
    callbacks: Arc<Callbacks<D>>,
    request_timeout: Duration,
) -> Router {
    with_request_timeout(
        Router::new()
            .route("/callback", post(callback::<D>))
            .with_state(callbacks),
        request_timeout,
    )
}

/// `router` answering 408 to a request not handled (its body read) within `request_timeout`.
pub fn with_request_timeout(router: Router, request_timeout: Duration) -> Router {
    router.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        request_timeout,
    ))
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
}

/// Why a callback's body was not read.
enum BodyError {
    /// Over [`MAX_BODY`].
    TooLarge,
    /// The connection failed or ended before the body did.
    Unreadable,
}

/// Reads the body up to [`MAX_BODY`]: a `Content-Length` over it is refused before anything
/// is read, a body without one is cut there.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut chunks = body.into_data_stream();
    let Some(first) = chunks.next().await else {
        return Ok(Bytes::new());
    };
    let first = first.map_err(|_| BodyError::Unreadable)?;
    if first.len() > MAX_BODY {
        return Err(BodyError::TooLarge);
    }
    // A callback's body nearly always comes in one piece: kept as it came, not copied.
    let Some(second) = chunks.next().await else {
        return Ok(first);
    };
    let mut whole = first.to_vec();
    let mut next = Some(second);
    while let Some(chunk) = next {
        let chunk = chunk.map_err(|_| BodyError::Unreadable)?;
        if whole.len() + chunk.len() > MAX_BODY {
            return Err(BodyError::TooLarge);
        }
        whole.extend_from_slice(&chunk);
        next = chunks.next().await;
    }
    Ok(Bytes::from(whole))
}

async fn callback<D: Deleter + Clone + 'static>(
    State(cb): State<Arc<Callbacks<D>>>,
    request: Request,
) -> Response {
    let arrived = Instant::now();
    let (parts, body) = request.into_parts();
    let query = CallbackQuery::parse(parts.uri.query().unwrap_or(""));
    let command = command_label(query.command.as_deref());
    let count = |outcome| cb.metrics.callback(command, outcome);
    // Read first, as an extractor would, so that every answer leaves the connection ready for
    // the next request.
    let body = match read_body(&parts.headers, body).await {
        Err(BodyError::TooLarge) => {
            count(CallbackOutcome::TooLarge);
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "the body is over 1 MiB\n");
        }
        other => other,
    };
    // The listener always sets it; without it (a router served some other way) no address
    // is allowed by a non-empty --callback-allow.
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if !cb.allow.is_empty() && !peer.is_some_and(|ip| cb.allow.iter().any(|c| c.contains(ip))) {
        count(CallbackOutcome::Forbidden);
        tracing::warn!(peer = ?peer, "a callback from outside --callback-allow was refused");
        return plain(StatusCode::FORBIDDEN, "this peer may not post callbacks\n");
    }
    if let Some(token) = &cb.token {
        let now = jiff::Timestamp::now().as_second();
        match token.check(&query, now) {
            Ok(()) => {}
            Err(AuthError::Stale { skew_seconds }) => {
                count(CallbackOutcome::Stale);
                tracing::warn!(
                    skew_seconds,
                    "a callback's RequestTime is out of the 60 s window: keep clocks in sync"
                );
                return plain(StatusCode::UNAUTHORIZED, "stale RequestTime\n");
            }
            Err(e) => {
                count(CallbackOutcome::Unauthorized);
                tracing::warn!(error = %e, peer = ?peer, "a callback failed authentication");
                return plain(StatusCode::UNAUTHORIZED, "unauthorized\n");
            }
        }
    }
    if !query.is_for_app(cb.sdkappid) {
        count(CallbackOutcome::Forbidden);
        tracing::warn!("a callback for another SdkAppid was refused");
        return plain(StatusCode::FORBIDDEN, "another app's callback\n");
    }
    let Ok(body) = body else {
        count(CallbackOutcome::Malformed);
        return plain(StatusCode::BAD_REQUEST, "the body could not be read\n");
    };
    let Some(command_name) = query.command.as_deref() else {
        count(CallbackOutcome::Malformed);
        return plain(StatusCode::BAD_REQUEST, "CallbackCommand is missing\n");
    };
    let message = match parse_body(command_name, &body) {
        Ok(Some(m)) => m,
        Ok(None) => {
            count(CallbackOutcome::Ignored);
            return ok();
        }
        Err(e) => {
            count(CallbackOutcome::Malformed);
            tracing::warn!(error = %e, "a malformed callback was refused");
            return plain(StatusCode::BAD_REQUEST, "malformed callback body\n");
        }
    };
    // Looked up under the read lock, without taking a reference to the generation: a reload
    // swaps it whole, so the answer is the old set's or the new one's.
    let concerned = cb
        .adopted
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .index
        .concerned(&message);
    if concerned.is_empty() {
        count(CallbackOutcome::Ignored);
        return ok();
    }
    let trigger = super::trigger(&message);
    let mut overflowed = Vec::new();
    for f in concerned {
        let cause = Cause {
            arrived,
            reason: EventReason::Enforced,
            trigger: Some(trigger.clone()),
        };
        let from = f.key.from.clone();
        if cb.enforcer.enqueue(f.key, f.clear_roaming, cause) == Enqueued::Overflow {
            overflowed.push(from);
        }
    }
    // A standby answers once what the callback concerns is committed to the state's queue.
    cb.enforcer.flush().await;
    if !overflowed.is_empty() {
        // Answered all the same; their users' lists are read again by a targeted resync.
        tracing::debug!("the queue is full: a callback's users are marked for a resync");
        cb.pending.mark(overflowed);
        count(CallbackOutcome::Overflow);
    } else {
        count(CallbackOutcome::Queued);
    }
    ok()
}

fn ok() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        OK_ANSWER,
    )
        .into_response()
}

/// Which part this replica plays, for `/readyz`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Not ready yet: the manifests, the state or the callback listener are still to come.
    #[default]
    Starting,
    /// It holds the state's lock: it deletes, records and resyncs.
    Active,
    /// Another replica holds the lock: callbacks go to the state's queue for it.
    Standby,
    /// The state is lost or unreachable: callbacks are answered and remembered, nothing is
    /// deleted; serve reconnects by itself. Says why.
    StateLost(String),
}

/// What `/readyz` says.
#[derive(Debug, Default)]
pub struct Readiness {
    role: std::sync::Mutex<Role>,
    first_resync_done: AtomicBool,
    /// What the last reload that was not adopted says (`--max-deletes`, invalid manifests).
    manifests: std::sync::Mutex<Option<String>>,
}

impl Readiness {
    /// Ready (the manifests are loaded, the state is held and the callback listener is up) as
    /// the active replica, or not ready at all (`starting`).
    pub fn set_ready(&self, ready: bool) {
        self.set_role(if ready { Role::Active } else { Role::Starting });
    }

    /// The part this replica plays now. Becoming active starts a new first resync.
    pub fn set_role(&self, role: Role) {
        let mut current = self.role.lock().unwrap_or_else(|p| p.into_inner());
        if role == Role::Active && *current != Role::Active {
            self.first_resync_done.store(false, Ordering::SeqCst);
        }
        *current = role;
    }

    /// The part this replica plays now.
    pub fn role(&self) -> Role {
        self.role.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The first resync has finished.
    pub fn set_first_resync_done(&self) {
        self.first_resync_done.store(true, Ordering::SeqCst);
    }

    /// Says why the manifests last read are not the ones enforced (`None`: they are).
    pub fn set_manifests_note(&self, note: Option<String>) {
        *self.manifests.lock().unwrap_or_else(|p| p.into_inner()) = note;
    }

    fn answer(&self) -> (StatusCode, String) {
        let resync = if self.first_resync_done.load(Ordering::SeqCst) {
            "first resync: done"
        } else {
            "first resync: running"
        };
        let note = self
            .manifests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|n| format!("; manifests: {n}"))
            .unwrap_or_default();
        match self.role() {
            Role::Active => (StatusCode::OK, format!("ready: active; {resync}{note}\n")),
            Role::Standby => (
                StatusCode::OK,
                format!("ready: standby; another replica holds the state's lock{note}\n"),
            ),
            Role::StateLost(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("state lost: {why}; reconnecting\n"),
            ),
            Role::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_owned()),
        }
    }
}

/// The ops listener's router.
pub fn ops_router(readiness: Arc<Readiness>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move { readiness.answer() }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_says_which_part_the_replica_plays() {
        let r = Readiness::default();
        assert_eq!(
            r.answer(),
            (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_owned())
        );
        r.set_role(Role::Standby);
        let (status, body) = r.answer();
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("ready: standby"), "{body}");
        r.set_role(Role::Active);
        assert_eq!(
            r.answer(),
            (
                StatusCode::OK,
                "ready: active; first resync: running\n".to_owned()
            )
        );
        r.set_first_resync_done();
        assert!(r.answer().1.contains("first resync: done"));
        r.set_role(Role::StateLost("calls stopped".into()));
        let (status, body) = r.answer();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.starts_with("state lost: calls stopped"), "{body}");
        // A new term as the active one runs its own first resync.
        r.set_role(Role::Active);
        assert!(r.answer().1.contains("first resync: running"));
    }
}
