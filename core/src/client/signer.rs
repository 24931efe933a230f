//! The UserSig in use, its renewal, and the redaction of secrets from foreign text.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use percent_encoding::percent_decode_str;

use super::Credentials;
use crate::usersig::{self, SecretKey};

/// What stands in for a secret in text that is shown.
pub(crate) const REDACTED: &str = "[redacted]";

/// A run of the UserSig/base64url alphabet shorter than this is not worth decoding: the
/// smallest UserSig is well over a hundred characters.
const MIN_ENCODED_RUN: usize = 40;

/// The UserSig in use, and for a self-made one when to renew it.
pub(crate) struct Signer {
    key: Option<SecretKey>,
    sdkappid: u64,
    pub(crate) admin: String,
    lifetime: Duration,
    current: Mutex<CurrentSig>,
}

struct CurrentSig {
    sig: Arc<str>,
    /// Every UserSig this client has used, the current one included: answers to calls signed
    /// with an older one may still arrive, and any of them may be echoed back.
    used: Vec<Arc<str>>,
    generation: u64,
    renew_at: SystemTime,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Signer {
    pub(crate) fn new(
        credentials: Credentials,
        sdkappid: u64,
        admin: String,
        lifetime: Duration,
    ) -> Self {
        let (key, sig) = match credentials {
            Credentials::SecretKey(key) => {
                let sig = usersig::make(sdkappid, &admin, &key, unix_now(), lifetime.as_secs());
                (Some(key), sig)
            }
            Credentials::UserSig(sig) => (None, sig),
        };
        let sig: Arc<str> = sig.into();
        Signer {
            key,
            sdkappid,
            admin,
            lifetime,
            current: Mutex::new(CurrentSig {
                used: vec![sig.clone()],
                sig,
                generation: 0,
                renew_at: SystemTime::now() + lifetime / 2,
            }),
        }
    }

    /// Whether the UserSig is self-made, so that a fresh one can replace an expired one.
    pub(crate) fn can_renew(&self) -> bool {
        self.key.is_some()
    }

    /// The UserSig to use now, renewing a self-made one at half its lifetime.
    pub(crate) fn current(&self) -> (Arc<str>, u64) {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if self.key.is_some() && SystemTime::now() >= cur.renew_at {
            self.renew_locked(&mut cur);
        }
        (cur.sig.clone(), cur.generation)
    }

    /// After a 70001 answer to `generation`: makes a fresh UserSig unless another call already
    /// did. Does nothing for a UserSig given as is, which cannot be renewed.
    pub(crate) fn renew(&self, generation: u64) {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.generation == generation {
            self.renew_locked(&mut cur);
        }
    }

    fn renew_locked(&self, cur: &mut CurrentSig) {
        if let Some(key) = &self.key {
            cur.sig = usersig::make(
                self.sdkappid,
                &self.admin,
                key,
                unix_now(),
                self.lifetime.as_secs(),
            )
            .into();
            cur.used.push(cur.sig.clone());
            cur.generation += 1;
            cur.renew_at = SystemTime::now() + self.lifetime / 2;
        }
    }

    /// Removes the secrets from text that came from elsewhere (a server's ErrorInfo, a
    /// transport error), so that nothing this client reports can leak them.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let used = {
            let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            cur.used.clone()
        };
        let secrets = used
            .iter()
            .map(|s| &**s)
            .chain(self.key.as_ref().map(SecretKey::expose));
        scrub(text, secrets)
    }
}

/// Removes every form of the `secrets`, and any UserSig at all, from `text`.
///
/// A gateway may echo the request URL in any encoding: the text is percent-decoded first
/// (repeatedly, for double encoding; hex digits of either case), then each secret is matched
/// ignoring ASCII case (a gateway that lower-cases the query still leaks most of a UserSig),
/// and last every run of the UserSig or base64url alphabet that decodes to a UserSig document
/// is replaced, so that a UserSig this run did not make (a stale one, another tool's) is
/// hidden too. The result is for people: decoding the rest of the text does no harm.
pub(crate) fn scrub<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = text.to_owned();
    for _ in 0..3 {
        match percent_decode_str(&out).decode_utf8_lossy() {
            Cow::Borrowed(_) => break,
            Cow::Owned(decoded) => out = decoded,
        }
    }
    for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
        out = replace_ignoring_ascii_case(&out, secret);
    }
    redact_encoded_usersigs(&out)
}

fn replace_ignoring_ascii_case(text: &str, secret: &str) -> String {
    // ASCII lower-casing keeps every byte offset, so offsets found in the lower-cased copy are
    // offsets in the original, and always on character boundaries.
    let haystack = text.to_ascii_lowercase();
    let needle = secret.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(found) = haystack[from..].find(&needle) {
        out.push_str(&text[from..from + found]);
        out.push_str(REDACTED);
        from += found + needle.len();
    }
    out.push_str(&text[from..]);
    out
}

fn is_encoded_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '*' | '-' | '_')
}

/// Replaces each run of the UserSig/base64url alphabet that decodes to a UserSig document. A
/// run may start with a word glued on by `-` or `_` (`sig-eJw…`), so each start after one of
/// those is tried too.
fn redact_encoded_usersigs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_encoded_char) {
        out.push_str(&rest[..start]);
        let run_len = rest[start..]
            .find(|c| !is_encoded_char(c))
            .unwrap_or(rest.len() - start);
        let run = &rest[start..start + run_len];
        let starts = std::iter::once(0).chain(
            run.char_indices()
                .filter(|(_, c)| matches!(c, '-' | '_'))
                .map(|(i, _)| i + 1),
        );
        let hit = starts
            .filter(|&i| run.len() - i >= MIN_ENCODED_RUN)
            .find(|&i| usersig::is_usersig(&run[i..]));
        match hit {
            Some(i) => {
                out.push_str(&run[..i]);
                out.push_str(REDACTED);
            }
            None => out.push_str(run),
        }
        rest = &rest[start + run_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

    fn sig(t: u64) -> String {
        usersig::make(
            1400000001,
            "administrator",
            &SecretKey::new("k").unwrap(),
            t,
            86400,
        )
    }

    #[test]
    fn every_encoding_of_a_known_secret_is_redacted() {
        let s = sig(1);
        let upper = utf8_percent_encode(&s, NON_ALPHANUMERIC).to_string();
        let lower = upper.to_ascii_lowercase();
        for text in [
            format!("echo usersig={s}&x=1"),
            format!("echo usersig={upper}&x=1"),
            format!("echo usersig={lower}&x=1"),
            format!("echo usersig={}", upper.replace('%', "%25")),
            format!("echo usersig={}", s.to_ascii_uppercase()),
        ] {
            let scrubbed = scrub(&text, [s.as_str()]);
            assert!(scrubbed.contains(REDACTED), "{scrubbed}");
            assert!(!scrubbed.contains(&s[..20]), "{scrubbed}");
            assert!(
                !scrubbed
                    .to_ascii_lowercase()
                    .contains(&s[..20].to_ascii_lowercase()),
                "{scrubbed}"
            );
        }
    }

    #[test]
    fn an_unknown_usersig_is_redacted_by_its_content() {
        let other = sig(2);
        let scrubbed = scrub(&format!("bad sig-{other}."), std::iter::empty());
        assert_eq!(scrubbed, format!("bad sig-{REDACTED}."));
        let plain = "a perfectly_ordinary-message-with-words_and-dashes-that-is-long-enough";
        assert_eq!(scrub(plain, std::iter::empty()), plain);
    }

    #[test]
    fn every_usersig_used_is_redacted_after_renewals() {
        let signer = Signer::new(
            Credentials::SecretKey(SecretKey::new("k").unwrap()),
            1400000001,
            "administrator".into(),
            Duration::from_secs(86400),
        );
        let (first, g0) = signer.current();
        signer.renew(g0);
        let (_, g1) = signer.current();
        signer.renew(g1);
        let (third, _) = signer.current();
        // Lower-cased, so that the content check cannot be what finds them.
        let (first, third) = (first.to_ascii_lowercase(), third.to_ascii_lowercase());
        let scrubbed = signer.scrub(&format!("{first} {third}"));
        assert_eq!(scrubbed, format!("{REDACTED} {REDACTED}"));
    }
}
