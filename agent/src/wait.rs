//! Waits, budgets and the clock. Bounded waits: jittered exponential backoff
//! under one deadline, logging what is awaited at most every five seconds; a
//! spot reclaim's time as the budget every wait of a leave shares; Unix time.
//!
//! ```ignore
//! let mut w = Waiter::new("the join token", Duration::from_secs(60));
//! let value = loop {
//!     if let Some(v) = look().await? { break v; }
//!     w.pending("not published yet").await.map_err(|why| timeout_error(why))?;
//! };
//! ```

use crate::vocab::Trigger;
use rand::Rng;
use std::time::{Duration, Instant};

pub struct Waiter {
    what: String,
    start: Instant,
    deadline: Duration,
    delay: Duration,
    max_delay: Duration,
    last_log: Option<Instant>,
    hurry: Option<Hurry>,
}

/// Set by a second SIGTERM: waits stop early, cleanup still runs.
pub type Hurry = std::sync::Arc<std::sync::atomic::AtomicBool>;

pub fn hurried(h: &Hurry) -> bool {
    h.load(std::sync::atomic::Ordering::SeqCst)
}

impl Waiter {
    pub fn new(what: impl Into<String>, deadline: Duration) -> Self {
        Waiter {
            what: what.into(),
            start: Instant::now(),
            deadline,
            delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            last_log: None,
            hurry: None,
        }
    }

    /// Caps the delay between attempts.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max_delay = max;
        self.delay = self.delay.min(max);
        self
    }

    /// The first delay (default 200 ms): longer for waits on a busy service.
    pub fn first_delay(mut self, first: Duration) -> Self {
        self.delay = first.min(self.max_delay);
        self
    }

    /// Stops waiting (with `Err`) once `hurry` is set.
    pub fn hurry(mut self, hurry: &Hurry) -> Self {
        self.hurry = Some(hurry.clone());
        self
    }

    /// Records that the awaited thing is not there yet because of `reason`, and
    /// sleeps before the next attempt; `Err(reason)` once the deadline has passed.
    pub async fn pending(&mut self, reason: impl Into<String>) -> Result<(), String> {
        let reason = reason.into();
        let elapsed = self.start.elapsed();
        if self.hurry.as_ref().is_some_and(hurried) {
            tracing::warn!(waiting_for = %self.what, reason = %reason, "not waiting any longer: asked to hurry (second SIGTERM)");
            return Err(format!("{reason} (wait skipped after a second SIGTERM)"));
        }
        if elapsed >= self.deadline {
            tracing::warn!(waiting_for = %self.what, reason = %reason, waited_s = elapsed.as_secs(), "gave up waiting");
            return Err(reason);
        }
        if self.last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            tracing::info!(waiting_for = %self.what, reason = %reason, elapsed_s = elapsed.as_secs(), deadline_s = self.deadline.as_secs(), "waiting");
            self.last_log = Some(Instant::now());
        }
        let jittered = self.delay.mul_f64(rand::rng().random_range(0.5..1.0));
        tokio::time::sleep(jittered.min(self.deadline - elapsed)).await;
        self.delay = (self.delay * 2).min(self.max_delay);
        Ok(())
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Seconds kept back from a spot reclaim for the steps after the waits (delete the Node, stop k3s).
const SPOT_MARGIN_S: u64 = 15;

/// The instant a spot notice's `time` names, less the margin; `None` for other triggers or an
/// unreadable notice (then the usual bounds apply).
pub fn spot_deadline(trigger: &Trigger) -> Option<std::time::Instant> {
    let Trigger::SpotInterruption(json) = trigger else {
        return None;
    };
    let at = serde_json::from_str::<serde_json::Value>(json).ok()?.get("time")?.as_str()?.to_string();
    let when = aws_sdk_ec2::primitives::DateTime::from_str(&at, aws_sdk_ec2::primitives::DateTimeFormat::DateTime).ok()?;
    let when = std::time::SystemTime::try_from(when).ok()?;
    let left = when.duration_since(std::time::SystemTime::now()).unwrap_or_default().saturating_sub(Duration::from_secs(SPOT_MARGIN_S));
    Some(std::time::Instant::now() + left)
}

/// `want`, or less so that it ends within `share` of the time left before `deadline`.
pub fn budget(deadline: Option<Instant>, want: Duration, share: f64) -> Duration {
    match deadline {
        None => want,
        Some(d) => want.min(d.saturating_duration_since(Instant::now()).mul_f64(share)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_then_gives_up_with_last_reason() {
        let mut w = Waiter::new("thing", Duration::from_millis(50)).max_delay(Duration::from_millis(5));
        let mut n = 0;
        let err = loop {
            n += 1;
            if let Err(why) = w.pending(format!("try {n}")).await {
                break why;
            }
        };
        assert!(n > 2, "retried {n} times");
        assert_eq!(err, format!("try {n}"));
    }
}
