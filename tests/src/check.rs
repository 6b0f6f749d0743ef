//! Assertions every end-to-end test file shares: a program run succeeded, and
//! what an instance's state file says, read as the agent's own typed `State`.

use crate::world::{AgentRun, Instance};
use k3s_asg_agent::state::{Phase, State};
use std::time::{Duration, Instant};

/// The run exited 0; otherwise fails with everything it printed.
#[track_caller]
pub fn ok(run: &AgentRun) {
    assert_eq!(run.code, 0, "exit {}:\nstdout:\n{}\nstderr:\n{}", run.code, run.stdout, run.stderr);
}

/// The instance's state file, parsed; fails when it is missing or not whole.
#[track_caller]
pub fn state(inst: &Instance) -> State {
    let text = inst.file(k3s_asg_agent::state::STATE_PATH).unwrap_or_else(|| panic!("{}: no state file", inst.id));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: state file is not whole: {e}\n{text}", inst.id))
}

/// Polls `done` every 100 ms until it holds; fails naming `what` after `within`.
pub async fn until(what: &str, within: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the state file (read whole) says `phase`.
pub fn in_phase(inst: &Instance, phase: Phase) -> bool {
    inst.file(k3s_asg_agent::state::STATE_PATH).and_then(|t| serde_json::from_str::<State>(&t).ok()).is_some_and(|s| s.phase == phase)
}

/// Polls the state file until the agent reports `phase` (30 s at most).
pub async fn wait_for_phase(inst: &Instance, phase: Phase) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if in_phase(inst, phase) {
            return;
        }
        let st = inst.file(k3s_asg_agent::state::STATE_PATH).and_then(|t| serde_json::from_str::<State>(&t).ok());
        assert!(Instant::now() < deadline, "{} never reached phase {phase}: {st:?}", inst.id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
