//! One way to try again, for everything that does: a capped exponential backoff with
//! jitter (the gateway link's reconnects, every receive loop, the engine's delivery and
//! edit retries) and one call-retry policy (a 429's `retry_after`, transient faults, give-up)
//! for every adapter's REST calls. The pause is computed here; sleeping is the caller's.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

/// Capped exponential backoff: retry `n` (0 = the first) waits `base · 2ⁿ`, at most
/// `cap`, of which a random 50–100 % ("equal jitter": never less than half, so a storm of
/// retries spreads out without any of them coming back at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap }
    }

    /// The pause before retry `attempt` without jitter: the upper bound of [`Backoff::pause`].
    pub fn nominal(&self, attempt: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cap)
    }

    /// The jittered pause before retry `attempt`, drawn from `rng` (a seeded one where the
    /// caller must be repeatable, as the engine's tests are).
    pub fn pause(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        self.nominal(attempt).mul_f64(rng.gen_range(0.5..=1.0))
    }

    /// As [`Backoff::pause`], but never shorter than the service's own `hint`
    /// (a `retry_after`).
    pub fn pause_at_least(
        &self,
        attempt: u32,
        hint: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Duration {
        self.pause(attempt, rng).max(hint.unwrap_or_default())
    }

    /// A counter of retries in a row on this backoff, for loops that reconnect.
    pub fn attempts(self) -> Attempts {
        Attempts {
            backoff: self,
            done: 0,
        }
    }
}

/// A reconnect loop's state: how many retries in a row, on one [`Backoff`].
#[derive(Debug, Clone)]
pub struct Attempts {
    backoff: Backoff,
    done: u32,
}

impl Attempts {
    /// The pause before the next retry (jittered); counts it.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.backoff.pause(self.done, &mut rand::thread_rng());
        self.done = self.done.saturating_add(1);
        pause
    }

    /// Retries counted since the last [`Attempts::reset`].
    pub fn count(&self) -> u32 {
        self.done
    }

    /// Back to the first pause: the link worked for a while.
    pub fn reset(&mut self) {
        self.done = 0;
    }
}

/// What one failed call says about trying it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Rate limited: the service said how long to wait.
    After(Duration),
    /// A network fault or a 5xx: worth a few tries with backoff.
    Transient,
    /// Retrying will not help (or the answer may already have taken effect): give it back.
    Final,
}

/// How hard one call is tried before its error goes back to the caller: 429s are honoured
/// up to a total wait, transient faults get a few retries on a backoff. Nothing is dropped,
/// only delayed up to that bound; then the caller decides (the engine retries later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallPolicy {
    /// Retries of transient faults.
    pub transient_attempts: u32,
    pub backoff: Backoff,
    /// Total time spent honouring `retry_after` before giving up.
    pub max_retry_after: Duration,
}

impl Default for CallPolicy {
    fn default() -> Self {
        CallPolicy {
            transient_attempts: 4,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(8)),
            max_retry_after: Duration::from_secs(600),
        }
    }
}

/// Retries made so far by one call under a [`CallPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallState {
    pub transient: u32,
    pub waited: Duration,
}

impl CallPolicy {
    /// The pause before the next attempt after a failure judged `verdict`, or `None` to
    /// give up. Counts the retry in `state`.
    pub fn next_pause(
        &self,
        state: &mut CallState,
        verdict: Verdict,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        match verdict {
            Verdict::After(wait) if state.waited < self.max_retry_after => {
                state.waited += wait;
                Some(wait)
            }
            Verdict::Transient if state.transient < self.transient_attempts => {
                let pause = self.backoff.pause(state.transient, rng);
                state.transient += 1;
                Some(pause)
            }
            _ => None,
        }
    }

    /// Runs `attempt` until it succeeds or the policy gives up, sleeping between tries.
    /// `judge` classifies each error; `retrying` is called as each retry is decided, before
    /// the pause (error, the state after counting it, the pause), so the caller can log it
    /// there; the future it returns is awaited after the pause, and ends the call when it
    /// yields `Some`: a value found meanwhile (an adopted message).
    pub async fn run<T, E, A, AF, R, RF>(
        &self,
        mut attempt: A,
        judge: impl Fn(&E) -> Verdict,
        mut retrying: R,
    ) -> Result<T, E>
    where
        A: FnMut() -> AF,
        AF: Future<Output = Result<T, E>>,
        R: FnMut(&E, &CallState, Duration) -> RF,
        RF: Future<Output = Option<T>>,
    {
        let mut state = CallState::default();
        loop {
            let err = match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let verdict = judge(&err);
            let Some(pause) = self.next_pause(&mut state, verdict, &mut rand::thread_rng()) else {
                return Err(err);
            };
            let found = retrying(&err, &state, pause);
            tokio::time::sleep(pause).await;
            if let Some(v) = found.await {
                return Ok(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn pauses_double_up_to_the_cap_and_never_drop_below_half() {
        let b = Backoff::new(500 * MS, 10_000 * MS);
        let nominal: Vec<u64> = (0..7).map(|n| b.nominal(n).as_millis() as u64).collect();
        assert_eq!(nominal, [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(b.nominal(u32::MAX), 10_000 * MS, "no overflow");
        let mut rng = StdRng::seed_from_u64(7);
        for n in 0..40 {
            let p = b.pause(n, &mut rng);
            assert!(p >= b.nominal(n) / 2 && p <= b.nominal(n), "{n}: {p:?}");
        }
    }

    #[test]
    fn a_hint_is_a_floor() {
        let b = Backoff::new(100 * MS, 1000 * MS);
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(b.pause_at_least(0, Some(5000 * MS), &mut rng), 5000 * MS);
        assert!(b.pause_at_least(0, None, &mut rng) <= 100 * MS);
    }

    #[test]
    fn attempts_count_and_reset() {
        let mut a = Backoff::new(10 * MS, 40 * MS).attempts();
        let first = a.next_pause();
        assert!(first >= 5 * MS && first <= 10 * MS);
        a.next_pause();
        a.next_pause();
        assert!(a.next_pause() >= 20 * MS, "capped at 40, at least half");
        assert_eq!(a.count(), 4);
        a.reset();
        assert!(a.next_pause() <= 10 * MS);
    }

    #[test]
    fn the_policy_honours_retry_after_up_to_its_budget_and_gives_up_on_final_errors() {
        let p = CallPolicy {
            transient_attempts: 2,
            backoff: Backoff::new(100 * MS, 1000 * MS),
            max_retry_after: 3000 * MS,
        };
        let mut rng = StdRng::seed_from_u64(3);
        let mut s = CallState::default();
        let after = Verdict::After(2000 * MS);
        assert_eq!(p.next_pause(&mut s, after, &mut rng), Some(2000 * MS));
        assert_eq!(p.next_pause(&mut s, after, &mut rng), Some(2000 * MS));
        assert_eq!(
            p.next_pause(&mut s, after, &mut rng),
            None,
            "4 s waited > 3 s"
        );
        assert!(p.next_pause(&mut s, Verdict::Transient, &mut rng).is_some());
        assert!(p.next_pause(&mut s, Verdict::Transient, &mut rng).is_some());
        assert_eq!(p.next_pause(&mut s, Verdict::Transient, &mut rng), None);
        let mut fresh = CallState::default();
        assert_eq!(p.next_pause(&mut fresh, Verdict::Final, &mut rng), None);
    }

    #[tokio::test(start_paused = true)]
    async fn run_retries_transient_errors_then_returns_the_last_one() {
        let p = CallPolicy {
            transient_attempts: 3,
            backoff: Backoff::new(MS, 4 * MS),
            max_retry_after: Duration::ZERO,
        };
        let calls = AtomicU32::new(0);
        let r: Result<(), &str> = p
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err("503")
                },
                |_| Verdict::Transient,
                |_, _, _| async { None },
            )
            .await;
        assert_eq!(r, Err("503"));
        assert_eq!(calls.load(Ordering::SeqCst), 4, "one try and three retries");

        calls.store(0, Ordering::SeqCst);
        let r: Result<u32, &str> = p
            .run(
                || async {
                    match calls.fetch_add(1, Ordering::SeqCst) {
                        0 => Err("reset"),
                        n => Ok(n),
                    }
                },
                |_| Verdict::Transient,
                |_, _, _| async { None },
            )
            .await;
        assert_eq!(r, Ok(1));
    }

    #[tokio::test(start_paused = true)]
    async fn retrying_is_told_before_the_pause_and_looks_after_it() {
        use tokio::time::Instant;
        let p = CallPolicy {
            transient_attempts: 1,
            backoff: Backoff::new(100 * MS, 100 * MS),
            max_retry_after: Duration::ZERO,
        };
        let start = Instant::now();
        let log = std::sync::Mutex::new(Vec::new());
        let log_ref = &log;
        let r: Result<(), &str> = p
            .run(
                || async { Err("503") },
                |_| Verdict::Transient,
                move |_, _, pause| {
                    log_ref
                        .lock()
                        .unwrap()
                        .push(("told", start.elapsed(), pause));
                    async move {
                        log_ref
                            .lock()
                            .unwrap()
                            .push(("looked", start.elapsed(), pause));
                        None
                    }
                },
            )
            .await;
        assert_eq!(r, Err("503"));
        let told = log.into_inner().unwrap();
        let [("told", at, pause), ("looked", after, _)] = told[..] else {
            panic!("{told:?}")
        };
        assert_eq!(at, Duration::ZERO, "told as the retry is decided");
        assert!(after >= pause && pause >= 50 * MS, "looked after the pause");
    }

    #[tokio::test(start_paused = true)]
    async fn run_ends_with_what_retrying_found() {
        let r: Result<&str, &str> = CallPolicy::default()
            .run(
                || async { Err("lost answer") },
                |_| Verdict::Transient,
                |_, state, _| {
                    let found = state.transient == 2;
                    async move { found.then_some("adopted") }
                },
            )
            .await;
        assert_eq!(r, Ok("adopted"));
    }
}
