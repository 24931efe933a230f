//! fake-tim's side of Tencent's message callbacks: when a test sends a message, fake-tim puts
//! the conversation back in the lists a real message would and posts the documented "after
//! send" callback to a configured URL, signed with a configured token, the way the console's
//! callback configuration makes Tencent do
//! (<https://www.tencentcloud.com/document/product/1047/34354>,
//! <https://www.tencentcloud.com/document/product/1047/34365>,
//! <https://www.tencentcloud.com/document/product/1047/34375>).
//!
//! The request is written by hand on a plain TCP connection, so that tests can also send what
//! no client library would (a forged Sign, a 2 MB body, a body that is not JSON).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use timctl_core::callback::CallbackToken;

/// Where fake-tim posts callbacks, and how it signs them.
#[derive(Clone, Debug)]
pub struct CallbackTarget {
    /// `host:port` of the receiver (serve's `--listen`).
    pub addr: String,
    /// The path, `/callback`.
    pub path: String,
    /// The token set in the console; `None` sends no `Sign` or `RequestTime`.
    pub token: Option<String>,
    /// The app's SDKAppID as the `SdkAppid` parameter says it.
    pub sdkappid: u64,
}

/// What the receiver answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: String,
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The documented query string of a callback for `command`, signed with `token` at
/// `request_time` (no `Sign`/`RequestTime` without a token).
pub fn callback_query(
    sdkappid: u64,
    command: &str,
    token: Option<&str>,
    request_time: i64,
) -> String {
    let mut q = format!(
        "SdkAppid={sdkappid}&CallbackCommand={command}&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI"
    );
    if let Some(token) = token.and_then(CallbackToken::new) {
        let time = request_time.to_string();
        q.push_str(&format!("&Sign={}&RequestTime={time}", token.sign(&time)));
    }
    q
}

/// The documented body of `C2C.CallbackAfterSendMsg` for a message from `from` to `to`.
pub fn one_to_one_body(from: &str, to: &str, seq: u64) -> String {
    let now = unix_now();
    serde_json::json!({
        "CallbackCommand": "C2C.CallbackAfterSendMsg",
        "From_Account": from,
        "To_Account": to,
        "MsgSeq": seq,
        "MsgRandom": 2_837_546,
        "MsgTime": now,
        "MsgKey": format!("{seq}_2837546_{now}"),
        "MsgId": format!("144115233406643804-{now}-{seq}"),
        "OnlineOnlyFlag": 0,
        "SendMsgResult": 0,
        "ErrorInfo": "send msg succeed",
        "UnreadMsgNum": 1,
        "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "hello"}}],
        "CloudCustomData": "",
        "EventTime": now * 1000,
    })
    .to_string()
}

/// The documented body of `Group.CallbackAfterSendMsg` for a message from `from` in `group`
/// (`EventTime` as a decimal string, as one version of the documentation shows it).
pub fn group_body(from: &str, group: &str, seq: u64) -> String {
    let now = unix_now();
    serde_json::json!({
        "CallbackCommand": "Group.CallbackAfterSendMsg",
        "GroupId": group,
        "Type": "Public",
        "From_Account": from,
        "Operator_Account": "",
        "Random": 123_456,
        "MsgSeq": seq,
        "MsgTime": now,
        "OnlineOnlyFlag": 0,
        "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "hello"}}],
        "CloudCustomData": "",
        "EventTime": (now * 1000).to_string(),
    })
    .to_string()
}

/// Posts `body` to `addr` + `path_and_query` over a new connection, with `extra_headers`
/// (`Name: value` lines) and a `Content-Length` of `content_length` (the body's length when
/// `None`), and reads the answer. A receiver that closes without answering is `status` 0.
pub async fn post_raw(
    addr: &str,
    path_and_query: &str,
    body: &[u8],
    content_length: Option<usize>,
) -> std::io::Result<CallbackAnswer> {
    let mut stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connecting timed out"))??;
    let head = format!(
        "POST {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        content_length.unwrap_or(body.len())
    );
    stream.write_all(head.as_bytes()).await?;
    // A receiver may answer (413) and close before the body is all sent: that is an answer.
    let _ = stream.write_all(body).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok(CallbackAnswer { status, body })
}

impl CallbackTarget {
    /// Posts a signed callback for `command` with `body`, as Tencent would now.
    pub async fn post(&self, command: &str, body: &str) -> std::io::Result<CallbackAnswer> {
        let query = callback_query(self.sdkappid, command, self.token.as_deref(), unix_now());
        post_raw(
            &self.addr,
            &format!("{}?{query}", self.path),
            body.as_bytes(),
            None,
        )
        .await
    }
}

/// `GET path` on `addr`, for the ops listener; the status and body.
pub async fn get(addr: &str, path: &str) -> std::io::Result<CallbackAnswer> {
    let mut stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connecting timed out"))??;
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("reading timed out"))??;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // The ops listener may answer chunked: join the chunks.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(CallbackAnswer { status, body })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
