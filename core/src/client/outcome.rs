//! What became of one call, in terms the caller can act on without knowing HTTP.

/// What became of one call. The caller needs no HTTP to act on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<R> {
    /// Done: `ActionStatus` OK and `ErrorCode` 0.
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
    /// A failure that dooms every call: the client has raised the run's stop signal
    /// ([`crate::stop::StopReason::Fatal`]), so calls not sent yet return
    /// [`Outcome::Stopped`]. Show this message.
    Fatal(Fatal),
    /// A transient failure persisted through every retry.
    RetriesExhausted {
        /// How many times the call was sent.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// Not sent, or not retried, because the run's stop signal was raised (a fatal answer, a
    /// signal, a record failure...). The call may be made again in a later run.
    Stopped,
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

/// A failure that dooms every call of the run. The message is for people, says what to check,
/// and holds no secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
#[error("{message}")]
#[diagnostic(code(timctl::client::fatal))]
pub struct Fatal {
    /// The server's code, or `None` for an HTTP status from a gateway or a TLS failure.
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

/// 70001: the UserSig has expired.
pub(crate) const USERSIG_EXPIRED: i64 = 70001;

/// "50002 (Incorrect request parameter): the server said …".
pub(crate) fn describe(code: i64, meaning: &str, info: &str) -> String {
    let meaning = meaning.trim_end_matches('.');
    if info.trim().is_empty() {
        format!("{code} ({meaning})")
    } else {
        format!("{code} ({meaning}): the server said {:?}", info.trim())
    }
}

/// One clear, secret-free message for a fatal code: what it means and what to check.
pub(crate) fn fatal_for(
    code: i64,
    meaning: &str,
    action: &str,
    info: &str,
    renewed: bool,
) -> Fatal {
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
