//! Cold-start recovery (issue: the cluster survives its control plane), as pure
//! decisions.
//!
//! A server that holds its cluster's secure token but can verify no live server
//! asks: could any other server of this cluster still come up? Those are the
//! instances EC2 shows pending or running that have been servers of the cluster
//! (they hold an API record, or won the latest finished election) or that answer
//! with another CA. While one exists, nobody recovers: a live server that only
//! lost its API record is found by the same probe of EC2's control-plane
//! instances and joined instead. Once nothing answers and nothing could, for a
//! whole grace (kept across restarts), the server contends in a **recovery
//! election**: the next epoch of the same election records (`election.rs`), with
//! `Overwrite=false`, so exactly one contender wins. The winner restores the
//! newest snapshot with the cluster's own token, or starts a new cluster where
//! there is none; the others wait for it and join it.

use crate::election::{Epoch, WinnerHealth};
use std::time::Duration;

/// What the recovery decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Other servers proving they hold the cluster's CA (`id@ip`).
    pub live_servers: Vec<String>,
    /// Other pending or running instances that have been servers of the cluster (or answer with
    /// another CA), and why each counts.
    pub could_come_up: Vec<String>,
    /// The latest election (first or recovery), and whether it was a recovery.
    pub latest: Option<Epoch>,
    pub latest_is_recovery: bool,
    /// The latest winner, as EC2 and its supervisor show it (not observed when it is this instance).
    pub winner: Option<WinnerHealth>,
    /// How long this server has seen no live server and nothing that could come up.
    pub quiet_for: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A live server answers: join it.
    Join,
    Wait(String),
    /// This instance won the latest recovery election and has not finished it: go on.
    Lead {
        epoch: u64,
    },
    /// Try to win recovery election `epoch`.
    Contend {
        epoch: u64,
        why: String,
    },
}

pub fn decide(o: &Observed, me: &str, lease: Duration, grace: Duration) -> Decision {
    // The lease only words the wait: see below.
    if !o.live_servers.is_empty() {
        return Decision::Join;
    }
    let latest = o.latest.as_ref();
    if let Some(e) = latest.filter(|e| e.winner == me && !e.secured && o.latest_is_recovery) {
        return Decision::Lead { epoch: e.number };
    }
    if !o.could_come_up.is_empty() {
        return Decision::Wait(format!(
            "no server of this cluster answers, but {} could still come up: not recovering while it might",
            o.could_come_up.join(", ")
        ));
    }
    // An unfinished election's winner is displaced only once EC2 says it is gone: never for a
    // lapsed lease while it runs (a long restore renews nothing while k3s works, and a second
    // restorer would make a second cluster). A winner that hangs for good must be terminated.
    if let Some(e) = latest.filter(|e| e.winner != me && !e.secured) {
        if !matches!(o.winner, Some(WinnerHealth::Gone(_))) {
            let what = if o.latest_is_recovery { "recovery election" } else { "election" };
            let lapsed = if e.age.is_some_and(|a| a > lease) { " (its lease lapsed; terminate it if it hangs)" } else { "" };
            return Decision::Wait(format!("{} won {what} {} and is bringing the cluster back{lapsed}", e.winner, e.number));
        }
    }
    if o.quiet_for < grace {
        return Decision::Wait(format!(
            "no server of this cluster answers and none could come up; recovering in {} s unless one does",
            (grace - o.quiet_for).as_secs().max(1)
        ));
    }
    let epoch = latest.map_or(1, |e| e.number + 1);
    let last = match latest {
        Some(e) => format!("; the last election ({}) was won by {}", e.number, e.winner),
        None => String::new(),
    };
    Decision::Contend {
        epoch,
        why: format!("recovery: no server of this cluster answered for {} s and none could come up{last}", o.quiet_for.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "i-0000000000000000a";
    const B: &str = "i-0000000000000000b";
    const LEASE: Duration = Duration::from_secs(60);
    const GRACE: Duration = Duration::from_secs(120);

    fn quiet(s: u64) -> Observed {
        Observed {
            live_servers: vec![],
            could_come_up: vec![],
            latest: None,
            latest_is_recovery: false,
            winner: None,
            quiet_for: Duration::from_secs(s),
        }
    }

    fn epoch(n: u64, winner: &str, age: u64, secured: bool) -> Option<Epoch> {
        Some(Epoch { number: n, winner: winner.into(), age: Some(Duration::from_secs(age)), secured })
    }

    #[test]
    fn a_live_server_always_wins_over_recovery() {
        let mut o = quiet(10_000);
        o.live_servers = vec![format!("{B}@10.0.0.2")];
        o.latest = epoch(3, ME, 5, false);
        o.latest_is_recovery = true;
        assert_eq!(decide(&o, ME, LEASE, GRACE), Decision::Join);
    }

    #[test]
    fn a_server_that_could_come_up_blocks_recovery_forever() {
        let mut o = quiet(10_000);
        o.could_come_up = vec![format!("{B} (holds an API record)")];
        let Decision::Wait(why) = decide(&o, ME, LEASE, GRACE) else { panic!() };
        assert!(why.contains(B), "{why}");
    }

    #[test]
    fn grace_then_the_next_epoch() {
        let mut o = quiet(30);
        o.latest = epoch(1, B, 86_400, true);
        o.winner = Some(WinnerHealth::Gone("terminated".into()));
        assert!(matches!(decide(&o, ME, LEASE, GRACE), Decision::Wait(w) if w.contains("recovering in 90 s")));
        o.quiet_for = GRACE;
        assert!(matches!(decide(&o, ME, LEASE, GRACE), Decision::Contend { epoch: 2, why } if why.contains("won by i-0000000000000000b")));
        assert!(matches!(decide(&quiet(500), ME, LEASE, GRACE), Decision::Contend { epoch: 1, .. }), "a cluster from before elections");
    }

    #[test]
    fn a_recovery_under_way_is_waited_for_unless_its_winner_is_gone() {
        let mut o = quiet(10_000);
        o.latest = epoch(4, B, 10, false);
        o.latest_is_recovery = true;
        o.winner = Some(WinnerHealth::Running { answers: false });
        assert!(matches!(decide(&o, ME, LEASE, GRACE), Decision::Wait(w) if w.contains("recovery election 4")));
        o.latest = epoch(4, B, 600, false);
        assert!(
            matches!(decide(&o, ME, LEASE, GRACE), Decision::Wait(w) if w.contains("lease lapsed")),
            "a running winner is never displaced, however long its restore takes"
        );
        o.winner = Some(WinnerHealth::Gone("terminated".into()));
        o.latest = epoch(4, B, 10, false);
        assert!(matches!(decide(&o, ME, LEASE, GRACE), Decision::Contend { epoch: 5, .. }));
    }

    #[test]
    fn the_winner_goes_on_after_a_restart() {
        let mut o = quiet(0);
        o.latest = epoch(4, ME, 10, false);
        o.latest_is_recovery = true;
        assert_eq!(decide(&o, ME, LEASE, GRACE), Decision::Lead { epoch: 4 });
        o.latest = epoch(4, ME, 10, true);
        assert!(matches!(decide(&o, ME, LEASE, GRACE), Decision::Wait(_)), "a finished recovery is not led again");
    }
}
