//! Crash points for the crash tests: with the `failpoints` feature (turned on
//! only by the test bed) and `K3S_ASG_FAILPOINT=STEP`, the agent kills itself
//! with SIGKILL as soon as STEP's effect is done and before the state file
//! records it — the harshest moment to lose a process. Without the feature the
//! variable is ignored and none of this is compiled in.

use crate::vocab::StepName;

/// The environment variable naming the step to die after ([`StepName::as_str`]).
pub const ENV: &str = "K3S_ASG_FAILPOINT";

#[cfg(feature = "failpoints")]
pub fn hit(step: StepName) {
    if std::env::var(ENV).is_ok_and(|v| v == step.as_str()) {
        eprintln!("k3s-asg-agent: failpoint {step}: sending myself SIGKILL");
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill").args(["-KILL", &pid]).status();
        // `kill` is on every PATH the tests use; never go on past a failpoint.
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_step: StepName) {}
