//! Keeping secrets out of what timctl says about manifests.
//!
//! A problem's code frame quotes the file it is about, and its message may quote a value from
//! it. Whatever that file is (a link in a manifest directory used to lead to
//! `/proc/self/environ`; a credentials file can be passed with `-f` by mistake), the text shown
//! must not carry the run's secrets. [`Secrets`] gathers them (the secret key, a UserSig, the
//! callback token, the database password) and [`ManifestErrors::redact`] removes them, with the
//! client's own redaction (`client::scrub`: percent-decoding, matching ignoring case, and any
//! UserSig at all), from every message, help and code frame, before anything is printed.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::Arc;

use miette::{NamedSource, SourceSpan};

use super::{ManifestErrors, Problem};
use crate::client::{REDACTED, scrub};
use crate::input::{Accept, read_capped};

/// How much of a secret file is read: a key or a token is a line; more is not a secret file.
const SECRET_FILE_CAP: u64 = 64 * 1024;

/// A line of a code frame longer than this is not shown (nor scrubbed: UserSig detection
/// decodes runs of text, and a 64 MiB line of them would take long). No honest manifest line
/// comes near it: an ID is at most 48 bytes.
const MAX_SHOWN_LINE: usize = 16 * 1024;

/// How many lines around a problem's place are scrubbed: miette shows one line of context on
/// each side; two keeps a margin.
const CONTEXT_LINES: usize = 2;

/// The secrets of a run, to be kept out of diagnostics.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    values: Vec<String>,
}

impl Secrets {
    /// The secrets named by the environment (through `get`, as `Credentials::from_lookup`
    /// reads it): `TIMCTL_SECRET_KEY`, the contents of `TIMCTL_SECRET_KEY_FILE`,
    /// `TIMCTL_USERSIG`, `TIMCTL_CALLBACK_TOKEN`, the contents of `TIMCTL_CALLBACK_TOKEN_FILE`,
    /// `PGPASSWORD`, and the password in `state` when it is a PostgreSQL URL. A file that cannot
    /// be read adds nothing: nothing was read from it that could be shown.
    pub fn from_lookup(get: impl Fn(&str) -> Option<OsString>, state: &OsStr) -> Self {
        let mut values = Vec::new();
        for name in [
            "TIMCTL_SECRET_KEY",
            "TIMCTL_USERSIG",
            "TIMCTL_CALLBACK_TOKEN",
            "PGPASSWORD",
        ] {
            if let Some(v) = get(name) {
                values.push(v.to_string_lossy().into_owned());
            }
        }
        for name in ["TIMCTL_SECRET_KEY_FILE", "TIMCTL_CALLBACK_TOKEN_FILE"] {
            let Some(path) = get(name).filter(|p| !p.is_empty()) else {
                continue;
            };
            if let Ok(bytes) =
                read_capped(&PathBuf::from(path), SECRET_FILE_CAP, Accept::RegularOnly)
            {
                let text = String::from_utf8_lossy(&bytes);
                // The whole file as the reader of the key trims it, and each line, in case
                // the file holds more than the one value.
                values.push(text.to_string());
                values.extend(text.lines().map(str::to_owned));
            }
        }
        values.extend(state_password(&state.to_string_lossy()));
        Self::new(values)
    }

    /// These values (trimmed; empty ones are dropped).
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values
            .into_iter()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        // Longest first, so that a secret that contains another is removed whole.
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Secrets { values }
    }

    /// `text` without the secrets, and without any UserSig at all.
    pub fn scrub(&self, text: &str) -> String {
        let scrubbed = scrub(text, self.values.iter().map(String::as_str));
        // The client's scrub percent-decodes the text first, so that an encoded secret is
        // found; text that held no secret is given back as it was, not decoded.
        if scrubbed.matches(REDACTED).count() > text.matches(REDACTED).count() {
            scrubbed
        } else {
            text.to_owned()
        }
    }
}

/// The password in a `postgres://user:password@host/db` URL, or in its `password=` parameter.
fn state_password(state: &str) -> Vec<String> {
    let Ok(url) = url::Url::parse(state) else {
        return Vec::new();
    };
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Vec::new();
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut found: Vec<String> = url.password().map(decode).into_iter().collect();
    found.extend(
        url.query_pairs()
            .filter(|(k, _)| k == "password")
            .map(|(_, v)| v.into_owned()),
    );
    // The raw form too, as it may be shown undecoded.
    found.extend(url.password().map(str::to_owned));
    found
}

impl ManifestErrors {
    /// Removes the `secrets` (and any UserSig) from every problem's message, help and code
    /// frame. Each file's text is redacted once, whatever the number of its problems.
    pub fn redact(&mut self, secrets: &Secrets) {
        let mut redacted: Vec<(Arc<str>, Arc<str>, Vec<LineMap>)> = Vec::new();
        // Which lines of each text are shown, so that only those are scrubbed.
        let mut shown: Vec<(Arc<str>, Vec<usize>)> = Vec::new();
        for p in &self.problems {
            if let Some((source, span)) = &p.source {
                let text = source.inner();
                let entry = match shown.iter_mut().find(|(t, _)| Arc::ptr_eq(t, text)) {
                    Some(e) => e,
                    None => {
                        shown.push((Arc::clone(text), Vec::new()));
                        shown.last_mut().expect("just pushed")
                    }
                };
                entry.1.push(line_of(text, span.offset()));
            }
        }
        for (text, lines) in shown {
            let (new_text, map) = redact_lines(&text, &lines, secrets);
            redacted.push((text, new_text, map));
        }
        for p in &mut self.problems {
            p.redact(secrets, &redacted);
        }
    }
}

impl Problem {
    fn redact(&mut self, secrets: &Secrets, texts: &[(Arc<str>, Arc<str>, Vec<LineMap>)]) {
        self.message = secrets.scrub(&self.message);
        self.help = secrets.scrub(&self.help);
        if let Some((source, span)) = &self.source
            && let Some((_, new_text, map)) = texts
                .iter()
                .find(|(old, _, _)| Arc::ptr_eq(old, source.inner()))
        {
            let start = map_offset(new_text, map, span.offset());
            let end = map_offset(new_text, map, span.offset() + span.len());
            let name = source.name().to_owned();
            self.source = Some((
                NamedSource::new(name, Arc::clone(new_text)).with_language("YAML"),
                SourceSpan::from((start, end.saturating_sub(start))),
            ));
        }
    }
}

/// Where one line of the old text went: its old start and length, its new start and length
/// (lengths without the line break).
#[derive(Clone, Copy, Debug)]
struct LineMap {
    old_start: usize,
    old_len: usize,
    new_start: usize,
    new_len: usize,
}

/// The 0-based line that holds byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// The text with the lines near the `problem_lines` scrubbed (or, when too long to show,
/// replaced by a note), and where each line went. Other lines are kept as they are: miette
/// never shows them, and scrubbing them would cost time on the error path of a large file.
fn redact_lines(
    text: &str,
    problem_lines: &[usize],
    secrets: &Secrets,
) -> (Arc<str>, Vec<LineMap>) {
    let near = |i: usize| {
        problem_lines
            .iter()
            .any(|&l| i + CONTEXT_LINES >= l && i <= l + CONTEXT_LINES)
    };
    let mut out = String::with_capacity(text.len());
    let mut map = Vec::new();
    let mut old_start = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let body = line.strip_suffix('\n').unwrap_or(line);
        let new_start = out.len();
        let new_body = if !near(i) {
            std::borrow::Cow::Borrowed(body)
        } else if body.len() > MAX_SHOWN_LINE {
            std::borrow::Cow::Owned(format!("(a line of {} bytes, not shown)", body.len()))
        } else {
            std::borrow::Cow::Owned(secrets.scrub(body))
        };
        // A line break inside the scrubbed text (a decoded %0A) would shift every later line.
        let new_body = if new_body.contains('\n') {
            std::borrow::Cow::Owned(new_body.replace('\n', " "))
        } else {
            new_body
        };
        out.push_str(&new_body);
        if line.ends_with('\n') {
            out.push('\n');
        }
        map.push(LineMap {
            old_start,
            old_len: body.len(),
            new_start,
            new_len: new_body.len(),
        });
        old_start += line.len();
    }
    (Arc::from(out), map)
}

/// Where byte `offset` of the old text is in the new one: the same column of the same line,
/// kept within the line and on a character boundary.
fn map_offset(new_text: &str, map: &[LineMap], offset: usize) -> usize {
    let Some(line) = map.iter().rev().find(|l| l.old_start <= offset).copied() else {
        return 0;
    };
    let within = (offset - line.old_start)
        .min(line.old_len)
        .min(line.new_len);
    let mut at = line.new_start + within;
    while at > 0 && !new_text.is_char_boundary(at) {
        at -= 1;
    }
    at.min(new_text.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Position;

    fn problem_in(text: &str, line: u32, column: u32) -> Problem {
        let text: Arc<str> = Arc::from(text);
        let mut p = Problem::whole_file(0, std::path::Path::new("m.yaml"), "bad", "fix it");
        p.position = Some(Position { line, column });
        p.attach_source(&text);
        p
    }

    #[test]
    fn a_secret_in_a_frame_a_message_or_a_help_is_redacted() {
        let key = "0123456789abcdef0123456789ABCDEF";
        let text = format!("version: 1\nabsent:\n  {key}:\n    - user: bob\n");
        let mut p = problem_in(&text, 3, 3);
        p.message = format!("user {key:?} is bad");
        p.help = format!("not {}", key.to_ascii_lowercase());
        let mut errors = ManifestErrors::new(vec![p]);
        errors.redact(&Secrets::new([key.to_owned()]));
        let p = &errors.problems()[0];
        assert!(
            !p.message.contains(key) && p.message.contains(REDACTED),
            "{}",
            p.message
        );
        assert!(
            !p.help
                .to_ascii_lowercase()
                .contains(&key.to_ascii_lowercase())
        );
        let (source, span) = p.source.as_ref().unwrap();
        let shown = source.inner();
        assert!(!shown.contains(key) && shown.contains(REDACTED), "{shown}");
        // The span still points at the start of the (redacted) key on line 3.
        assert_eq!(
            &shown[span.offset()..span.offset() + REDACTED.len()],
            REDACTED
        );
    }

    #[test]
    fn text_without_secrets_is_left_as_it_was() {
        let text = "version: 1\nabsent:\n  a%41b:\n    - user: bob\n";
        let mut errors = ManifestErrors::new(vec![problem_in(text, 3, 3)]);
        errors.redact(&Secrets::new(["not-in-there".to_owned()]));
        let (source, span) = errors.problems()[0].source.as_ref().unwrap();
        assert_eq!(&**source.inner(), text);
        assert_eq!(span.offset(), text.find("a%41b").unwrap());
    }

    #[test]
    fn the_password_of_a_postgres_url_is_a_secret() {
        let secrets = Secrets::from_lookup(
            |name| (name == "PGPASSWORD").then(|| "from-env-pw".into()),
            OsStr::new("postgres://timctl:s%40cret-pw@db.example/timctl"),
        );
        let shown = secrets.scrub("a s@cret-pw and a from-env-pw");
        assert!(
            !shown.contains("s@cret-pw") && !shown.contains("from-env-pw"),
            "{shown}"
        );
    }

    #[test]
    fn a_very_long_line_is_not_shown() {
        let text = format!("version: 1\nabsent: {}\n", "x".repeat(MAX_SHOWN_LINE + 1));
        let mut errors = ManifestErrors::new(vec![problem_in(&text, 2, 9)]);
        errors.redact(&Secrets::default());
        let (source, _) = errors.problems()[0].source.as_ref().unwrap();
        assert!(source.inner().contains("not shown"), "{}", source.inner());
    }
}
