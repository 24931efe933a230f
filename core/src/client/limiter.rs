//! The one rate limiter every call of a [`super::Client`] goes through.
//!
//! Two rules, both on the scheduled start times:
//! - pacing: starts are at least `1/rate` apart, so the load is smooth rather than bursty;
//! - a sliding window: no more than `ceil(rate)` starts in any one-second window, from the first
//!   second on (a token bucket would allow a burst on top of the rate; this never does).
//!
//! A frequency-limit answer halves the pace for a while.
//!
//! Scheduled times are a plan: a task can wake late (a busy machine, a stalled poll) and several
//! late ones would then go out together. So the window is checked a second time, on the real
//! send times, right before each request leaves ([`RateLimiter::admit`]). [`RateLimiter::acquire`]
//! does both, and is what every call goes through.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long a frequency-limit answer slows the limiter down.
pub(crate) const SLOW_DOWN_FOR: Duration = Duration::from_secs(5);

/// The window is a hair over a second, so that starts scheduled exactly a second apart still
/// land in different windows of a server that counts a closed interval.
const WINDOW: Duration = Duration::from_millis(1001);

#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// When the limiter was made: send times are logged as offsets from it.
    origin: Instant,
    interval: Duration,
    window_limit: usize,
    state: Mutex<State>,
    /// Background calls wait for a free start one at a time, so that they do not all wake at
    /// every free start.
    background: tokio::sync::Mutex<()>,
}

/// Which lane a call waits in for its start.
///
/// Urgent calls reserve their start time ahead, in arrival order ([`RateLimiter::reserve`]).
/// Background calls never hold a start time in the future: one at a time, each takes a start
/// only when one is free now. So an urgent call that arrives while background work fills the
/// limiter waits at most one interval, never behind the background queue: serve's enforcement
/// goes before its resync on the one delete limiter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lane {
    /// Reserve the next start ahead (apply, serve's enforcement).
    #[default]
    Urgent,
    /// Take a start only when it is free now and no urgent call holds it (serve's resync).
    Background,
}

/// What [`RateLimiter::admit`] says about a request about to leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Send it now; it was counted as sent at this instant.
    Now(Instant),
    /// The last second already holds the limit of real sends: wait until then and ask again.
    WaitUntil(Instant),
}

#[derive(Debug)]
struct State {
    next: Option<Instant>,
    /// The last `window_limit` scheduled starts, oldest first.
    recent: VecDeque<Instant>,
    slow_until: Option<Instant>,
    /// The last `window_limit` real send times, oldest first.
    sent: VecDeque<Instant>,
}

impl RateLimiter {
    /// `rate` calls per second; must be positive and finite (checked by the client's config).
    pub(crate) fn new(rate: f64) -> Self {
        let window_limit = (rate.ceil() as usize).max(1);
        RateLimiter {
            origin: Instant::now(),
            interval: Duration::from_secs_f64(1.0 / rate),
            window_limit,
            state: Mutex::new(State {
                next: None,
                recent: VecDeque::new(),
                slow_until: None,
                sent: VecDeque::new(),
            }),
            background: tokio::sync::Mutex::new(()),
        }
    }

    /// Reserves the next start time. The caller sleeps until then (or gives up when the client
    /// stops; the slot is then simply unused).
    pub(crate) fn reserve(&self) -> Instant {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let at = self.next_free(&st, now);
        self.schedule(&mut st, at, now);
        at
    }

    /// The earliest start both the spacing and the one-second window allow, at `now`.
    fn next_free(&self, st: &State, now: Instant) -> Instant {
        let at = st.next.map_or(now, |n| n.max(now));
        match st.recent.front() {
            Some(&oldest) if st.recent.len() >= self.window_limit => at.max(oldest + WINDOW),
            _ => at,
        }
    }

    /// Counts a start at `at` in the window and spaces the next one after it (twice the
    /// interval while slowed down after a frequency-limit answer).
    fn schedule(&self, st: &mut State, at: Instant, now: Instant) {
        let slow = st.slow_until.is_some_and(|t| t > now);
        let interval = if slow {
            self.interval * 2
        } else {
            self.interval
        };
        if st.recent.len() >= self.window_limit {
            st.recent.pop_front();
        }
        st.recent.push_back(at);
        st.next = Some(at + interval);
    }

    /// Takes the next start if it is free now (background lane): `Ok(now)`, counted as
    /// scheduled; else `Err` of when it will be free, unless an urgent call takes it first.
    fn take_if_free(&self) -> Result<Instant, Instant> {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let free_at = self.next_free(&st, now);
        if free_at > now {
            return Err(free_at);
        }
        self.schedule(&mut st, now, now);
        Ok(now)
    }

    /// Called right before a request is sent: admits it (and counts it) unless the last second
    /// already holds the limit of real sends.
    pub(crate) fn admit(&self) -> Admission {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.sent.len() >= self.window_limit
            && let Some(&oldest) = st.sent.front()
        {
            let free_at = oldest + WINDOW;
            if free_at > now {
                return Admission::WaitUntil(free_at);
            }
            st.sent.pop_front();
        }
        st.sent.push_back(now);
        Admission::Now(now)
    }

    /// Waits for a send slot: the scheduled start ([`Self::reserve`]), then as long as the real
    /// send times of the last second say ([`Self::admit`]). `sleep_until` sleeps until an
    /// instant and says whether to go on (false when the run was stopped meanwhile; it may
    /// also wake late, as a busy machine does). Returns the instant the send was admitted at,
    /// or `None` when stopped.
    pub(crate) async fn acquire<Sleep, Slept>(
        &self,
        lane: Lane,
        mut sleep_until: Sleep,
    ) -> Option<Instant>
    where
        Sleep: FnMut(Instant) -> Slept,
        Slept: Future<Output = bool>,
    {
        match lane {
            Lane::Urgent => {
                if !sleep_until(self.reserve()).await {
                    return None;
                }
            }
            Lane::Background => {
                let _turn = self.background.lock().await;
                loop {
                    match self.take_if_free() {
                        Ok(_) => break,
                        Err(free_at) => {
                            if !sleep_until(free_at).await {
                                return None;
                            }
                        }
                    }
                }
            }
        }
        // The slot's time has come, but this task may have woken late along with others: the
        // real send times get the last word.
        loop {
            match self.admit() {
                Admission::Now(at) => return Some(at),
                Admission::WaitUntil(free_at) => {
                    if !sleep_until(free_at).await {
                        return None;
                    }
                }
            }
        }
    }

    /// `at` as microseconds since the limiter was made: how send times are logged.
    pub(crate) fn micros_since_origin(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }

    /// A frequency-limit answer: halve the pace for [`SLOW_DOWN_FOR`].
    pub(crate) fn slow_down(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.slow_until = Some(Instant::now() + SLOW_DOWN_FOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scheduled starts never put more than the limit in any one-second window, including the
    /// first, and keep the pace.
    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_limit_in_any_window() {
        for rate in [1.0, 7.5, 195.0, 200.0, 400.0] {
            let lim = RateLimiter::new(rate);
            let starts: Vec<Instant> = (0..(rate as usize * 3 + 5))
                .map(|_| lim.reserve())
                .collect();
            let limit = rate.ceil() as usize;
            for (i, s) in starts.iter().enumerate() {
                let in_window = starts[i..]
                    .iter()
                    .take_while(|t| **t < *s + Duration::from_secs(1))
                    .count();
                assert!(
                    in_window <= limit,
                    "rate {rate}: {in_window} starts in a second"
                );
            }
            let span = *starts.last().unwrap() - starts[0];
            let achieved = (starts.len() - 1) as f64 / span.as_secs_f64();
            assert!(
                achieved > rate * 0.97 && achieved <= rate * 1.000_001,
                "rate {rate}: achieved {achieved}"
            );
        }
    }

    /// However late the callers come, real sends stay within the window.
    #[tokio::test(start_paused = true)]
    async fn late_starts_are_held_back_at_send_time() {
        let lim = RateLimiter::new(10.0);
        // Twenty callers whose scheduled slots all passed while they slept.
        let slots: Vec<Instant> = (0..20).map(|_| lim.reserve()).collect();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(slots.iter().all(|s| *s <= Instant::now()));
        let admitted = (0..20)
            .filter(|_| matches!(lim.admit(), Admission::Now(_)))
            .count();
        assert_eq!(admitted, 10, "at most the limit go out in one second");
        let Admission::WaitUntil(wait) = lim.admit() else {
            panic!("the eleventh goes out in the same second")
        };
        assert!(wait > Instant::now() && wait <= Instant::now() + WINDOW);
        tokio::time::advance(WINDOW).await;
        assert_eq!(lim.admit(), Admission::Now(Instant::now()));
    }

    /// The guarantee timctl owns, on virtual time so that it is exact: however many callers
    /// there are and however late they wake (a loaded machine), no one-second window holds
    /// more granted sends than the limit, and every caller is granted exactly once. Real
    /// arrivals at a server add network jitter on top; that is measured by the `client_rate`
    /// benchmark, not asserted here.
    #[tokio::test(start_paused = true)]
    async fn granted_sends_stay_within_the_limit_even_when_callers_wake_late() {
        const CALLERS: usize = 1000;
        for rate in [10.0, 197.0] {
            let lim = std::sync::Arc::new(RateLimiter::new(rate));
            let tasks: Vec<_> = (0..CALLERS)
                .map(|caller| {
                    let lim = lim.clone();
                    tokio::spawn(async move {
                        let mut sleeps = 0;
                        lim.acquire(Lane::Urgent, |until| {
                            sleeps += 1;
                            // About a third of the wake-ups come late, by up to 300 ms: spread
                            // by a fixed scramble of the caller and the sleep, so that the run
                            // is the same every time.
                            let scramble = (caller * 7919 + sleeps * 104_729) % 12;
                            let late = if scramble < 4 {
                                Duration::from_millis(75 * (scramble as u64 + 1))
                            } else {
                                Duration::ZERO
                            };
                            async move {
                                tokio::time::sleep_until(until + late).await;
                                true
                            }
                        })
                        .await
                    })
                })
                .collect();
            let mut granted = Vec::with_capacity(CALLERS);
            for task in tasks {
                granted.push(task.await.unwrap().expect("never stopped"));
            }
            assert_eq!(granted.len(), CALLERS);
            granted.sort();
            let limit = rate.ceil() as usize;
            let mut busiest = 0;
            for (i, start) in granted.iter().enumerate() {
                let in_window = granted[i..]
                    .iter()
                    .take_while(|t| **t < *start + Duration::from_secs(1))
                    .count();
                busiest = busiest.max(in_window);
            }
            assert!(busiest <= limit, "rate {rate}: {busiest} sends in a second");
            // The callers kept the limiter busy: the window was full, not merely respected.
            assert_eq!(busiest, limit, "rate {rate}");
        }
    }

    /// Enforcement before resync: with the limiter saturated by background calls, an urgent
    /// call that arrives starts within one interval, ahead of every background call still
    /// waiting; and the two lanes together still never exceed the window.
    #[tokio::test(start_paused = true)]
    async fn urgent_calls_start_before_waiting_background_calls() {
        let lim = std::sync::Arc::new(RateLimiter::new(10.0));
        let sleep = |until: Instant| async move {
            tokio::time::sleep_until(until).await;
            true
        };
        let background: Vec<_> = (0..40)
            .map(|_| {
                let lim = lim.clone();
                tokio::spawn(async move { lim.acquire(Lane::Background, sleep).await.unwrap() })
            })
            .collect();
        // Two seconds in, the background calls have taken about twenty starts.
        tokio::time::sleep(Duration::from_millis(2050)).await;
        let arrived = Instant::now();
        let urgent: Vec<_> = (0..3)
            .map(|_| {
                let lim = lim.clone();
                tokio::spawn(async move { lim.acquire(Lane::Urgent, sleep).await.unwrap() })
            })
            .collect();
        let mut urgent_starts = Vec::new();
        for u in urgent {
            urgent_starts.push(u.await.unwrap());
        }
        let mut background_starts = Vec::new();
        for b in background {
            background_starts.push(b.await.unwrap());
        }
        let last_urgent = *urgent_starts.iter().max().unwrap();
        // Three urgent calls: the third starts two intervals after the first's free start.
        assert!(
            last_urgent <= arrived + Duration::from_millis(350),
            "urgent calls waited {:?}",
            last_urgent - arrived
        );
        let waiting_behind = background_starts
            .iter()
            .filter(|b| **b > arrived && **b < last_urgent)
            .count();
        assert_eq!(
            waiting_behind, 0,
            "a background call went before an urgent one"
        );
        assert!(
            background_starts
                .iter()
                .filter(|b| **b > last_urgent)
                .count()
                >= 15,
            "the background calls still waiting went after"
        );
        let mut all: Vec<Instant> = urgent_starts.into_iter().chain(background_starts).collect();
        all.sort();
        for (i, start) in all.iter().enumerate() {
            let in_window = all[i..]
                .iter()
                .take_while(|t| **t < *start + Duration::from_secs(1))
                .count();
            assert!(in_window <= 10, "{in_window} starts in a second");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slow_down_halves_the_pace() {
        let lim = RateLimiter::new(100.0);
        let a = lim.reserve();
        lim.slow_down();
        let b = lim.reserve();
        let c = lim.reserve();
        assert_eq!(b - a, Duration::from_millis(10));
        assert_eq!(c - b, Duration::from_millis(20));
    }
}
