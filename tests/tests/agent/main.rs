//! The agent's behaviour, end to end: the real `k3s-asg-agent` binary on fake instances of an
//! emulated region (moto behind the test bed's recording proxy, IMDS, supervisor and lifecycle
//! doubles, stub systemctl/k3s). One module per behaviour; the timing-sensitive load tests are
//! in the `stress` binary, the coordinator's in `coordinator`.

mod agent_token;
mod autoscaler;
mod bad_input;
mod common;
mod crashes;
mod first_server_election;
mod join;
mod leave;
mod lost_majority;
mod quorum_guard;
mod readiness_probes;
mod recovery;
mod run_guards;
mod secrets;
mod spec_edits;
mod termination_notices;
mod warm_pool;
