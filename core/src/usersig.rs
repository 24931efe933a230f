//! UserSig (TLSSigAPIv2): made from the app's secret key, and verified.
//!
//! A UserSig is a small signed JSON document: the signed content is
//!
//! ```text
//! TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{unix}\nTLS.expire:{secs}\n
//! ```
//!
//! and `TLS.sig` is the standard base64 of HMAC-SHA256 over it, keyed by the secret key's UTF-8
//! bytes. The JSON document is zlib-compressed, base64-encoded and made URL-safe by mapping
//! `+`→`*`, `/`→`-`, `=`→`_`.
//!
//! Tencent's reference libraries differ in JSON key order and compression level, so two valid
//! UserSigs for the same inputs need not be equal strings; [`verify`] therefore checks the
//! decoded fields and the HMAC, never the string.

use std::fmt;
use std::io::Read as _;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Base64 that accepts input with or without padding, because the URL-safe mapping turns `=`
/// into `_` and some tools strip it.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A decompressed UserSig document larger than this is not a UserSig; the limit keeps a
/// hostile `--verify` argument from inflating into gigabytes.
const MAX_DOCUMENT_BYTES: u64 = 16 * 1024;

/// The app's secret key. It never prints: `Debug` and `Display` show `[redacted]`, so a key
/// that ends up in a log line or an error by mistake still does not leak.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl SecretKey {
    /// Wraps a key. Surrounding whitespace (a trailing newline from a key file) is dropped.
    /// Returns `None` for an empty key, which could only ever make UserSigs the server rejects.
    pub fn new(key: impl Into<String>) -> Option<Self> {
        let key = key.into();
        let trimmed = key.trim();
        if trimmed.is_empty() {
            None
        } else {
            Some(SecretKey(trimmed.to_owned()))
        }
    }

    /// The key itself, for signing and for scrubbing it out of text. Deliberately not `Display`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The signed content, exactly as the reference libraries build it (each line ends in `\n`).
fn content(
    identifier: &str,
    sdkappid: &str,
    time: &str,
    expire: &str,
    userbuf: Option<&str>,
) -> String {
    let mut s = format!(
        "TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n"
    );
    if let Some(buf) = userbuf {
        s.push_str("TLS.userbuf:");
        s.push_str(buf);
        s.push('\n');
    }
    s
}

fn mac(key: &SecretKey, content: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(content.as_bytes());
    mac
}

/// The base64 `TLS.sig` field for these inputs.
pub fn signature(
    sdkappid: u64,
    identifier: &str,
    key: &SecretKey,
    now: u64,
    expire: u64,
) -> String {
    let content = content(
        identifier,
        &sdkappid.to_string(),
        &now.to_string(),
        &expire.to_string(),
        None,
    );
    STANDARD.encode(mac(key, &content).finalize().into_bytes())
}

/// Makes a UserSig for `identifier` in app `sdkappid`, issued at `now` (Unix seconds) and valid
/// for `expire` seconds.
pub fn make(sdkappid: u64, identifier: &str, key: &SecretKey, now: u64, expire: u64) -> String {
    let sig = signature(sdkappid, identifier, key, now, expire);
    // Key order as in Tencent's documentation; serde_json's `json!` would sort the keys.
    let doc = format!(
        "{{\"TLS.ver\":\"2.0\",\"TLS.identifier\":{},\"TLS.sdkappid\":{sdkappid},\"TLS.expire\":{expire},\"TLS.time\":{now},\"TLS.sig\":{}}}",
        serde_json::Value::from(identifier),
        serde_json::Value::from(sig),
    );
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, doc.as_bytes())
        .unwrap_or_else(|_| unreachable!("writing to a Vec cannot fail"));
    let compressed = z
        .finish()
        .unwrap_or_else(|_| unreachable!("writing to a Vec cannot fail"));
    STANDARD
        .encode(compressed)
        .chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

/// What a valid UserSig says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The app it was made for.
    pub sdkappid: u64,
    /// The account it was made for.
    pub identifier: String,
    /// When it was made (Unix seconds).
    pub time: u64,
    /// Its lifetime in seconds.
    pub expire: u64,
}

impl Verified {
    /// When it stops being valid (Unix seconds).
    pub fn expires_at(&self) -> u64 {
        self.time.saturating_add(self.expire)
    }
}

/// Why a UserSig does not verify. The messages never contain the UserSig or the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum VerifyError {
    /// Not a UserSig at all: bad encoding, compression, JSON or a missing field.
    #[error("malformed UserSig: {0}")]
    #[diagnostic(
        code(timctl::usersig::malformed),
        help("check that the whole UserSig was copied, with no quotes or line breaks")
    )]
    Malformed(String),
    /// The HMAC does not match: made with another key, or altered after signing.
    #[error(
        "the signature does not match: the UserSig was made with another secret key, or altered"
    )]
    #[diagnostic(
        code(timctl::usersig::bad_signature),
        help("check TIMCTL_SECRET_KEY against the app's key in the Chat console")
    )]
    BadSignature,
    /// Made for another account.
    #[error("the UserSig was made for identifier {found:?}, not {expected:?}")]
    #[diagnostic(
        code(timctl::usersig::other_identifier),
        help("make one for the app admin (app.admin, or --identifier) with `timctl usersig`")
    )]
    OtherIdentifier {
        /// The identifier asked for.
        expected: String,
        /// The identifier in the UserSig.
        found: String,
    },
    /// Made for another app.
    #[error("the UserSig was made for SDKAppID {found}, not {expected}")]
    #[diagnostic(
        code(timctl::usersig::other_app),
        help("check app.sdkappid (or --sdkappid) and which app's key made the UserSig")
    )]
    OtherApp {
        /// The SDKAppID asked for.
        expected: u64,
        /// The SDKAppID in the UserSig.
        found: u64,
    },
    /// Valid once, no longer.
    #[error("the UserSig expired at Unix time {expired_at} ({ago} s ago)")]
    #[diagnostic(
        code(timctl::usersig::expired),
        help(
            "make a new one with `timctl usersig`, or set TIMCTL_SECRET_KEY so that timctl makes and renews its own"
        )
    )]
    Expired {
        /// When it expired (Unix seconds).
        expired_at: u64,
        /// How long ago, in seconds.
        ago: u64,
    },
}

impl VerifyError {
    /// A short, stable name for the reason: `malformed`, `bad_signature`, `other_identifier`,
    /// `other_app` or `expired`.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::Malformed(_) => "malformed",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::OtherIdentifier { .. } => "other_identifier",
            VerifyError::OtherApp { .. } => "other_app",
            VerifyError::Expired { .. } => "expired",
        }
    }
}

/// A number field as the reference libraries write it: a JSON number, or (leniently) a string
/// of digits. Returns the decimal text the HMAC covers and its value.
fn number_field(doc: &serde_json::Value, name: &str) -> Result<(String, u64), VerifyError> {
    match doc.get(name) {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .map(|v| (v.to_string(), v))
            .ok_or_else(|| VerifyError::Malformed(format!("{name} is not a whole number"))),
        Some(serde_json::Value::String(s)) => s
            .parse::<u64>()
            .map(|v| (s.clone(), v))
            .map_err(|_| VerifyError::Malformed(format!("{name} is not a whole number"))),
        Some(_) => Err(VerifyError::Malformed(format!("{name} is not a number"))),
        None => Err(VerifyError::Malformed(format!("{name} is missing"))),
    }
}

fn string_field<'a>(doc: &'a serde_json::Value, name: &str) -> Result<&'a str, VerifyError> {
    match doc.get(name) {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(_) => Err(VerifyError::Malformed(format!("{name} is not a string"))),
        None => Err(VerifyError::Malformed(format!("{name} is missing"))),
    }
}

/// The URL-safe mapping of UserSigs (`+`→`*`, `/`→`-`, `=`→`_`), to undo.
const USERSIG_ALPHABET: [(char, char); 3] = [('*', '+'), ('-', '/'), ('_', '=')];

/// RFC 4648 base64url (`-` for `+`, `_` for `/`), in case a gateway re-encodes a UserSig.
const BASE64URL_ALPHABET: [(char, char); 2] = [('-', '+'), ('_', '/')];

/// Undoes the URL-safe mapping, base64 and zlib: the UserSig's JSON document.
fn decode_document(sig: &str, alphabet: &[(char, char)]) -> Result<serde_json::Value, VerifyError> {
    let b64: String = sig
        .trim()
        .chars()
        .map(|c| {
            alphabet
                .iter()
                .find(|(from, _)| *from == c)
                .map_or(c, |(_, to)| *to)
        })
        .collect();
    let compressed = LENIENT
        .decode(b64.as_bytes())
        .map_err(|_| VerifyError::Malformed("not base64 in the UserSig alphabet".into()))?;
    let mut doc = Vec::new();
    flate2::read::ZlibDecoder::new(compressed.as_slice())
        .take(MAX_DOCUMENT_BYTES)
        .read_to_end(&mut doc)
        .map_err(|_| VerifyError::Malformed("not zlib-compressed data".into()))?;
    let doc: serde_json::Value = serde_json::from_slice(&doc)
        .map_err(|_| VerifyError::Malformed("the decompressed document is not JSON".into()))?;
    if !doc.is_object() {
        return Err(VerifyError::Malformed(
            "the decompressed document is not a JSON object".into(),
        ));
    }
    Ok(doc)
}

/// Whether `text` decodes (in the UserSig alphabet or in base64url) to a UserSig document: a
/// JSON object with a `TLS.sig`. Used to redact UserSigs the client did not make itself, in
/// whatever form a gateway echoes them.
pub fn is_usersig(text: &str) -> bool {
    [&USERSIG_ALPHABET[..], &BASE64URL_ALPHABET[..]]
        .into_iter()
        .any(|alphabet| {
            decode_document(text, alphabet).is_ok_and(|doc| doc.get("TLS.sig").is_some())
        })
}

/// Checks a UserSig: that it decodes, was made for `identifier` in app `sdkappid`, carries a
/// valid HMAC under `key`, and has not expired at `now` (Unix seconds).
///
/// Identity is checked before the HMAC, so a genuine UserSig for another account or app says
/// so rather than "bad signature"; the HMAC is checked before expiry, so a forged UserSig is
/// never reported as merely expired. A UserSig is valid up to and including `time + expire`.
pub fn verify(
    sig: &str,
    key: &SecretKey,
    sdkappid: u64,
    identifier: &str,
    now: u64,
) -> Result<Verified, VerifyError> {
    let doc = decode_document(sig, &USERSIG_ALPHABET)?;
    let found_identifier = string_field(&doc, "TLS.identifier")?;
    let (app_text, found_app) = number_field(&doc, "TLS.sdkappid")?;
    let (time_text, time) = number_field(&doc, "TLS.time")?;
    let (expire_text, expire) = number_field(&doc, "TLS.expire")?;
    let sig_b64 = string_field(&doc, "TLS.sig")?;
    let userbuf = match doc.get("TLS.userbuf") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(VerifyError::Malformed("TLS.userbuf is not a string".into())),
    };
    let mac_bytes = LENIENT
        .decode(sig_b64.as_bytes())
        .map_err(|_| VerifyError::Malformed("TLS.sig is not base64".into()))?;

    if found_identifier != identifier {
        return Err(VerifyError::OtherIdentifier {
            expected: identifier.to_owned(),
            found: found_identifier.to_owned(),
        });
    }
    if found_app != sdkappid {
        return Err(VerifyError::OtherApp {
            expected: sdkappid,
            found: found_app,
        });
    }
    let content = content(
        found_identifier,
        &app_text,
        &time_text,
        &expire_text,
        userbuf,
    );
    // `verify_slice` compares in constant time.
    mac(key, &content)
        .verify_slice(&mac_bytes)
        .map_err(|_| VerifyError::BadSignature)?;
    let verified = Verified {
        sdkappid: found_app,
        identifier: found_identifier.to_owned(),
        time,
        expire,
    };
    if now > verified.expires_at() {
        return Err(VerifyError::Expired {
            expired_at: verified.expires_at(),
            ago: now - verified.expires_at(),
        });
    }
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_key_never_prints() {
        let key = SecretKey::new("hunter2-secret").unwrap();
        assert!(!format!("{key:?}").contains("hunter2"));
        assert!(!format!("{key}").contains("hunter2"));
        assert_eq!(SecretKey::new("  \n"), None);
        assert_eq!(SecretKey::new("k\n").unwrap().expose(), "k");
    }

    #[test]
    fn usersigs_are_recognised_in_both_url_safe_alphabets() {
        let key = SecretKey::new("k").unwrap();
        let sig = make(1400000001, "administrator", &key, 1_700_000_000, 86400);
        assert!(is_usersig(&sig));
        // The same bytes in RFC 4648 base64url, without padding.
        let b64url: String = sig
            .chars()
            .filter(|c| *c != '_')
            .map(|c| match c {
                '*' => '-',
                '-' => '_',
                c => c,
            })
            .collect();
        assert!(is_usersig(&b64url));
        assert!(!is_usersig("aGVsbG8gd29ybGQ"));
        assert!(!is_usersig(&sig[..sig.len() / 2]));
    }
}
