//! `fake-tim`: a faithful local fake of the Tencent Cloud Chat endpoints
//! `v4/recentcontact/delete` and `v4/recentcontact/get_list`, for end-to-end tests and for
//! people trying timctl locally.
//!
//! It is an independent reading of the endpoint's documentation: requests are parsed as plain
//! JSON with the wire names written out here, never with timctl's generated types, so that a
//! mistake in the spec cannot hide on both sides. (The UserSig check does use
//! `timctl_core::usersig::verify`, which has its own tests against the documented value and
//! Tencent's reference libraries.)
//!
//! What it checks, in order, answering with the documented codes:
//! 1. the path is `/v4/recentcontact/delete` or `/v4/recentcontact/get_list` (else HTTP 404)
//!    and the method POST (else 405);
//! 2. the query string: exactly `sdkappid` (this app: else 70020), `identifier` (must be the
//!    admin: else 50003), `usersig` (verified with the app's key: 70002 empty, 70003 malformed,
//!    70009 wrong key, 70013 other identifier, 70014 other app, 70001 expired), `random` (a u32)
//!    and `contenttype=json`; a missing, repeated or unknown parameter is 60002;
//! 3. the rate: more than `limit_per_second` requests to the same endpoint in the last second
//!    answers 60007 (each endpoint has its own limit, as documented);
//! 4. latency, then injected faults (before the call is processed, so a retried fault never
//!    makes a duplicate deletion);
//! 5. the body: JSON (else 60003). For delete, an object with `From_Account` (string), `Type` 1
//!    with `To_Account` only or `Type` 2 with `ToGroupid` only, optional `ClearRamble` 0 or 1,
//!    and no other key; for get_list, `From_Account` and the five integers `TimeStamp`,
//!    `StartIndex`, `TopTimeStamp`, `TopStartIndex` and `AssistFlags`, all required, and no
//!    other key (else 50002);
//! 6. scripted answers, for both endpoints: "every call fails with X", then per-`From_Account`
//!    codes (50001 makes a user that does not exist); then, for get_list, the user's
//!    [`ListFault`]; else success.
//!
//! Every delete that reaches step 6 is recorded per conversation, and a successful one removes
//! the conversation from the user's list. Every get_list call that reaches step 6 is counted
//! per user, so that tests can check that a client made exactly one pass over each list. The
//! lists and their paging are in [`conversations`].

pub mod bench;
pub mod callbacks;
pub mod conversations;
pub mod measure;
pub mod pg;
pub mod ports;
pub mod run;
pub mod state_list;
mod timctl_bin;
pub use conversations::{Cursors, FakeConversation, FakePeer};
pub use run::{assert_success, succeeds};
pub use timctl_bin::{timctl, timctl_bin};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use timctl_core::usersig::{self, SecretKey, VerifyError};

/// A fault injected before a call is processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer HTTP 200 with this `ErrorCode`.
    Code(i64),
    /// Answer HTTP 502 with an HTML body, as a gateway does.
    Http502,
    /// Answer with this HTTP status and a plain-text body (429, 403, 503, ...).
    Status(u16),
    /// Close the connection without answering.
    Drop,
    /// Answer HTTP 200 with the first half of a JSON body.
    Truncate,
    /// Answer `ActionStatus` `FAIL` with `ErrorCode` 0: not a success, though the code says 0.
    FailWithCodeZero,
}

/// A scripted misbehaviour of one user's get_list answers, after the checks and the random
/// faults: what tests need to see that a client never loops and never takes a bad answer for
/// a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListFault {
    /// Every page says `CompleteFlag` 0, with cursors that keep moving on (past the end, the
    /// index cursor goes up by one a page), so only a page limit stops a client.
    NeverComplete,
    /// Every page answers the cursors it was sent, with `CompleteFlag` 0.
    RepeatCursors,
    /// `ActionStatus` `FAIL` with `ErrorCode` 0.
    FailWithCodeZero,
    /// A success page without `CompleteFlag`.
    NoCompleteFlag,
    /// Every call is answered with this `ErrorCode`.
    Code(i64),
    /// The first page says `CompleteFlag` 0; every later page is answered with this
    /// `ErrorCode` (50001 after page 1: the list is unreadable, not empty).
    CodeAfterFirstPage(i64),
    /// The pages' cursors go round a cycle, A → B → A, each page saying `CompleteFlag` 0: no
    /// page answers the very cursors it was sent, yet paging never ends.
    CursorCycle,
    /// Every get_list call is accepted and never answered (a dead backend behind a live
    /// gateway); only the client's request timeout ends it.
    Silent,
}

/// The endpoints fake-tim serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FakeEndpoint {
    /// `v4/recentcontact/delete`.
    Delete,
    /// `v4/recentcontact/get_list`.
    GetList,
}

impl FakeEndpoint {
    const ALL: [FakeEndpoint; 2] = [FakeEndpoint::Delete, FakeEndpoint::GetList];

    fn index(self) -> usize {
        self as usize
    }

    /// The path, as the documentation spells it.
    pub fn path(self) -> &'static str {
        match self {
            FakeEndpoint::Delete => "/v4/recentcontact/delete",
            FakeEndpoint::GetList => "/v4/recentcontact/get_list",
        }
    }
}

/// How the fake behaves. Change it while running with [`FakeTim::update`].
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// The app's SDKAppID.
    pub sdkappid: u64,
    /// The app admin account: the only `identifier` accepted.
    pub admin: String,
    /// The app's secret key, to verify UserSigs with.
    pub secret_key: String,
    /// Each call waits a uniformly random time in `[min, max]` before it is answered.
    pub latency: (Duration, Duration),
    /// The share of calls (0.0 to 1.0) that get one of `faults`, chosen at random.
    pub fault_rate: f64,
    /// The faults to inject.
    pub faults: Vec<Fault>,
    /// Scripted answers per `From_Account`, for both endpoints, e.g. `50001` for a user that
    /// does not exist.
    pub users: HashMap<String, i64>,
    /// Every call that reaches the end fails with this code.
    pub fail_all: Option<i64>,
    /// Requests allowed to each endpoint in any sliding second before 60007 (the documented
    /// 200).
    pub limit_per_second: u32,
    /// The most conversations in one get_list page (the real size is not documented).
    pub page_size: usize,
    /// Scripted get_list misbehaviour per `From_Account`.
    pub list_faults: HashMap<String, ListFault>,
    /// UserSigs made (their `TLS.time`) before this Unix time are answered 70001, as if they
    /// had expired; tests use it to check renewal.
    pub expire_usersigs_made_before: Option<u64>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            sdkappid: 1400000001,
            admin: "administrator".into(),
            secret_key: "fake-tim-secret-key".into(),
            latency: (Duration::ZERO, Duration::ZERO),
            fault_rate: 0.0,
            faults: Vec::new(),
            users: HashMap::new(),
            fail_all: None,
            limit_per_second: 200,
            page_size: DEFAULT_PAGE_SIZE,
            list_faults: HashMap::new(),
            expire_usersigs_made_before: None,
        }
    }
}

/// One conversation, as the request named it on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationKey {
    /// `From_Account`.
    pub from: String,
    /// `Type`: 1 (one-to-one) or 2 (group).
    pub kind: u8,
    /// `To_Account` (Type 1) or `ToGroupid` (Type 2).
    pub peer: String,
    /// `ClearRamble` as sent: `None` when absent.
    pub clear_ramble: Option<u8>,
}

/// One processed call and the code it was answered with (0 for success).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// The conversation.
    pub key: ConversationKey,
    /// The answer's `ErrorCode`.
    pub code: i64,
}

/// fake-tim's get_list page size unless told otherwise.
pub const DEFAULT_PAGE_SIZE: usize = 50;

/// Counters over the fake's life, for one endpoint or (from [`FakeTim::stats`]) all of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FakeStats {
    /// Every request to the endpoint's path.
    pub requests: u64,
    /// Requests answered 60007 for going over the limit.
    pub frequency_limited: u64,
    /// The most requests to one endpoint that arrived within any one second.
    pub max_in_any_second: u64,
    /// Faults injected.
    pub faults: u64,
    /// Requests refused before processing (bad query, bad UserSig, bad body).
    pub rejected: u64,
}

struct Shared {
    config: Mutex<FakeConfig>,
    /// Per endpoint, in [`FakeEndpoint::index`] order.
    windows: Mutex<[VecDeque<Instant>; 2]>,
    stats: Mutex<[FakeStats; 2]>,
    calls: Mutex<Vec<CallRecord>>,
    lists: Mutex<conversations::Lists>,
    list_calls: Mutex<BTreeMap<String, usize>>,
    /// Where sent messages' callbacks go.
    callback: Mutex<Option<callbacks::CallbackTarget>>,
    /// When each conversation a message brought back (it was absent) came back.
    recreated: Mutex<HashMap<(String, FakePeer), Instant>>,
    /// How long each re-created conversation lived until its deletion, in deletion order.
    lifetimes: Mutex<Vec<Duration>>,
}

/// Closes the connection it belongs to, for [`Fault::Drop`].
#[derive(Clone)]
struct ConnKill(Arc<Notify>);

/// A running fake; it stops when dropped.
pub struct FakeTim {
    url: String,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTim {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakeTim {
    /// Starts on 127.0.0.1 on a free port.
    pub async fn start(config: FakeConfig) -> std::io::Result<FakeTim> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr`.
    pub async fn start_on(config: FakeConfig, addr: SocketAddr) -> std::io::Result<FakeTim> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config: Mutex::new(config),
            windows: Mutex::new([VecDeque::new(), VecDeque::new()]),
            stats: Mutex::new([FakeStats::default(); 2]),
            calls: Mutex::new(Vec::new()),
            lists: Mutex::new(conversations::Lists::default()),
            list_calls: Mutex::new(BTreeMap::new()),
            callback: Mutex::new(None),
            recreated: Mutex::new(HashMap::new()),
            lifetimes: Mutex::new(Vec::new()),
        });
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let kill = Arc::new(Notify::new());
                let svc = hyper_util::service::TowerToHyperService::new(
                    router.clone().layer(Extension(ConnKill(kill.clone()))),
                );
                tokio::spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                    // Dropping the connection future closes the socket without an answer.
                    tokio::select! {
                        _ = conn => {}
                        () = kill.notified() => {}
                    }
                });
            }
        });
        Ok(FakeTim {
            url: format!("http://{local}/"),
            shared,
            accept,
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:41234/`, for `--endpoint`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Changes the behaviour while running.
    pub fn update(&self, f: impl FnOnce(&mut FakeConfig)) {
        f(&mut lock(&self.shared.config));
    }

    /// The counters so far, over both endpoints (`max_in_any_second` is the higher of the two
    /// endpoints', since each has its own limit).
    pub fn stats(&self) -> FakeStats {
        let all = *lock(&self.shared.stats);
        all.iter().fold(FakeStats::default(), |a, s| FakeStats {
            requests: a.requests + s.requests,
            frequency_limited: a.frequency_limited + s.frequency_limited,
            max_in_any_second: a.max_in_any_second.max(s.max_in_any_second),
            faults: a.faults + s.faults,
            rejected: a.rejected + s.rejected,
        })
    }

    /// The counters so far for one endpoint.
    pub fn stats_for(&self, endpoint: FakeEndpoint) -> FakeStats {
        lock(&self.shared.stats)[endpoint.index()]
    }

    /// Puts `peers` in `user`'s conversation list, each with a new message (newer than any
    /// before, in the order given); `pinned` pins them.
    pub fn seed_conversations(
        &self,
        user: &str,
        peers: impl IntoIterator<Item = FakePeer>,
        pinned: bool,
    ) {
        let mut lists = lock(&self.shared.lists);
        for peer in peers {
            lists.message(user, peer, pinned);
        }
    }

    /// A new message in `user`'s conversation with `peer`: it comes back to `user`'s list if
    /// it was deleted (unpinned), or moves to the newest end. Only `user`'s list changes (a
    /// real message would touch the other side's too; tests name each list they change).
    pub fn send_message(&self, user: &str, peer: FakePeer) {
        lock(&self.shared.lists).message(user, peer, false);
    }

    /// Posts the callbacks of messages sent from now on to `target`.
    pub fn callbacks_to(&self, target: callbacks::CallbackTarget) {
        *lock(&self.shared.callback) = Some(target);
    }

    /// A new message in `user`'s list with `peer`, noting when it brought the conversation
    /// back (it was absent), for [`FakeTim::lifetimes`].
    fn message_noting_return(&self, user: &str, peer: FakePeer) {
        let mut lists = lock(&self.shared.lists);
        let was_there = lists.list(user).iter().any(|c| c.peer == peer);
        lists.message(user, peer.clone(), false);
        if !was_there {
            lock(&self.shared.recreated).insert((user.to_owned(), peer), Instant::now());
        }
    }

    /// A one-to-one message from `from` to `to`, as Tencent handles one: the conversation is
    /// (back) in both users' lists, then the `C2C.CallbackAfterSendMsg` callback is posted to
    /// the target set with [`FakeTim::callbacks_to`] (its answer returned; `None` without a
    /// target). `seq` becomes the message's MsgSeq and MsgKey.
    pub async fn send_one_to_one(
        &self,
        from: &str,
        to: &str,
        seq: u64,
    ) -> Option<std::io::Result<callbacks::CallbackAnswer>> {
        self.message_noting_return(from, FakePeer::user(to));
        self.message_noting_return(to, FakePeer::user(from));
        let target = lock(&self.shared.callback).clone()?;
        let body = callbacks::one_to_one_body(from, to, seq);
        Some(target.post("C2C.CallbackAfterSendMsg", &body).await)
    }

    /// A message from `from` in `group` whose members are `members`: the group's conversation
    /// is (back) in every member's list, then `Group.CallbackAfterSendMsg` is posted.
    pub async fn send_group(
        &self,
        from: &str,
        group: &str,
        members: &[&str],
        seq: u64,
    ) -> Option<std::io::Result<callbacks::CallbackAnswer>> {
        for member in members {
            self.message_noting_return(member, FakePeer::group(group));
        }
        let target = lock(&self.shared.callback).clone()?;
        let body = callbacks::group_body(from, group, seq);
        Some(target.post("Group.CallbackAfterSendMsg", &body).await)
    }

    /// How long each conversation a message brought back lived until it was deleted, by
    /// fake-tim's clock, in the order of the deletions.
    pub fn lifetimes(&self) -> Vec<Duration> {
        lock(&self.shared.lifetimes).clone()
    }

    /// `user`'s conversation list, oldest message first.
    pub fn conversations(&self, user: &str) -> Vec<FakeConversation> {
        lock(&self.shared.lists).list(user)
    }

    /// How many get_list calls reached the list of each user (whatever the answer; injected
    /// faults and refused requests are not counted).
    pub fn get_list_calls(&self) -> BTreeMap<String, usize> {
        lock(&self.shared.list_calls).clone()
    }

    /// How many pages one full pass over `user`'s list takes now (AssistFlags with bit 0, as
    /// timctl sends): with [`FakeTim::get_list_calls`], "exactly one pass".
    pub fn pages_for(&self, user: &str) -> usize {
        let page_size = lock(&self.shared.config).page_size;
        lock(&self.shared.lists).pages(user, true, page_size)
    }

    /// Every processed call, in arrival order.
    pub fn calls(&self) -> Vec<CallRecord> {
        lock(&self.shared.calls).clone()
    }

    /// How many processed calls each conversation got (whatever the answer).
    pub fn calls_per_conversation(&self) -> BTreeMap<ConversationKey, usize> {
        let mut m = BTreeMap::new();
        for c in lock(&self.shared.calls).iter() {
            *m.entry(c.key.clone()).or_insert(0) += 1;
        }
        m
    }

    /// How many successful deletions each conversation got.
    pub fn deletions(&self) -> BTreeMap<ConversationKey, usize> {
        let mut m = BTreeMap::new();
        for c in lock(&self.shared.calls).iter().filter(|c| c.code == 0) {
            *m.entry(c.key.clone()).or_insert(0) += 1;
        }
        m
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn answer(code: i64, info: &str) -> Response {
    let body = serde_json::json!({
        "ActionStatus": if code == 0 { "OK" } else { "FAIL" },
        "ErrorCode": code,
        "ErrorInfo": info,
        "ErrorDisplay": "",
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn json(body: &serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Extension(kill): Extension<ConnKill>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let Some(endpoint) = FakeEndpoint::ALL
        .into_iter()
        .find(|e| e.path() == uri.path())
    else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    if method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, "use POST").into_response();
    }
    let slot = endpoint.index();
    let now = Instant::now();
    let in_window = {
        let mut windows = lock(&shared.windows);
        let w = &mut windows[slot];
        while w
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            w.pop_front();
        }
        w.push_back(now);
        w.len() as u64
    };
    let config = lock(&shared.config).clone();
    {
        let s = &mut lock(&shared.stats)[slot];
        s.requests += 1;
        s.max_in_any_second = s.max_in_any_second.max(in_window);
    }
    let reject = |code: i64, info: &str| {
        lock(&shared.stats)[slot].rejected += 1;
        answer(code, info)
    };
    if let Err((code, info)) = check_query(&config, uri.query().unwrap_or("")) {
        return reject(code, &info);
    }
    if in_window > u64::from(config.limit_per_second) {
        lock(&shared.stats)[slot].frequency_limited += 1;
        return answer(60007, "REST API call frequency exceeds the limit");
    }
    let (lo, hi) = config.latency;
    if hi > Duration::ZERO {
        let ms = rand::random_range(lo.as_micros()..=hi.as_micros().max(lo.as_micros()));
        tokio::time::sleep(Duration::from_micros(ms as u64)).await;
    }
    if !config.faults.is_empty() && rand::random_bool(config.fault_rate.clamp(0.0, 1.0)) {
        lock(&shared.stats)[slot].faults += 1;
        let fault = config.faults[rand::random_range(0..config.faults.len())];
        match fault {
            Fault::Code(code) => return answer(code, "injected fault"),
            Fault::Http502 => {
                return (
                    StatusCode::BAD_GATEWAY,
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html><body><h1>502 Bad Gateway</h1></body></html>",
                )
                    .into_response();
            }
            Fault::Status(code) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return (status, "injected status").into_response();
            }
            Fault::Truncate => {
                let full = serde_json::json!({"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","ErrorDisplay":""}).to_string();
                return (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    full[..full.len() / 2].to_owned(),
                )
                    .into_response();
            }
            Fault::FailWithCodeZero => {
                return json(&serde_json::json!({
                    "ActionStatus": "FAIL", "ErrorCode": 0, "ErrorInfo": "injected FAIL with code 0",
                    "ErrorDisplay": "",
                }));
            }
            Fault::Drop => {
                kill.0.notify_one();
                return std::future::pending().await;
            }
        }
    }
    match endpoint {
        FakeEndpoint::Delete => {
            let key = match check_body(&body) {
                Ok(k) => k,
                Err((code, info)) => return reject(code, &info),
            };
            let code = config
                .fail_all
                .or_else(|| config.users.get(&key.from).copied())
                .unwrap_or(0);
            if code == 0 {
                let peer = match key.kind {
                    1 => FakePeer::user(&key.peer),
                    _ => FakePeer::group(&key.peer),
                };
                let removed = lock(&shared.lists).remove(&key.from, &peer);
                if removed
                    && let Some(came_back) =
                        lock(&shared.recreated).remove(&(key.from.clone(), peer))
                {
                    lock(&shared.lifetimes).push(came_back.elapsed());
                }
            }
            lock(&shared.calls).push(CallRecord { key, code });
            match code {
                0 => answer(0, ""),
                c => answer(c, "scripted answer"),
            }
        }
        FakeEndpoint::GetList => {
            let request = match check_list_body(&body) {
                Ok(r) => r,
                Err((code, info)) => return reject(code, &info),
            };
            *lock(&shared.list_calls)
                .entry(request.from.clone())
                .or_insert(0) += 1;
            if config.list_faults.get(&request.from) == Some(&ListFault::Silent) {
                return std::future::pending().await;
            }
            list_answer(&shared, &config, &request)
        }
    }
}

/// A get_list request, by the documented wire names.
#[derive(Debug, PartialEq, Eq)]
struct ListRequest {
    from: String,
    cursors: Cursors,
    assist_flags: i64,
}

/// The answer to a checked get_list request: scripted codes and faults, else the page.
fn list_answer(shared: &Shared, config: &FakeConfig, request: &ListRequest) -> Response {
    let scripted = config
        .fail_all
        .or_else(|| config.users.get(&request.from).copied());
    if let Some(code) = scripted.filter(|&c| c != 0) {
        return answer(code, "scripted answer");
    }
    let fault = config.list_faults.get(&request.from).copied();
    match fault {
        Some(ListFault::Code(code)) => return answer(code, "scripted list failure"),
        Some(ListFault::FailWithCodeZero) => {
            return json(&serde_json::json!({
                "ActionStatus": "FAIL", "ErrorCode": 0, "ErrorInfo": "scripted FAIL with code 0",
                "ErrorDisplay": "",
            }));
        }
        _ => {}
    }
    let include_pinned = request.assist_flags & 1 == 1;
    let page = lock(&shared.lists).page(
        &request.from,
        request.cursors,
        include_pinned,
        config.page_size,
    );
    let (mut next, mut complete) = (page.next, page.complete);
    let first = request.cursors == Cursors::default();
    // The cycle's two cursors: the first page answers A, A answers B, B answers A.
    let cycle_a = Cursors {
        time_stamp: 1,
        start_index: 1,
        ..Cursors::default()
    };
    let cycle_b = Cursors {
        start_index: 2,
        ..cycle_a
    };
    match fault {
        Some(ListFault::CodeAfterFirstPage(code)) if !first => {
            return answer(code, "scripted list failure after the first page");
        }
        Some(ListFault::CodeAfterFirstPage(_)) => {
            if next == request.cursors {
                next.start_index += 1;
            }
            complete = false;
        }
        Some(ListFault::CursorCycle) => {
            next = if request.cursors == cycle_a {
                cycle_b
            } else {
                cycle_a
            };
            complete = false;
        }
        Some(ListFault::NeverComplete) => {
            if next == request.cursors {
                next.start_index += 1;
            }
            complete = false;
        }
        Some(ListFault::RepeatCursors) => {
            next = request.cursors;
            complete = false;
        }
        _ => {}
    }
    let items: Vec<serde_json::Value> = page
        .items
        .iter()
        .map(|c| {
            let mut item = serde_json::json!({
                "Type": c.peer.kind(),
                "MsgTime": c.msg_time,
                "TopFlag": u8::from(c.pinned),
            });
            let key = match c.peer {
                FakePeer::User(_) => "To_Account",
                FakePeer::Group(_) => "GroupId",
            };
            item[key] = c.peer.id().into();
            item
        })
        .collect();
    let mut body = serde_json::json!({
        "ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "ErrorDisplay": "",
        "SessionItem": items,
        "CompleteFlag": u8::from(complete),
        "TimeStamp": next.time_stamp, "StartIndex": next.start_index,
        "TopTimeStamp": next.top_time_stamp, "TopStartIndex": next.top_start_index,
    });
    if fault == Some(ListFault::NoCompleteFlag) {
        body.as_object_mut().map(|o| o.remove("CompleteFlag"));
    }
    json(&body)
}

/// The query string, by the documented wire names.
fn check_query(config: &FakeConfig, query: &str) -> Result<(), (i64, String)> {
    let mut params: HashMap<String, String> = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if !["sdkappid", "identifier", "usersig", "random", "contenttype"].contains(&&*k) {
            return Err((60002, format!("unknown query parameter {k}")));
        }
        if params.insert(k.to_string(), v.to_string()).is_some() {
            return Err((60002, format!("query parameter {k} repeated")));
        }
    }
    let get = |k: &str| params.get(k).map(String::as_str);
    let sdkappid = get("sdkappid").ok_or((60012, "sdkappid missing".to_owned()))?;
    let sdkappid: u64 = sdkappid
        .parse()
        .map_err(|_| (60006, "sdkappid is not a number".to_owned()))?;
    if sdkappid != config.sdkappid {
        return Err((70020, "SDKAppID not found".into()));
    }
    match get("random").map(str::parse::<u32>) {
        Some(Ok(_)) => {}
        _ => return Err((60002, "random must be a 32-bit unsigned integer".into())),
    }
    if get("contenttype") != Some("json") {
        return Err((60002, "contenttype must be json".into()));
    }
    let identifier = get("identifier").ok_or((60002, "identifier missing".to_owned()))?;
    let sig = get("usersig").unwrap_or("");
    if sig.is_empty() {
        return Err((70002, "usersig is empty".into()));
    }
    let key = SecretKey::new(config.secret_key.clone()).ok_or((70016, "no key".to_owned()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match usersig::verify(sig, &key, sdkappid, identifier, now) {
        Ok(v) => {
            if config
                .expire_usersigs_made_before
                .is_some_and(|t| v.time < t)
            {
                return Err((70001, "usersig expired".into()));
            }
        }
        Err(e) => {
            let code = match e {
                VerifyError::Malformed(_) => 70003,
                VerifyError::BadSignature => 70009,
                VerifyError::OtherIdentifier { .. } => 70013,
                VerifyError::OtherApp { .. } => 70014,
                VerifyError::Expired { .. } => 70001,
            };
            return Err((code, e.reason().to_owned()));
        }
    }
    if identifier != config.admin {
        return Err((50003, "the request requires app admin permissions".into()));
    }
    Ok(())
}

/// The body, by the documented wire names.
fn check_body(body: &[u8]) -> Result<ConversationKey, (i64, String)> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| (60003, "request body is not JSON".to_owned()))?;
    let obj = v
        .as_object()
        .ok_or((50002, "request body is not a JSON object".to_owned()))?;
    let bad = |s: &str| (50002, s.to_owned());
    for k in obj.keys() {
        if ![
            "From_Account",
            "Type",
            "To_Account",
            "ToGroupid",
            "ClearRamble",
        ]
        .contains(&k.as_str())
        {
            return Err(bad(&format!("unknown field {k}")));
        }
    }
    let from = obj
        .get("From_Account")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or(bad("From_Account must be a non-empty string"))?;
    let (kind, peer) = match obj.get("Type").and_then(|v| v.as_i64()) {
        Some(1) => {
            if obj.contains_key("ToGroupid") {
                return Err(bad("Type 1 takes To_Account, not ToGroupid"));
            }
            let to = obj
                .get("To_Account")
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty());
            (1, to.ok_or(bad("Type 1 needs To_Account"))?)
        }
        Some(2) => {
            if obj.contains_key("To_Account") {
                return Err(bad("Type 2 takes ToGroupid, not To_Account"));
            }
            let to = obj
                .get("ToGroupid")
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty());
            (2, to.ok_or(bad("Type 2 needs ToGroupid"))?)
        }
        _ => return Err(bad("Type must be 1 or 2")),
    };
    let clear_ramble = match obj.get("ClearRamble") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(0) => Some(0),
            Some(1) => Some(1),
            _ => return Err(bad("ClearRamble must be 0 or 1")),
        },
    };
    Ok(ConversationKey {
        from: from.to_owned(),
        kind,
        peer: peer.to_owned(),
        clear_ramble,
    })
}

/// A get_list body, by the documented wire names: every field required, nothing else.
fn check_list_body(body: &[u8]) -> Result<ListRequest, (i64, String)> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| (60003, "request body is not JSON".to_owned()))?;
    let obj = v
        .as_object()
        .ok_or((50002, "request body is not a JSON object".to_owned()))?;
    let bad = |s: String| (50002, s);
    const INTEGERS: [&str; 5] = [
        "TimeStamp",
        "StartIndex",
        "TopTimeStamp",
        "TopStartIndex",
        "AssistFlags",
    ];
    for k in obj.keys() {
        if k != "From_Account" && !INTEGERS.contains(&k.as_str()) {
            return Err(bad(format!("unknown field {k}")));
        }
    }
    let from = obj
        .get("From_Account")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or(bad("From_Account must be a non-empty string".into()))?;
    let mut n = [0i64; 5];
    for (slot, key) in n.iter_mut().zip(INTEGERS) {
        *slot = obj
            .get(key)
            .and_then(|v| v.as_i64())
            .filter(|&v| v >= 0)
            .ok_or(bad(format!("{key} must be a non-negative integer")))?;
    }
    Ok(ListRequest {
        from: from.to_owned(),
        cursors: Cursors {
            time_stamp: n[0],
            start_index: n[1],
            top_time_stamp: n[2],
            top_start_index: n[3],
        },
        assist_flags: n[4],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_body_checks() {
        let ok = check_list_body(br#"{"From_Account":"a","TimeStamp":5,"StartIndex":1,"TopTimeStamp":0,"TopStartIndex":0,"AssistFlags":63}"#).unwrap();
        assert_eq!(
            (
                ok.cursors.time_stamp,
                ok.cursors.start_index,
                ok.assist_flags
            ),
            (5, 1, 63)
        );
        for bad in [
            &br#"{"From_Account":"a","TimeStamp":0,"StartIndex":0,"TopTimeStamp":0,"TopStartIndex":0}"#[..],
            br#"{"From_Account":"","TimeStamp":0,"StartIndex":0,"TopTimeStamp":0,"TopStartIndex":0,"AssistFlags":63}"#,
            br#"{"From_Account":"a","TimeStamp":"0","StartIndex":0,"TopTimeStamp":0,"TopStartIndex":0,"AssistFlags":63}"#,
            br#"{"From_Account":"a","TimeStamp":-1,"StartIndex":0,"TopTimeStamp":0,"TopStartIndex":0,"AssistFlags":63}"#,
            br#"{"From_Account":"a","TimeStamp":0,"StartIndex":0,"TopTimeStamp":0,"TopStartIndex":0,"AssistFlags":63,"X":1}"#,
        ] {
            assert_eq!(check_list_body(bad).unwrap_err().0, 50002, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn body_checks() {
        let ok = check_body(br#"{"From_Account":"a","Type":1,"To_Account":"b","ClearRamble":1}"#)
            .unwrap();
        assert_eq!(
            (ok.kind, ok.peer.as_str(), ok.clear_ramble),
            (1, "b", Some(1))
        );
        let ok = check_body(br#"{"From_Account":"a","Type":2,"ToGroupid":"@TGS#x"}"#).unwrap();
        assert_eq!((ok.kind, ok.clear_ramble), (2, None));
        for bad in [
            &br#"{"From_Account":"a","Type":1,"ToGroupid":"b"}"#[..],
            br#"{"From_Account":"a","Type":2,"To_Account":"b"}"#,
            br#"{"From_Account":"a","Type":1,"To_Account":"b","ToGroupid":"c"}"#,
            br#"{"From_Account":"a","Type":3,"To_Account":"b"}"#,
            br#"{"From_Account":"a","Type":1,"To_Account":"b","ClearRamble":true}"#,
            br#"{"From_Account":"a","Type":1,"To_Account":"b","ClearRamble":2}"#,
            br#"{"Type":1,"To_Account":"b"}"#,
            br#"{"From_Account":"a","Type":1,"To_Account":"b","Extra":1}"#,
            br#"[]"#,
        ] {
            assert_eq!(
                check_body(bad).unwrap_err().0,
                50002,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(check_body(b"{").unwrap_err().0, 60003);
    }
}
