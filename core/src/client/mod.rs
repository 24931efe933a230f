//! The HTTP client: the only code in timctl that talks to the network.
//!
//! One [`Client`] is built per run from a [`ClientConfig`] and shared (it is a cheap `Arc`
//! clone) by every task that makes calls. It owns:
//! - one pooled reqwest client over rustls trusting the system's roots, that never follows a
//!   redirect, never goes through a proxy for loopback, and whose errors are stripped of the URL
//!   (the query string carries the UserSig);
//! - the credentials: a UserSig it makes itself from the secret key and renews at half its
//!   lifetime (or after a 70001 "expired" answer), or a ready UserSig used as given;
//! - one rate limiter shared by every call (see [`limiter`]);
//! - the retry policy: exponential backoff with jitter and a cap, for transient answers only;
//! - a stop switch: the first fatal answer (or [`Client::stop`]) makes every call that has not
//!   started yet, or is waiting to retry, return [`Outcome::Stopped`] at once.
//!
//! [`Client::call`] returns an [`Outcome`] the caller can act on without knowing HTTP.

mod limiter;

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::BackoffBuilder as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::sync::Notify;

use crate::api::{ApiError, Endpoint, ErrorClass, Region, query};
use crate::usersig::{self, SecretKey};

use limiter::RateLimiter;

/// The default rate for an endpoint documented at `documented` calls per second: a little under
/// it (197 for 200: 1.5% under), so that timing jitter between us and the server never trips
/// its limit.
pub fn default_rate(documented: u32) -> f64 {
    f64::from(documented - (documented * 3 / 200).max(1).min(documented - 1))
}

// ---------------------------------------------------------------------------------------------
// Base URL

/// Where calls go: `https://HOST/` for a region, or an override (a private gateway, a fake).
/// Holds no credentials and no query, so it is safe to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrl {
    url: url::Url,
    loopback: bool,
}

/// Why an `--endpoint`/`TIMCTL_ENDPOINT` value was refused. Never echoes the value, which
/// might carry credentials.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BaseUrlError {
    /// Not a URL.
    #[error(
        "--endpoint/TIMCTL_ENDPOINT is not a valid URL ({0}); write it like https://host or http://127.0.0.1:8080"
    )]
    Invalid(String),
    /// Neither http nor https.
    #[error(
        "--endpoint/TIMCTL_ENDPOINT must start with https:// (or http:// for a loopback address), not {0}://"
    )]
    Scheme(String),
    /// Plain http to a host that is not loopback: the UserSig would cross the network in clear.
    #[error(
        "--endpoint/TIMCTL_ENDPOINT uses plain http:// for {0}, which is not a loopback address; use https://, since every call carries the UserSig"
    )]
    PlainHttp(String),
    /// `user:password@` in the URL.
    #[error("--endpoint/TIMCTL_ENDPOINT must not contain a user name or password")]
    Credentials,
    /// A query string or fragment, which the client owns.
    #[error("--endpoint/TIMCTL_ENDPOINT must not contain a query string or fragment")]
    Query,
}

impl BaseUrl {
    /// `https://{region.host()}/`.
    pub fn for_region(region: Region) -> Self {
        let url = url::Url::parse(&format!("https://{}/", region.host()))
            .unwrap_or_else(|_| unreachable!("region hosts are valid"));
        BaseUrl {
            url,
            loopback: false,
        }
    }

    /// An override; plain `http://` only for `localhost`, 127.0.0.0/8 and `[::1]`. A path
    /// (a gateway's prefix) is kept and the endpoint's path is appended below it.
    pub fn parse(s: &str) -> Result<Self, BaseUrlError> {
        let mut url =
            url::Url::parse(s.trim()).map_err(|e| BaseUrlError::Invalid(e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(BaseUrlError::Credentials);
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(BaseUrlError::Query);
        }
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
            None => return Err(BaseUrlError::Invalid("no host".into())),
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(BaseUrlError::PlainHttp(
                    url.host_str().unwrap_or_default().to_owned(),
                ));
            }
            other => return Err(BaseUrlError::Scheme(other.to_owned())),
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(BaseUrl { url, loopback })
    }

    /// The override when there is one, else the region's host.
    pub fn resolve(region: Region, endpoint: Option<&str>) -> Result<Self, BaseUrlError> {
        match endpoint {
            Some(e) if !e.trim().is_empty() => BaseUrl::parse(e),
            _ => Ok(BaseUrl::for_region(region)),
        }
    }

    /// Whether the host is a loopback address (then no proxy is ever used).
    pub fn is_loopback(&self) -> bool {
        self.loopback
    }

    /// The URL, ending in `/`.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Credentials

/// How calls are signed. `Debug` never shows the key or the UserSig.
#[derive(Clone)]
pub enum Credentials {
    /// The app's secret key: the client makes the admin's UserSig and renews it.
    SecretKey(SecretKey),
    /// A ready UserSig, used as given.
    UserSig(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::SecretKey(_) => f.write_str("Credentials::SecretKey([redacted])"),
            Credentials::UserSig(_) => f.write_str("Credentials::UserSig([redacted])"),
        }
    }
}

/// Why no credentials could be read from the environment.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Nothing set.
    #[error(
        "no credentials: set TIMCTL_SECRET_KEY or TIMCTL_SECRET_KEY_FILE (the app's secret key, from the Chat console), or TIMCTL_USERSIG (a ready UserSig for app.admin)"
    )]
    Missing,
    /// No secret key set, where one is needed (making a UserSig).
    #[error(
        "no secret key: set TIMCTL_SECRET_KEY or TIMCTL_SECRET_KEY_FILE to the app's secret key, from the Chat console"
    )]
    MissingKey,
    /// Both ways of giving the key at once; which one is meant is unclear.
    #[error("both TIMCTL_SECRET_KEY and TIMCTL_SECRET_KEY_FILE are set; unset one")]
    BothKeys,
    /// A variable that is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// The key file could not be read.
    #[error("could not read the secret key file {path} (TIMCTL_SECRET_KEY_FILE)")]
    ReadKeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file holds nothing but whitespace.
    #[error("the secret key file {0} (TIMCTL_SECRET_KEY_FILE) is empty")]
    EmptyKeyFile(PathBuf),
}

impl Credentials {
    /// From `TIMCTL_SECRET_KEY`, `TIMCTL_SECRET_KEY_FILE` or `TIMCTL_USERSIG`. A secret key wins
    /// over a ready UserSig, because the client can renew what it makes. Empty values count as
    /// unset.
    pub fn from_env() -> Result<Self, CredentialsError> {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// As [`Credentials::from_env`], reading variables through `get` (for tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<OsString>) -> Result<Self, CredentialsError> {
        match Self::key_from_lookup(&get) {
            Ok(key) => return Ok(Credentials::SecretKey(key)),
            Err(CredentialsError::MissingKey) => {}
            Err(e) => return Err(e),
        }
        match non_empty(&get, "TIMCTL_USERSIG")? {
            Some(sig) => Ok(Credentials::UserSig(sig.trim().to_owned())),
            None => Err(CredentialsError::Missing),
        }
    }

    /// The secret key alone, from `TIMCTL_SECRET_KEY` or `TIMCTL_SECRET_KEY_FILE` (for
    /// `timctl usersig`, which makes or checks UserSigs and so needs the key itself).
    pub fn secret_key_from_env() -> Result<SecretKey, CredentialsError> {
        Self::key_from_lookup(&|name: &str| std::env::var_os(name))
    }

    fn key_from_lookup(
        get: &impl Fn(&str) -> Option<OsString>,
    ) -> Result<SecretKey, CredentialsError> {
        let key = non_empty(get, "TIMCTL_SECRET_KEY")?;
        let file = get("TIMCTL_SECRET_KEY_FILE").filter(|v| !v.is_empty());
        match (key, file) {
            (Some(_), Some(_)) => Err(CredentialsError::BothKeys),
            (Some(k), None) => SecretKey::new(k).ok_or(CredentialsError::MissingKey),
            (None, Some(path)) => {
                let path = PathBuf::from(path);
                let text = std::fs::read_to_string(&path).map_err(|source| {
                    CredentialsError::ReadKeyFile {
                        path: path.clone(),
                        source,
                    }
                })?;
                SecretKey::new(text).ok_or(CredentialsError::EmptyKeyFile(path))
            }
            (None, None) => Err(CredentialsError::MissingKey),
        }
    }
}

fn non_empty(
    get: &impl Fn(&str) -> Option<OsString>,
    name: &'static str,
) -> Result<Option<String>, CredentialsError> {
    match get(name) {
        None => Ok(None),
        Some(v) => {
            let v = v
                .into_string()
                .map_err(|_| CredentialsError::NotUtf8(name))?;
            Ok(if v.trim().is_empty() { None } else { Some(v) })
        }
    }
}

/// The UserSig in use, and for a self-made one when to renew it.
struct Signer {
    key: Option<SecretKey>,
    sdkappid: u64,
    admin: String,
    lifetime: Duration,
    current: Mutex<CurrentSig>,
}

struct CurrentSig {
    sig: Arc<str>,
    /// The UserSig before the last renewal: answers to calls signed with it may still arrive.
    previous: Option<Arc<str>>,
    generation: u64,
    renew_at: SystemTime,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Signer {
    fn new(credentials: Credentials, sdkappid: u64, admin: String, lifetime: Duration) -> Self {
        let (key, sig) = match credentials {
            Credentials::SecretKey(key) => {
                let sig = usersig::make(sdkappid, &admin, &key, unix_now(), lifetime.as_secs());
                (Some(key), sig)
            }
            Credentials::UserSig(sig) => (None, sig),
        };
        Signer {
            key,
            sdkappid,
            admin,
            lifetime,
            current: Mutex::new(CurrentSig {
                sig: sig.into(),
                previous: None,
                generation: 0,
                renew_at: SystemTime::now() + lifetime / 2,
            }),
        }
    }

    /// The UserSig to use now, renewing a self-made one at half its lifetime.
    fn current(&self) -> (Arc<str>, u64) {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if self.key.is_some() && SystemTime::now() >= cur.renew_at {
            self.renew_locked(&mut cur);
        }
        (cur.sig.clone(), cur.generation)
    }

    /// After a 70001 answer to `generation`: makes a fresh UserSig unless another call already
    /// did. Returns false for a UserSig given as is, which cannot be renewed.
    fn renew(&self, generation: u64) -> bool {
        if self.key.is_none() {
            return false;
        }
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.generation == generation {
            self.renew_locked(&mut cur);
        }
        true
    }

    fn renew_locked(&self, cur: &mut CurrentSig) {
        if let Some(key) = &self.key {
            cur.previous = Some(cur.sig.clone());
            cur.sig = usersig::make(
                self.sdkappid,
                &self.admin,
                key,
                unix_now(),
                self.lifetime.as_secs(),
            )
            .into();
            cur.generation += 1;
            cur.renew_at = SystemTime::now() + self.lifetime / 2;
        }
    }

    /// Removes the secrets from text that came from elsewhere (a server's ErrorInfo, a
    /// transport error), so that nothing this client reports can leak them.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        let (cur, previous) = {
            let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            (cur.sig.clone(), cur.previous.clone())
        };
        let sigs = [Some(cur), previous].into_iter().flatten();
        let secrets = sigs
            .map(|s| s.to_string())
            .chain(self.key.as_ref().map(|k| k.expose().to_owned()));
        for secret in secrets.filter(|s| !s.is_empty()) {
            // Raw, and as it stands in a query string, in case a gateway echoes the URL.
            let encoded = utf8_percent_encode(&secret, QUERY_VALUE).to_string();
            out = out
                .replace(&secret, "[redacted]")
                .replace(&encoded, "[redacted]");
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Config, outcome, client

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
    /// Calls started per second, shared by all calls. Default [`default_rate`] of the
    /// endpoint's documented limit.
    pub rate: f64,
    /// Retries of a transient failure per call (0 = try once).
    pub max_retries: u32,
    /// First retry delay; it doubles per retry, with jitter.
    pub min_backoff: Duration,
    /// The cap on one retry delay.
    pub max_backoff: Duration,
    /// TCP and TLS connection timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout (connect to last byte of the body).
    pub request_timeout: Duration,
    /// Lifetime of self-made UserSigs; they are renewed at half of it.
    pub usersig_lifetime: Duration,
}

impl ClientConfig {
    /// The defaults for `v4/recentcontact/delete`: 197 calls/s, 5 retries from 200 ms up to
    /// 10 s, 10 s connect and 30 s request timeouts, UserSigs valid for a day.
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
            rate: default_rate(crate::api::RecentContactDelete::CALLS_PER_SECOND),
            max_retries: 5,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            usersig_lifetime: Duration::from_secs(86400),
        }
    }
}

/// Why a [`Client`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `rate` is not a positive number.
    #[error("the rate must be a positive number of calls per second")]
    Rate,
    /// The HTTP stack (TLS roots) could not be set up.
    #[error("could not set up the HTTP client (TLS with the system's root certificates): {0}")]
    Http(String),
}

/// What became of one call. The caller needs no HTTP to act on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<R> {
    /// Done: `ErrorCode` 0.
    Success(R),
    /// There was nothing to do (e.g. 50001, the user does not exist): count it as done.
    AlreadyAbsent {
        /// The code.
        code: i64,
        /// What it means, and the server's ErrorInfo.
        message: String,
    },
    /// This call failed (e.g. 50002); others may succeed.
    ItemFailed {
        /// The code.
        code: i64,
        /// What it means, and the server's ErrorInfo.
        message: String,
    },
    /// A failure that dooms every call: stop the run and show this message. The client has
    /// stopped itself: calls not started yet return [`Outcome::Stopped`].
    Fatal(Fatal),
    /// A transient failure persisted through every retry.
    RetriesExhausted {
        /// How many times the call was sent.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// Not sent, or not retried, because the client was stopped (a fatal answer to another
    /// call, or [`Client::stop`]). The call may be made again in a later run.
    Stopped,
}

/// A failure that dooms every call of the run. The message is for people, says what to check,
/// and holds no secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Fatal {
    /// The server's code, or `None` for an HTTP status from a gateway.
    pub code: Option<i64>,
    /// e.g. "The UserSig is invalid (70003): check TIMCTL_SECRET_KEY and app.sdkappid."
    pub message: String,
}

/// Counters over the client's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests sent (first tries and retries).
    pub attempts: u64,
    /// Retries after a transient failure.
    pub retries: u64,
    /// Frequency-limit answers (60007, 60011, 60018, 60019, HTTP 429).
    pub frequency_limited: u64,
    /// Self-made UserSigs renewed after a 70001 answer.
    pub renewals: u64,
}

#[derive(Default)]
struct Counters {
    attempts: AtomicU64,
    retries: AtomicU64,
    frequency_limited: AtomicU64,
    renewals: AtomicU64,
}

/// The API client; clone it freely, clones share everything (pool, limiter, stop switch).
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
    limiter: RateLimiter,
    backoff: backon::ExponentialBuilder,
    request_timeout: Duration,
    stopped: AtomicBool,
    stop_notify: Notify,
    fatal: Mutex<Option<Fatal>>,
    counters: Counters,
}

/// Query values are percent-encoded, everything but RFC 3986's unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The frequency-limit codes: retried, and they slow the limiter down.
const FREQUENCY_LIMIT_CODES: [i64; 4] = [60007, 60011, 60018, 60019];

/// 70001: the UserSig has expired.
const USERSIG_EXPIRED: i64 = 70001;

/// One attempt's result, before the retry policy looks at it.
enum Attempt<R> {
    Done(R),
    Api {
        code: i64,
        class: ErrorClass,
        meaning: &'static str,
        action: &'static str,
        info: String,
    },
    Transient {
        reason: String,
        frequency_limited: bool,
    },
    Fatal(Fatal),
}

impl Client {
    /// Builds the client. Makes the first UserSig now when given the secret key.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        if !(config.rate.is_finite() && config.rate > 0.0) {
            return Err(ClientError::Rate);
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
        let backoff = backon::ExponentialBuilder::default()
            .with_min_delay(config.min_backoff)
            .with_max_delay(config.max_backoff)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(config.max_retries as usize);
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
                limiter: RateLimiter::new(config.rate),
                backoff,
                request_timeout: config.request_timeout,
                stopped: AtomicBool::new(false),
                stop_notify: Notify::new(),
                fatal: Mutex::new(None),
                counters: Counters::default(),
            }),
        })
    }

    /// Stops the client: calls waiting to start or to retry return [`Outcome::Stopped`] at
    /// once, and new calls are not sent. Requests already on the wire finish normally, so a
    /// deletion the server confirms is never lost.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.stop_notify.notify_waiters();
    }

    /// Whether [`Client::stop`] was called or a fatal answer arrived.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    /// The first fatal failure, if one stopped the client.
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

    /// Resolves when the client is stopped.
    async fn stopped(&self) {
        loop {
            let notified = self.inner.stop_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }

    /// Sleeps until `until`; false when the client stopped first.
    async fn sleep_until(&self, until: tokio::time::Instant) -> bool {
        tokio::select! {
            () = tokio::time::sleep_until(until) => !self.is_stopped(),
            () = self.stopped() => false,
        }
    }

    /// Records the first fatal failure, stops the client, and returns it as any call's outcome.
    fn fail<R>(&self, fatal: Fatal) -> Outcome<R> {
        {
            let mut first = self.inner.fatal.lock().unwrap_or_else(|p| p.into_inner());
            if first.is_none() {
                *first = Some(fatal.clone());
            }
        }
        // The caller shows the message once; a log line at the default level would repeat it.
        tracing::debug!("stopping: {}", fatal.message);
        self.stop();
        Outcome::Fatal(fatal)
    }

    /// Makes one call of endpoint `E`: waits for the shared rate limiter, sends it, retries
    /// transient failures with backoff, and classifies the answer.
    pub async fn call<E: Endpoint>(&self, request: &E::Request) -> Outcome<E::Response> {
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
        let mut backoff = self.inner.backoff.build();
        let mut renewed = false;
        let mut attempts = 0u32;
        loop {
            if self.is_stopped() {
                return Outcome::Stopped;
            }
            let slot = self.inner.limiter.reserve();
            if !self.sleep_until(slot).await {
                return Outcome::Stopped;
            }
            // The slot's time has come, but this task may have woken late along with others:
            // the real send times get the last word.
            while let Some(free_at) = self.inner.limiter.admit() {
                if !self.sleep_until(free_at).await {
                    return Outcome::Stopped;
                }
            }
            attempts += 1;
            self.inner.counters.attempts.fetch_add(1, Ordering::Relaxed);
            let (sig, generation) = self.inner.signer.current();
            let (reason, frequency_limited) = match self.attempt::<E>(&body, &sig).await {
                Attempt::Done(r) => return Outcome::Success(r),
                Attempt::Fatal(f) => return self.fail(f),
                Attempt::Api {
                    code,
                    class,
                    meaning,
                    action,
                    info,
                } => {
                    let info = self.inner.signer.scrub(&info);
                    let described = describe(code, meaning, &info);
                    match class {
                        ErrorClass::AlreadyAbsent => {
                            return Outcome::AlreadyAbsent {
                                code,
                                message: described,
                            };
                        }
                        ErrorClass::Item => {
                            return Outcome::ItemFailed {
                                code,
                                message: described,
                            };
                        }
                        ErrorClass::Fatal if code == USERSIG_EXPIRED && !renewed => {
                            if self.inner.signer.renew(generation) {
                                renewed = true;
                                self.inner.counters.renewals.fetch_add(1, Ordering::Relaxed);
                                tracing::info!(
                                    "the UserSig expired (70001); made a fresh one and trying again"
                                );
                                continue;
                            }
                            return self.fail(fatal_for(code, meaning, action, &info, false));
                        }
                        ErrorClass::Fatal => {
                            return self.fail(fatal_for(code, meaning, action, &info, renewed));
                        }
                        ErrorClass::Retry => (described, FREQUENCY_LIMIT_CODES.contains(&code)),
                    }
                }
                Attempt::Transient {
                    reason,
                    frequency_limited,
                } => (reason, frequency_limited),
            };
            if frequency_limited {
                self.inner
                    .counters
                    .frequency_limited
                    .fetch_add(1, Ordering::Relaxed);
                self.inner.limiter.slow_down();
            }
            match backoff.next() {
                Some(delay) => {
                    self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        "{} attempt {attempts} failed ({reason}); retrying in {} ms",
                        E::NAME,
                        delay.as_millis()
                    );
                    if !self.sleep_until(tokio::time::Instant::now() + delay).await {
                        return Outcome::Stopped;
                    }
                }
                None => {
                    tracing::debug!("{} failed {attempts} times; giving up: {reason}", E::NAME);
                    return Outcome::RetriesExhausted {
                        attempts,
                        last: reason,
                    };
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

    async fn attempt<E: Endpoint>(&self, body: &[u8], sig: &str) -> Attempt<E::Response> {
        let sent = self
            .inner
            .http
            .post(self.url_for::<E>(sig))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Transient {
                    reason: self.transport(e),
                    frequency_limited: false,
                };
            }
        };
        let status = response.status();
        if status.as_u16() == 401 || status.as_u16() == 403 {
            return Attempt::Fatal(Fatal {
                code: None,
                message: format!(
                    "the endpoint refused the call with HTTP {}: check --endpoint/TIMCTL_ENDPOINT and this machine's access to it",
                    status.as_u16()
                ),
            });
        }
        if status.as_u16() == 429 {
            return Attempt::Transient {
                reason: "HTTP 429 (too many requests)".into(),
                frequency_limited: true,
            };
        }
        if status.is_server_error() || status.as_u16() == 408 {
            return Attempt::Transient {
                reason: format!("HTTP {}", status.as_u16()),
                frequency_limited: false,
            };
        }
        if !status.is_success() {
            // 3xx (redirects are not followed) and other 4xx: the URL is wrong for every call.
            return Attempt::Fatal(Fatal {
                code: None,
                message: format!(
                    "the endpoint answered HTTP {} to {}: check --endpoint/TIMCTL_ENDPOINT and app.region",
                    status.as_u16(),
                    E::PATH
                ),
            });
        }
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Transient {
                    reason: self.transport(e),
                    frequency_limited: false,
                };
            }
        };
        let parsed: E::Response = match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(_) => {
                return Attempt::Transient {
                    reason: format!("an unparseable response body ({} bytes)", bytes.len()),
                    frequency_limited: false,
                };
            }
        };
        match E::into_result(parsed) {
            Ok(r) => Attempt::Done(r),
            Err(e) => Attempt::Api {
                code: e.code(),
                class: e.class(),
                meaning: e.meaning(),
                action: e.action(),
                info: e.info().to_owned(),
            },
        }
    }

    /// Describes a transport error without the URL (which carries the UserSig).
    fn transport(&self, e: reqwest::Error) -> String {
        let e = e.without_url();
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
        let mut chain = String::new();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        self.inner.signer.scrub(&format!("{what}{chain}"))
    }
}

/// The apply executor's view of the client: one deletion, its outcome without HTTP.
///
/// `ClearRamble` is always sent, 0 or 1, so the server never has to guess. A call the client
/// did not send because it had stopped (after a fatal answer to another call) comes back as
/// `NotSent`: the executor counts it as not started, and the next run makes it.
impl crate::apply::Deleter for Client {
    async fn delete(&self, d: &crate::apply::Deletion) -> crate::apply::CallOutcome {
        use crate::apply::CallOutcome;
        let request = crate::api::RecentContactDeleteRequest {
            from_account: d.key.from.as_str().to_owned(),
            conversation: d.key.peer.to_api(),
            clear_ramble: Some(d.clear_roaming),
        };
        match self.call::<crate::api::RecentContactDelete>(&request).await {
            Outcome::Success(_) => CallOutcome::Deleted,
            Outcome::AlreadyAbsent { code, .. } => CallOutcome::AlreadyAbsent { code },
            Outcome::ItemFailed { code, message } => CallOutcome::ItemFailed {
                code: Some(code),
                message,
            },
            Outcome::RetriesExhausted { attempts, last } => CallOutcome::ItemFailed {
                code: None,
                message: format!("gave up after {attempts} attempts: {last}"),
            },
            Outcome::Fatal(f) => CallOutcome::Fatal { message: f.message },
            Outcome::Stopped => CallOutcome::NotSent,
        }
    }
}

impl<R> Outcome<R> {
    /// Applies `f` to a success's value; every other outcome stays as it is.
    pub fn map<S>(self, f: impl FnOnce(R) -> S) -> Outcome<S> {
        match self {
            Outcome::Success(r) => Outcome::Success(f(r)),
            Outcome::AlreadyAbsent { code, message } => Outcome::AlreadyAbsent { code, message },
            Outcome::ItemFailed { code, message } => Outcome::ItemFailed { code, message },
            Outcome::Fatal(f) => Outcome::Fatal(f),
            Outcome::RetriesExhausted { attempts, last } => {
                Outcome::RetriesExhausted { attempts, last }
            }
            Outcome::Stopped => Outcome::Stopped,
        }
    }
}

/// "50002 (Incorrect request parameter): the server said …".
fn describe(code: i64, meaning: &str, info: &str) -> String {
    let meaning = meaning.trim_end_matches('.');
    if info.trim().is_empty() {
        format!("{code} ({meaning})")
    } else {
        format!("{code} ({meaning}): the server said {:?}", info.trim())
    }
}

/// One clear, secret-free message for a fatal code: what it means and what to check.
fn fatal_for(code: i64, meaning: &str, action: &str, info: &str, renewed: bool) -> Fatal {
    let meaning = meaning.trim_end_matches('.');
    let todo = if code == USERSIG_EXPIRED {
        if renewed {
            "even a fresh UserSig made by timctl was refused as expired: check this machine's clock"
                .to_owned()
        } else {
            "make a new one (timctl usersig) and set TIMCTL_USERSIG, or set TIMCTL_SECRET_KEY so that timctl makes and renews its own".to_owned()
        }
    } else {
        action.strip_prefix("Stop; ").unwrap_or(action).to_owned()
    };
    let mut message = format!("{meaning} ({code}): {todo}");
    if !message.ends_with('.') {
        message.push('.');
    }
    if !info.trim().is_empty() {
        message.push_str(&format!(" The server said {:?}.", info.trim()));
    }
    Fatal {
        code: Some(code),
        message,
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
    fn base_urls() {
        assert_eq!(
            BaseUrl::for_region(Region::Singapore).as_str(),
            "https://adminapisgp.im.qcloud.com/"
        );
        assert!(
            BaseUrl::parse("http://127.0.0.1:8080")
                .unwrap()
                .is_loopback()
        );
        assert!(BaseUrl::parse("http://[::1]:1/").unwrap().is_loopback());
        assert!(
            BaseUrl::parse("http://localhost/x")
                .unwrap()
                .as_str()
                .ends_with("/x/")
        );
        assert_eq!(
            BaseUrl::parse("http://10.0.0.1"),
            Err(BaseUrlError::PlainHttp("10.0.0.1".into()))
        );
        assert_eq!(
            BaseUrl::parse("http://127.example.com"),
            Err(BaseUrlError::PlainHttp("127.example.com".into()))
        );
        assert_eq!(
            BaseUrl::parse("ftp://127.0.0.1"),
            Err(BaseUrlError::Scheme("ftp".into()))
        );
        assert_eq!(
            BaseUrl::parse("https://u:hunter2@gw.example"),
            Err(BaseUrlError::Credentials)
        );
        assert_eq!(
            BaseUrl::parse("https://gw.example/?usersig=x"),
            Err(BaseUrlError::Query)
        );
        let err = BaseUrl::parse("not a url hunter2").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(BaseUrl::parse("https://gw.example/prefix").is_ok());
        assert_eq!(
            BaseUrl::resolve(Region::China, None).unwrap().as_str(),
            "https://console.tim.qq.com/"
        );
    }

    #[test]
    fn credentials_from_the_environment() {
        use std::collections::HashMap;
        let env = |pairs: &[(&str, &str)]| {
            let m: HashMap<String, OsString> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), OsString::from(v)))
                .collect();
            move |k: &str| m.get(k).cloned()
        };
        assert!(matches!(
            Credentials::from_lookup(env(&[])),
            Err(CredentialsError::Missing)
        ));
        assert!(matches!(
            Credentials::from_lookup(env(&[("TIMCTL_SECRET_KEY", " ")])),
            Err(CredentialsError::Missing)
        ));
        assert!(matches!(
            Credentials::from_lookup(env(&[("TIMCTL_SECRET_KEY", "k"), ("TIMCTL_USERSIG", "s")])),
            Ok(Credentials::SecretKey(_))
        ));
        assert!(
            matches!(Credentials::from_lookup(env(&[("TIMCTL_USERSIG", "s")])), Ok(Credentials::UserSig(s)) if s == "s")
        );
        assert!(matches!(
            Credentials::from_lookup(env(&[
                ("TIMCTL_SECRET_KEY", "k"),
                ("TIMCTL_SECRET_KEY_FILE", "/f")
            ])),
            Err(CredentialsError::BothKeys)
        ));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "from-file\n").unwrap();
        let found =
            Credentials::from_lookup(env(&[("TIMCTL_SECRET_KEY_FILE", file.to_str().unwrap())]))
                .unwrap();
        assert!(matches!(&found, Credentials::SecretKey(k) if k.expose() == "from-file"));
        assert!(!format!("{found:?}").contains("from-file"));
        let missing = dir.path().join("nope");
        let err = Credentials::from_lookup(env(&[(
            "TIMCTL_SECRET_KEY_FILE",
            missing.to_str().unwrap(),
        )]))
        .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn fatal_messages_say_what_to_check() {
        let f = fatal_for(
            70003,
            "The UserSig is invalid.",
            "Stop; check TIMCTL_SECRET_KEY and app.sdkappid.",
            "",
            false,
        );
        assert_eq!(
            f.message,
            "The UserSig is invalid (70003): check TIMCTL_SECRET_KEY and app.sdkappid."
        );
        assert_eq!(f.code, Some(70003));
    }
}
