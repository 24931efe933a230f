//! The HTTP client: the only code in timctl that talks to the network.
//!
//! One [`Client`] is built per run from a [`ClientConfig`] and shared (it is a cheap `Arc`
//! clone) by every task that makes calls. Its rooms:
//! - [`base_url`]: where calls go (a region's host, or a checked override);
//! - [`credentials`]: the secret key or a ready UserSig (read by the binary, passed in);
//! - `signer`: the UserSig in use, its renewal at half its lifetime (or after a 70001
//!   "expired" answer), and the scrubbing of every secret out of foreign text;
//! - `limiter`: one rate limiter per endpoint, from its spec's `calls_per_second`;
//! - `exchange`: one request over a pooled reqwest client (rustls, the system's roots plus
//!   `SSL_CERT_FILE`, no redirects, no proxy for loopback, a capped reply);
//! - `retry`: the pure decision after each attempt (retry after a backoff, renew, give up,
//!   stop the run), with exponential backoff whose jitter stays under the cap;
//! - [`outcome`]: what a call became, without HTTP;
//! - [`list`]: one user's whole conversation list through `recentcontact/get_list`, paged.
//!
//! The client obeys the run's one [`Stop`] signal: once it is raised (by anyone), calls
//! waiting to start or to retry return [`Outcome::Stopped`] at once and nothing more is sent;
//! a fatal answer raises it ([`StopReason::Fatal`]).

pub mod base_url;
pub mod credentials;
mod exchange;
mod limiter;
pub mod list;
pub mod outcome;
mod retry;
mod signer;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::api::{Endpoint, query};
use crate::stop::{Stop, StopReason};

pub use base_url::{BaseUrl, BaseUrlError};
pub use credentials::{Credentials, CredentialsError, secret_key_from_lookup};
pub use exchange::MAX_RESPONSE_BYTES;
pub use outcome::{Fatal, Outcome, Stats};
// The manifest's diagnostics redact secrets with the same rules as the client's messages.
pub(crate) use signer::{REDACTED, scrub};

pub use limiter::Lane;
use limiter::RateLimiter;
use retry::{Next, Progress, RetryPolicy};
use signer::Signer;

/// "1 attempt" or "N attempts", for the messages that say how often a call was tried.
pub(crate) fn attempts(n: u32) -> String {
    match n {
        1 => "1 attempt".to_owned(),
        n => format!("{n} attempts"),
    }
}

/// The default rate for an endpoint documented at `documented` calls per second: a little under
/// it (197 for 200: 1.5% under), so that timing jitter between us and the server never trips
/// its limit.
pub fn default_rate(documented: u32) -> f64 {
    f64::from(documented - (documented * 3 / 200).max(1).min(documented - 1))
}

/// Everything a [`Client`] needs.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Where calls go.
    pub base_url: BaseUrl,
    /// The app.
    pub sdkappid: u64,
    /// The app admin account that signs the calls (the `identifier` query parameter).
    pub admin: String,
    /// How calls are signed.
    pub credentials: Credentials,
    /// Calls started per second, per endpoint path, where not [`default_rate`] of the
    /// endpoint's documented limit. Set with [`ClientConfig::set_rate`].
    rates: BTreeMap<&'static str, f64>,
    /// Retries of a transient failure per call (0 = try once).
    pub max_retries: u32,
    /// First retry delay; it doubles per retry, with jitter.
    pub min_backoff: Duration,
    /// The cap on one retry delay (jitter and `Retry-After` included).
    pub max_backoff: Duration,
    /// TCP and TLS connection timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout (connect to last byte of the body).
    pub request_timeout: Duration,
    /// Lifetime of self-made UserSigs; they are renewed at half of it.
    pub usersig_lifetime: Duration,
    /// The run's stop signal: obeyed before every send, raised on a fatal answer.
    pub stop: Stop,
    /// Told of every request sent, retries included (serve's `timctl_api_calls_total`).
    pub attempts: Option<AttemptObserver>,
}

/// What one request on the wire came back with, for [`AttemptObserver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptCode {
    /// An answer with this `ErrorCode` (0: success).
    Code(i64),
    /// No usable answer: a dropped connection, a timeout, an HTTP 429 or 5xx, a cut body.
    Transient,
    /// An answer that dooms every call without an `ErrorCode` (HTTP 401/403, TLS).
    Fatal,
}

impl AttemptCode {
    fn of<R>(answer: &retry::Answer<R>) -> Self {
        match answer {
            retry::Answer::Done(_) => AttemptCode::Code(0),
            retry::Answer::Api { code, .. } => AttemptCode::Code(*code),
            retry::Answer::Transient { .. } => AttemptCode::Transient,
            retry::Answer::Fatal(f) => f.code.map_or(AttemptCode::Fatal, AttemptCode::Code),
        }
    }
}

/// A function told of each request a [`Client`] sends: the endpoint's path and the answer's
/// [`AttemptCode`]. It runs on the calling task: keep it cheap (a counter).
#[derive(Clone)]
pub struct AttemptObserver(Arc<dyn Fn(&'static str, AttemptCode) + Send + Sync>);

impl AttemptObserver {
    /// Wraps `f`.
    pub fn new(f: impl Fn(&'static str, AttemptCode) + Send + Sync + 'static) -> Self {
        AttemptObserver(Arc::new(f))
    }

    fn observe(&self, endpoint: &'static str, code: AttemptCode) {
        (self.0)(endpoint, code);
    }
}

impl fmt::Debug for AttemptObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AttemptObserver")
    }
}

impl ClientConfig {
    /// The defaults: each endpoint at [`default_rate`] of its documented limit, 5 retries from
    /// 200 ms up to 10 s, 10 s connect and 30 s request timeouts, UserSigs valid for a day, and
    /// a stop signal of its own (replace it with the run's).
    pub fn new(
        base_url: BaseUrl,
        sdkappid: u64,
        admin: impl Into<String>,
        credentials: Credentials,
    ) -> Self {
        ClientConfig {
            base_url,
            sdkappid,
            admin: admin.into(),
            credentials,
            rates: BTreeMap::new(),
            max_retries: 5,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            usersig_lifetime: Duration::from_secs(86400),
            stop: Stop::new(),
            attempts: None,
        }
    }

    /// Sets endpoint `E`'s rate in calls started per second (checked by [`Client::new`]).
    pub fn set_rate<E: Endpoint>(&mut self, calls_per_second: f64) {
        self.rates.insert(E::PATH, calls_per_second);
    }

    /// Endpoint `E`'s rate: as set, else [`default_rate`] of its documented limit.
    pub fn rate<E: Endpoint>(&self) -> f64 {
        rate_for(&self.rates, E::PATH, E::CALLS_PER_SECOND)
    }
}

fn rate_for(rates: &BTreeMap<&'static str, f64>, path: &str, documented: u32) -> f64 {
    rates
        .get(path)
        .copied()
        .unwrap_or_else(|| default_rate(documented))
}

/// Why a [`Client`] could not be built.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ClientError {
    /// A rate that is not a positive number.
    #[error("the rate for {path} must be a positive number of calls per second, not {rate}")]
    #[diagnostic(code(timctl::client::rate), help("pass a whole number of at least 1"))]
    Rate {
        /// The endpoint's path.
        path: &'static str,
        /// The rate given.
        rate: f64,
    },
    /// The HTTP stack (TLS roots) could not be set up.
    #[error("could not set up the HTTP client (TLS with the system's root certificates): {0}")]
    #[diagnostic(
        code(timctl::client::http),
        help("check the system's root certificates, or SSL_CERT_FILE if it is set")
    )]
    Http(String),
}

#[derive(Default)]
struct Counters {
    attempts: AtomicU64,
    retries: AtomicU64,
    frequency_limited: AtomicU64,
    renewals: AtomicU64,
}

/// The API client; clone it freely, clones share everything (pool, limiters, stop signal).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url.as_str())
            .field("sdkappid", &self.inner.sdkappid)
            .field("admin", &self.inner.signer.admin)
            .finish_non_exhaustive()
    }
}

struct Inner {
    http: reqwest::Client,
    base_url: BaseUrl,
    sdkappid: u64,
    signer: Signer,
    rates: BTreeMap<&'static str, f64>,
    /// One limiter per endpoint path, made on its first call.
    limiters: Mutex<HashMap<&'static str, Arc<RateLimiter>>>,
    policy: RetryPolicy,
    request_timeout: Duration,
    stop: Stop,
    fatal: Mutex<Option<Fatal>>,
    counters: Counters,
    attempts: Option<AttemptObserver>,
}

/// Query values are percent-encoded, everything but RFC 3986's unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Client {
    /// Builds the client. Makes the first UserSig now when given the secret key.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        if let Some((&path, &rate)) = config
            .rates
            .iter()
            .find(|(_, r)| !(r.is_finite() && **r > 0.0))
        {
            return Err(ClientError::Rate { path, rate });
        }
        let mut http = reqwest::Client::builder()
            // The query string carries the UserSig: a redirect would resend it elsewhere, with
            // a Referer.
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            // Every request on the wire goes through our limiter and retry policy, so reqwest
            // must not resend anything on its own.
            .retry(reqwest::retry::never())
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("timctl/", env!("CARGO_PKG_VERSION")));
        if config.base_url.is_loopback() {
            http = http.no_proxy();
        } else {
            http = http.https_only(true);
        }
        let http = http
            .build()
            .map_err(|e| ClientError::Http(e.without_url().to_string()))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                signer: Signer::new(
                    config.credentials,
                    config.sdkappid,
                    config.admin,
                    config.usersig_lifetime,
                ),
                base_url: config.base_url,
                sdkappid: config.sdkappid,
                rates: config.rates,
                limiters: Mutex::new(HashMap::new()),
                policy: RetryPolicy {
                    max_retries: config.max_retries,
                    min_backoff: config.min_backoff,
                    max_backoff: config.max_backoff,
                },
                request_timeout: config.request_timeout,
                stop: config.stop,
                fatal: Mutex::new(None),
                counters: Counters::default(),
                attempts: config.attempts,
            }),
        })
    }

    /// The stop signal this client obeys (the run's, when the config was given it).
    pub fn stop_signal(&self) -> &Stop {
        &self.inner.stop
    }

    /// The first fatal failure, if one stopped the run.
    pub fn fatal(&self) -> Option<Fatal> {
        self.inner
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            attempts: c.attempts.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            frequency_limited: c.frequency_limited.load(Ordering::Relaxed),
            renewals: c.renewals.load(Ordering::Relaxed),
        }
    }

    /// Endpoint `E`'s limiter, made on first use from its rate.
    fn limiter<E: Endpoint>(&self) -> Arc<RateLimiter> {
        let mut limiters = self
            .inner
            .limiters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        limiters
            .entry(E::PATH)
            .or_insert_with(|| {
                Arc::new(RateLimiter::new(rate_for(
                    &self.inner.rates,
                    E::PATH,
                    E::CALLS_PER_SECOND,
                )))
            })
            .clone()
    }

    /// Sleeps until `until`; false when the run was stopped first (or by then).
    async fn sleep_until(&self, until: tokio::time::Instant) -> bool {
        tokio::select! {
            () = tokio::time::sleep_until(until) => !self.inner.stop.is_stopped(),
            () = self.inner.stop.stopped() => false,
        }
    }

    /// Waits for a send slot of `limiter`: the instant the send was admitted at, or `None`
    /// when the run was stopped meanwhile.
    async fn wait_for_slot(
        &self,
        limiter: &RateLimiter,
        lane: Lane,
    ) -> Option<tokio::time::Instant> {
        if self.inner.stop.is_stopped() {
            return None;
        }
        let admitted = limiter.acquire(lane, |t| self.sleep_until(t)).await?;
        // The last look before the request leaves: nothing is sent after a stop.
        (!self.inner.stop.is_stopped()).then_some(admitted)
    }

    /// Records the first fatal failure, raises the run's stop signal, and returns it as this
    /// call's outcome.
    fn fail<R>(&self, fatal: Fatal) -> Outcome<R> {
        {
            let mut first = self.inner.fatal.lock().unwrap_or_else(|p| p.into_inner());
            if first.is_none() {
                *first = Some(fatal.clone());
            }
        }
        // The caller shows the message once; a log line at the default level would repeat it.
        tracing::debug!("stopping: {}", fatal.message);
        self.inner.stop.stop(StopReason::Fatal);
        Outcome::Fatal(fatal)
    }

    /// Makes one call of endpoint `E`: waits for the endpoint's rate limiter, sends it,
    /// classifies the answer, and retries transient failures with backoff.
    pub async fn call<E: Endpoint>(&self, request: &E::Request) -> Outcome<E::Response> {
        self.call_in::<E>(request, Lane::Urgent).await
    }

    /// [`Client::call`], its starts (retries included) waiting in `lane` of the endpoint's
    /// limiter.
    pub async fn call_in<E: Endpoint>(
        &self,
        request: &E::Request,
        lane: Lane,
    ) -> Outcome<E::Response> {
        let body = match serde_json::to_vec(request) {
            Ok(b) => b,
            Err(e) => {
                return self.fail(Fatal {
                    code: None,
                    message: format!(
                        "could not encode a {} request ({e}); this is a bug in timctl",
                        E::NAME
                    ),
                });
            }
        };
        let limiter = self.limiter::<E>();
        let mut progress = Progress::default();
        loop {
            let Some(admitted) = self.wait_for_slot(&limiter, lane).await else {
                return Outcome::Stopped;
            };
            progress.attempts += 1;
            // One event per request on the wire, with the time the limiter admitted it: the
            // rate as the client kept it, apart from the network's jitter on the way.
            tracing::trace!(
                endpoint = E::PATH,
                attempt = progress.attempts,
                sent_at_us = limiter.micros_since_origin(admitted),
                "sending"
            );
            self.inner.counters.attempts.fetch_add(1, Ordering::Relaxed);
            let (sig, generation) = self.inner.signer.current();
            let answer = self.exchange::<E>(&body, &sig).await;
            if let Some(observer) = &self.inner.attempts {
                observer.observe(E::PATH, AttemptCode::of(&answer));
            }
            if answer.is_frequency_limited() {
                self.inner
                    .counters
                    .frequency_limited
                    .fetch_add(1, Ordering::Relaxed);
                limiter.slow_down();
            }
            let next = retry::decide(
                answer,
                progress,
                self.inner.signer.can_renew(),
                &self.inner.policy,
                rand::random::<f64>(),
            );
            match next {
                Next::Finish(outcome) => {
                    if let Outcome::RetriesExhausted { last, .. } = &outcome {
                        tracing::debug!(
                            "{} failed {} times; giving up: {last}",
                            E::NAME,
                            progress.attempts
                        );
                    }
                    return outcome;
                }
                Next::Stop(fatal) => return self.fail(fatal),
                Next::RenewAndRetry => {
                    self.inner.signer.renew(generation);
                    progress.renewed = true;
                    self.inner.counters.renewals.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        "the UserSig expired (70001); made a fresh one and trying again"
                    );
                }
                Next::Retry { after, reason } => {
                    progress.retries += 1;
                    self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        "{} attempt {} failed ({reason}); retrying in {} ms",
                        E::NAME,
                        progress.attempts,
                        after.as_millis()
                    );
                    if !self.sleep_until(tokio::time::Instant::now() + after).await {
                        return Outcome::Stopped;
                    }
                }
            }
        }
    }

    /// The full URL of one call. It carries the UserSig: never log or print it.
    fn url_for<E: Endpoint>(&self, sig: &str) -> String {
        let enc = |v: &str| utf8_percent_encode(v, QUERY_VALUE).to_string();
        format!(
            "{}{}?{}={}&{}={}&{}={}&{}={}&{}=json",
            self.inner.base_url.as_str(),
            E::PATH,
            query::SDKAPPID,
            self.inner.sdkappid,
            query::IDENTIFIER,
            enc(&self.inner.signer.admin),
            query::USERSIG,
            enc(sig),
            query::RANDOM,
            rand::random::<u32>(),
            query::CONTENTTYPE,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rate_is_a_little_under_the_limit() {
        assert_eq!(default_rate(200), 197.0);
        assert_eq!(default_rate(1), 1.0);
        assert_eq!(default_rate(10), 9.0);
    }

    #[test]
    fn rates_are_per_endpoint() {
        use crate::api::RecentContactDelete;
        let mut config = ClientConfig::new(
            BaseUrl::parse("http://127.0.0.1:1").unwrap(),
            1,
            "admin",
            Credentials::UserSig("s".into()),
        );
        assert_eq!(config.rate::<RecentContactDelete>(), 197.0);
        config.set_rate::<RecentContactDelete>(50.0);
        assert_eq!(config.rate::<RecentContactDelete>(), 50.0);
        config.set_rate::<RecentContactDelete>(0.0);
        assert!(matches!(
            Client::new(config),
            Err(ClientError::Rate { rate, .. }) if rate == 0.0
        ));
    }

    /// Issue 9.2: each endpoint paces on its own limiter at its own rate, so listing does not
    /// eat into deletion's quota or the other way round.
    #[tokio::test(start_paused = true)]
    async fn each_endpoint_has_its_own_limiter() {
        use crate::api::{RecentContactDelete, RecentContactGetList};
        let mut config = ClientConfig::new(
            BaseUrl::parse("http://127.0.0.1:1").unwrap(),
            1,
            "admin",
            Credentials::UserSig("s".into()),
        );
        config.set_rate::<RecentContactGetList>(20.0);
        let client = Client::new(config).unwrap();
        let delete = client.limiter::<RecentContactDelete>();
        let list = client.limiter::<RecentContactGetList>();
        assert!(!Arc::ptr_eq(&delete, &list));
        assert!(Arc::ptr_eq(
            &delete,
            &client.limiter::<RecentContactDelete>()
        ));
        let (l1, l2) = (list.reserve(), list.reserve());
        let (d1, d2) = (delete.reserve(), delete.reserve());
        assert_eq!(l2 - l1, Duration::from_millis(50));
        assert_eq!(d2 - d1, Duration::from_secs_f64(1.0 / 197.0));
        // The delete limiter did not wait behind the get_list one.
        assert_eq!(d1, l1);
    }
}
