//! Evidence for RELIABILITY.md: the proof tests (faults, crashes, races, bad
//! input, secrets) call [`held`] once their assertions have passed. With
//! `K3S_ASG_RELIABILITY_LOG=FILE` set (by `scripts/reliability`) each call
//! appends one JSON line to FILE; otherwise it does nothing.

use std::io::Write;
use std::sync::Mutex;

pub const ENV: &str = "K3S_ASG_RELIABILITY_LOG";

static LOCK: Mutex<()> = Mutex::new(());

/// Records that `tried` (in `area`) was attempted `runs` times and that `held` held each time.
pub fn held(area: &str, tried: &str, runs: usize, held: &str) {
    let Ok(path) = std::env::var(ENV) else { return };
    let line = serde_json::json!({ "area": area, "tried": tried, "runs": runs, "held": held }).to_string();
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("open the reliability log");
    writeln!(f, "{line}").expect("write the reliability log");
}
