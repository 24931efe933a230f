//! What to do after one attempt: a pure function of the attempt's answer, the call's progress
//! and the retry policy, so that every rule is tested without a server.

use std::time::Duration;

use super::outcome::{Fatal, Outcome, USERSIG_EXPIRED, describe, fatal_for};
use crate::api::ErrorClass;

/// The frequency-limit codes: retried, and they slow the limiter down.
pub(crate) const FREQUENCY_LIMIT_CODES: [i64; 4] = [60007, 60011, 60018, 60019];

/// How transient failures are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Retries of a transient failure per call (0 = try once).
    pub(crate) max_retries: u32,
    /// The delay before the first retry; it doubles per retry.
    pub(crate) min_backoff: Duration,
    /// The cap on any one delay, jitter and `Retry-After` included.
    pub(crate) max_backoff: Duration,
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1 for the first): the exponential step capped at
    /// `max_backoff`, then "equal jitter" within it (between half the step and the step), so
    /// that calls failing together spread out yet no delay ever exceeds the cap. A server's
    /// `Retry-After` raises the delay, but never above the cap either.
    pub(crate) fn delay(&self, retry: u32, jitter: f64, retry_after: Option<Duration>) -> Duration {
        let doubling = 2f64.powi(retry.saturating_sub(1).min(62) as i32);
        let step = self
            .min_backoff
            .mul_f64(doubling.min(1e9))
            .min(self.max_backoff);
        let jittered = step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        jittered
            .max(retry_after.unwrap_or_default())
            .min(self.max_backoff)
    }
}

/// A `Retry-After` header's value as a delay from `now` (RFC 9110 §10.2.3): delay-seconds, or
/// an HTTP-date in any of the three forms a recipient must accept (IMF-fixdate, the obsolete
/// RFC 850 and asctime forms). A date already past means no wait; a value that is neither is
/// `None`, and the backoff decides alone. The caller caps the result like any delay
/// ([`RetryPolicy::delay`]). `now` is a parameter so that the rule is tested without a clock.
pub(crate) fn retry_after_delay(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // So many digits that they overflow are still "wait a very long time", capped later.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = http_date(value)?;
    let wait = now.duration_until(at);
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// An HTTP-date (RFC 9110 §5.6.7): IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, which RFC 2822
/// parsing covers), RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) or asctime
/// (`Sun Nov  6 08:49:37 1994`), all in UTC.
fn http_date(value: &str) -> Option<jiff::Timestamp> {
    static IMF_FIXDATE: jiff::fmt::rfc2822::DateTimeParser =
        jiff::fmt::rfc2822::DateTimeParser::new();
    if let Ok(at) = IMF_FIXDATE.parse_timestamp(value) {
        return Some(at);
    }
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .into_iter()
        .find_map(|format| {
            let datetime = jiff::fmt::strtime::parse(format, value)
                .ok()?
                .to_datetime()
                .ok()?;
            jiff::tz::Offset::UTC.to_timestamp(datetime).ok()
        })
}

/// One attempt's answer, before the policy looks at it. Foreign text in it (`info`,
/// `reason`) has already been scrubbed of secrets.
#[derive(Debug)]
pub(crate) enum Answer<R> {
    /// `ActionStatus` OK and `ErrorCode` 0.
    Done(R),
    /// An error code from the server, with its spec-given class.
    Api {
        code: i64,
        class: ErrorClass,
        meaning: &'static str,
        action: &'static str,
        info: String,
    },
    /// No usable answer, worth retrying: a dropped connection, a 5xx, a body cut off or too
    /// large, HTTP 429.
    Transient {
        reason: String,
        frequency_limited: bool,
        /// A `Retry-After` header's delay.
        retry_after: Option<Duration>,
    },
    /// An answer that dooms every call (an HTTP 401/403, a certificate that does not verify).
    Fatal(Fatal),
}

impl<R> Answer<R> {
    /// Whether the server said we are too fast (the limiter then slows down).
    pub(crate) fn is_frequency_limited(&self) -> bool {
        match self {
            Answer::Api { code, class, .. } => {
                *class == ErrorClass::Retry && FREQUENCY_LIMIT_CODES.contains(code)
            }
            Answer::Transient {
                frequency_limited, ..
            } => *frequency_limited,
            Answer::Done(_) | Answer::Fatal(_) => false,
        }
    }
}

/// Where a call stands after an attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Requests sent so far, this one included.
    pub(crate) attempts: u32,
    /// Backoff retries taken so far.
    pub(crate) retries: u32,
    /// Whether the UserSig was already renewed for this call.
    pub(crate) renewed: bool,
}

/// What the call does next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next<R> {
    /// The call is over with this outcome (never `Fatal` or `Stopped`).
    Finish(Outcome<R>),
    /// The run must stop: raise the stop signal and return this.
    Stop(Fatal),
    /// The self-made UserSig expired: make a fresh one and send again at once (no backoff).
    RenewAndRetry,
    /// Wait this long, then send again.
    Retry {
        after: Duration,
        /// Why, for the log and, should the retries run out, for the outcome.
        reason: String,
    },
}

/// The decision after one attempt. `can_renew` says whether the UserSig is self-made; `jitter`
/// is a uniform random number in `[0, 1)`.
pub(crate) fn decide<R>(
    answer: Answer<R>,
    progress: Progress,
    can_renew: bool,
    policy: &RetryPolicy,
    jitter: f64,
) -> Next<R> {
    let (reason, retry_after) = match answer {
        Answer::Done(r) => return Next::Finish(Outcome::Success(r)),
        Answer::Fatal(f) => return Next::Stop(f),
        Answer::Api {
            code,
            class,
            meaning,
            action,
            info,
        } => match class {
            ErrorClass::AlreadyAbsent => {
                return Next::Finish(Outcome::AlreadyAbsent {
                    code,
                    message: describe(code, meaning, &info),
                });
            }
            ErrorClass::Item => {
                return Next::Finish(Outcome::ItemFailed {
                    code,
                    message: describe(code, meaning, &info),
                });
            }
            ErrorClass::Fatal if code == USERSIG_EXPIRED && can_renew && !progress.renewed => {
                return Next::RenewAndRetry;
            }
            ErrorClass::Fatal => {
                return Next::Stop(fatal_for(code, meaning, action, &info, progress.renewed));
            }
            ErrorClass::Retry => (describe(code, meaning, &info), None),
        },
        Answer::Transient {
            reason,
            retry_after,
            ..
        } => (reason, retry_after),
    };
    if progress.retries >= policy.max_retries {
        return Next::Finish(Outcome::RetriesExhausted {
            attempts: progress.attempts,
            last: reason,
        });
    }
    Next::Retry {
        after: policy.delay(progress.retries + 1, jitter, retry_after),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_retries: 3,
        min_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
    };

    fn api(code: i64, class: ErrorClass) -> Answer<()> {
        Answer::Api {
            code,
            class,
            meaning: "Meaning.",
            action: "Stop; check it.",
            info: "info".into(),
        }
    }

    fn transient(retry_after: Option<Duration>) -> Answer<()> {
        Answer::Transient {
            reason: "HTTP 502".into(),
            frequency_limited: false,
            retry_after,
        }
    }

    fn at(attempts: u32, retries: u32) -> Progress {
        Progress {
            attempts,
            retries,
            renewed: false,
        }
    }

    #[test]
    fn answers_that_end_the_call() {
        assert_eq!(
            decide(Answer::Done(7), at(1, 0), true, &POLICY, 0.5),
            Next::Finish(Outcome::Success(7))
        );
        assert_eq!(
            decide(
                api(50001, ErrorClass::AlreadyAbsent),
                at(1, 0),
                true,
                &POLICY,
                0.5
            ),
            Next::Finish(Outcome::AlreadyAbsent {
                code: 50001,
                message: "50001 (Meaning): the server said \"info\"".into()
            })
        );
        assert!(matches!(
            decide(api(50002, ErrorClass::Item), at(1, 0), true, &POLICY, 0.5),
            Next::Finish(Outcome::ItemFailed { code: 50002, .. })
        ));
        assert!(matches!(
            decide(api(70003, ErrorClass::Fatal), at(1, 0), true, &POLICY, 0.5),
            Next::Stop(Fatal {
                code: Some(70003),
                ..
            })
        ));
    }

    #[test]
    fn an_expired_usersig_is_renewed_once_and_only_when_self_made() {
        let expired = || api(USERSIG_EXPIRED, ErrorClass::Fatal);
        assert_eq!(
            decide(expired(), at(1, 0), true, &POLICY, 0.5),
            Next::RenewAndRetry
        );
        let renewed = Progress {
            renewed: true,
            ..at(2, 0)
        };
        match decide(expired(), renewed, true, &POLICY, 0.5) {
            Next::Stop(f) => assert!(f.message.contains("clock"), "{}", f.message),
            other => panic!("{other:?}"),
        }
        match decide(expired(), at(1, 0), false, &POLICY, 0.5) {
            Next::Stop(f) => assert!(f.message.contains("TIMCTL_USERSIG"), "{}", f.message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn transient_answers_are_retried_until_the_retries_run_out() {
        assert!(matches!(
            decide(transient(None), at(1, 0), true, &POLICY, 0.0),
            Next::Retry { after, .. } if after == Duration::from_millis(100)
        ));
        assert!(matches!(
            decide(api(60007, ErrorClass::Retry), at(3, 2), true, &POLICY, 0.0),
            Next::Retry { .. }
        ));
        assert_eq!(
            decide(transient(None), at(4, 3), true, &POLICY, 0.0),
            Next::Finish(Outcome::RetriesExhausted {
                attempts: 4,
                last: "HTTP 502".into()
            })
        );
    }

    /// Issue 11.9: the cap is a cap, whatever the jitter, the retry number or the server's
    /// `Retry-After`; and `Retry-After` is honoured below it.
    #[test]
    fn the_backoff_cap_is_never_exceeded() {
        for retry in 1..=40 {
            for jitter in [0.0, 0.3, 0.999_999, 1.0] {
                let d = POLICY.delay(retry, jitter, None);
                assert!(
                    d <= POLICY.max_backoff,
                    "retry {retry} jitter {jitter}: {d:?}"
                );
                assert!(d >= POLICY.min_backoff / 2, "{d:?}");
            }
        }
        assert_eq!(POLICY.delay(20, 1.0, None), POLICY.max_backoff);
        assert_eq!(
            POLICY.delay(1, 0.0, Some(Duration::from_millis(700))),
            Duration::from_millis(700)
        );
        assert_eq!(
            POLICY.delay(1, 0.0, Some(Duration::from_secs(3600))),
            POLICY.max_backoff
        );
        match decide(
            transient(Some(Duration::from_millis(800))),
            at(1, 0),
            true,
            &POLICY,
            0.0,
        ) {
            Next::Retry { after, .. } => assert_eq!(after, Duration::from_millis(800)),
            other => panic!("{other:?}"),
        }
    }

    /// `Retry-After` in either form: delay-seconds, or an HTTP-date counted from `now` (a date
    /// past is no wait); anything else is ignored.
    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now: jiff::Timestamp = "1994-11-06T08:49:30Z".parse().unwrap();
        let secs = Duration::from_secs;
        let cases = [
            ("120", Some(secs(120))),
            (" 0 ", Some(secs(0))),
            ("99999999999999999999999", Some(secs(u64::MAX))),
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(secs(7))),
            ("Sun, 06 Nov 1994 09:49:30 GMT", Some(secs(3600))),
            ("Sunday, 06-Nov-94 08:49:37 GMT", Some(secs(7))),
            ("Sun Nov  6 08:49:37 1994", Some(secs(7))),
            // In the past, or this very second: retry after the backoff alone.
            ("Sun, 06 Nov 1994 08:49:30 GMT", Some(Duration::ZERO)),
            ("Sat, 01 Jan 1994 00:00:00 GMT", Some(Duration::ZERO)),
            // Garbage, a negative or fractional number, an impossible date, a weekday that
            // does not match: as if absent.
            ("", None),
            ("soon", None),
            ("-5", None),
            ("1.5", None),
            ("+5", None),
            ("Sun, 32 Nov 1994 08:49:37 GMT", None),
            ("Mon, 06 Nov 1994 08:49:37 GMT", None),
            ("Sun, 06 Nov 1994 08:49:37 GMT trailing", None),
        ];
        for (value, want) in cases {
            assert_eq!(retry_after_delay(value, now), want, "{value:?}");
        }
        // A date an hour away is still held to the cap.
        let far = retry_after_delay("Sun, 06 Nov 1994 09:49:30 GMT", now);
        assert_eq!(POLICY.delay(1, 0.0, far), POLICY.max_backoff);
        let near = retry_after_delay("Sun, 06 Nov 1994 08:49:30 GMT", now);
        assert_eq!(POLICY.delay(1, 0.0, near), Duration::from_millis(100));
    }

    #[test]
    fn frequency_limits_are_recognised() {
        assert!(api(60007, ErrorClass::Retry).is_frequency_limited());
        assert!(!api(50004, ErrorClass::Retry).is_frequency_limited());
        assert!(
            Answer::<()>::Transient {
                reason: "HTTP 429".into(),
                frequency_limited: true,
                retry_after: None
            }
            .is_frequency_limited()
        );
    }
}
