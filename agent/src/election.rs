//! The first-server election, as pure decisions (issue: a safe first-server
//! election).
//!
//! **Records.** Each election is a String parameter
//! `{prefix}/clusters/{cluster}/election/{epoch}` holding who won and when
//! (JSON, never the token), created with `Overwrite=false`. SSM has no
//! compare-and-swap, but create-if-absent of one name is atomic: of any number
//! of contenders for epoch `n`, exactly one create succeeds. A contender only
//! contends for `latest + 1` after it has *seen* epoch `latest` and judged its
//! winner gone, so under a 10-way race every contender that judged the same
//! epoch dead aims at the same name and one wins; a contender that saw an older
//! epoch aims at a name that already exists and loses; nobody can skip an epoch
//! (it would need to have seen the one before). The winner of the latest epoch
//! is the only instance that may run `cluster-init`; it writes its election
//! token into the token parameter and renews its lease by rewriting its own
//! record (SSM's `LastModifiedDate` is the lease clock).
//!
//! **Takeover** happens only while the token is not yet in k3s's secure form and
//! only when the latest winner is gone (EC2: terminated, shutting down,
//! stopping, stopped, unknown), or its lease lapsed *and* nothing answers on its
//! supervisor port. A live winner is never displaced.
//!
//! **No second cluster.** With the token parameter missing, a server contends
//! only if no server of the cluster answers on its supervisor port (API records
//! and EC2's live control-plane instances of the cluster); otherwise it refuses
//! and says how to put the token back.

use crate::token;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The election record's value. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub winner: String,
    /// Unix seconds of the win and of the last lease renewal (informational; the lease is judged
    /// by SSM's `LastModifiedDate`).
    pub won_at: u64,
    pub renewed_at: u64,
    /// Why this epoch was held, when it replaced an earlier winner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_over: Option<String>,
    /// When the winner secured the token: from then on the lease no longer matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secured_at: Option<u64>,
    /// A recovery election (the cluster's token was secure and no server was left).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovery: bool,
}

/// The latest election, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    /// 0: a token created by an agent older than election records (its creator is the winner,
    /// with no lease).
    pub number: u64,
    pub winner: String,
    /// Since the record was last written (SSM's clock against ours); `None` for epoch 0.
    pub age: Option<Duration>,
    /// The winner secured the token (its cluster formed).
    pub secured: bool,
}

/// What the token parameter holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    Absent,
    /// An election token, naming its creator.
    Election {
        creator: Option<String>,
    },
    /// k3s's secure form: the cluster is up.
    Secure,
}

impl TokenKind {
    pub fn of(value: Option<&str>) -> TokenKind {
        match value {
            None => TokenKind::Absent,
            Some(v) if token::parse_secure(v).is_some() => TokenKind::Secure,
            Some(v) => TokenKind::Election { creator: token::election_creator(v) },
        }
    }
}

/// How the latest winner looks from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WinnerHealth {
    /// EC2 says it is terminated, shutting down, stopping or stopped, or does not know it.
    Gone(String),
    /// Pending or running; whether a k3s supervisor answers on its address.
    Running { answers: bool },
}

/// Everything the decision needs. `winner` is observed when the token is not secure and
/// someone else won; `live_servers` when the token parameter is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub token: TokenKind,
    pub latest: Option<Epoch>,
    pub winner: Option<WinnerHealth>,
    /// Other servers of the cluster answering on their supervisor port (`id@ip` or `ip`).
    pub live_servers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The token is secure: join a verified live server.
    Join,
    /// This instance won `epoch`: run cluster-init (and keep the lease).
    Lead { epoch: u64 },
    /// Try to win `epoch` (create its record); `why` is logged and recorded.
    Contend { epoch: u64, why: String },
    /// Someone else is starting the cluster: wait.
    Wait(String),
    /// Starting would make a second cluster behind live servers: fail (exit 1; systemd retries).
    Refuse(String),
}

/// The current winner: the latest epoch's, or the creator named by a pre-election token.
pub fn current(o: &Observed) -> Option<Epoch> {
    o.latest.clone().or_else(|| match &o.token {
        TokenKind::Election { creator: Some(c) } => Some(Epoch { number: 0, winner: c.clone(), age: None, secured: false }),
        _ => None,
    })
}

pub fn decide(o: &Observed, me: &str, lease: Duration, token_name: &str) -> Decision {
    if o.token == TokenKind::Secure {
        return Decision::Join;
    }
    let current = current(o);
    if let Some(e) = &current {
        if e.winner == me {
            return Decision::Lead { epoch: e.number };
        }
    }
    let next = current.as_ref().map_or(1, |e| e.number + 1);
    if o.token == TokenKind::Absent && fresh_winner(o, lease) {
        let e = current.as_ref().expect("a fresh winner is a current one");
        return Decision::Wait(format!("{} won election {} and is writing the join token", e.winner, e.number));
    }
    if o.token == TokenKind::Absent && !o.live_servers.is_empty() {
        return Decision::Refuse(format!(
            "parameter {token_name} is missing but server(s) {} of this cluster are live: not starting a second cluster. \
             Put the token back: on a live server read /var/lib/rancher/k3s/server/token and run \
             `aws ssm put-parameter --name {token_name} --type SecureString --value \"$(sudo cat /var/lib/rancher/k3s/server/token)\"` \
             (a live control-plane agent in `run` also republishes it)",
            o.live_servers.join(", ")
        ));
    }
    let Some(e) = current else {
        return Decision::Contend { epoch: next, why: "no election has been held for this cluster".into() };
    };
    match &o.winner {
        Some(WinnerHealth::Gone(state)) => {
            Decision::Contend { epoch: next, why: format!("the winner of election {}, {}, is {state}", e.number, e.winner) }
        }
        Some(WinnerHealth::Running { answers: false }) if e.age.is_some_and(|a| a > lease) => Decision::Contend {
            epoch: next,
            why: format!(
                "the winner of election {}, {}, has not renewed its lease for {} s (lease {} s) and no k3s answers on it",
                e.number,
                e.winner,
                e.age.unwrap_or_default().as_secs(),
                lease.as_secs()
            ),
        },
        _ => Decision::Wait(match o.token {
            TokenKind::Absent => format!("{} won election {} and is writing the join token", e.winner, e.number),
            _ => format!("{} won election {} and is starting the cluster (token not yet in k3s's secure form)", e.winner, e.number),
        }),
    }
}

/// Whether the current winner is running with a lease renewed within `lease`: it just won (or
/// is starting), and what answers on the supervisor port may be its own k3s.
pub fn fresh_winner(o: &Observed, lease: Duration) -> bool {
    let fresh = current(o).is_some_and(|e| !e.secured && e.age.is_some_and(|a| a <= lease));
    fresh && matches!(o.winner, Some(WinnerHealth::Running { .. }))
}

/// Whether the decision needs the live-server probe: the token parameter is absent and no
/// fresh winner explains it.
pub fn needs_live_check(o: &Observed, lease: Duration) -> bool {
    o.token == TokenKind::Absent && !fresh_winner(o, lease)
}

/// The epoch number of an election parameter's name (`…/election/7` → 7).
pub fn epoch_of(name: &str) -> Option<u64> {
    name.rsplit_once('/')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "i-0000000000000000a";
    const A: &str = "i-0000000000000000b";
    const LEASE: Duration = Duration::from_secs(60);
    const T: &str = "/k3s-asg/clusters/alpha/token";

    fn obs(token: TokenKind, latest: Option<(u64, &str, u64)>, winner: Option<WinnerHealth>, live: &[&str]) -> Observed {
        Observed {
            token,
            latest: latest.map(|(n, w, age)| Epoch { number: n, winner: w.into(), age: Some(Duration::from_secs(age)), secured: false }),
            winner,
            live_servers: live.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn election(by: &str) -> TokenKind {
        TokenKind::Election { creator: Some(by.into()) }
    }

    #[test]
    fn a_new_cluster_holds_election_one() {
        let d = decide(&obs(TokenKind::Absent, None, None, &[]), ME, LEASE, T);
        assert!(matches!(d, Decision::Contend { epoch: 1, .. }), "{d:?}");
    }

    #[test]
    fn a_secure_token_means_join_whatever_else() {
        let o = obs(TokenKind::Secure, Some((3, A, 9999)), Some(WinnerHealth::Gone("terminated".into())), &[]);
        assert_eq!(decide(&o, ME, LEASE, T), Decision::Join);
    }

    #[test]
    fn the_winner_leads_even_after_a_restart() {
        assert_eq!(decide(&obs(election(ME), Some((2, ME, 9999)), None, &[]), ME, LEASE, T), Decision::Lead { epoch: 2 });
        // An older agent's token with no records: its creator won epoch 0.
        assert_eq!(decide(&obs(election(ME), None, None, &[]), ME, LEASE, T), Decision::Lead { epoch: 0 });
    }

    #[test]
    fn a_live_winner_is_never_displaced() {
        // Lease fresh: wait, whatever k3s does.
        let o = obs(election(A), Some((1, A, 10)), Some(WinnerHealth::Running { answers: false }), &[]);
        assert!(matches!(decide(&o, ME, LEASE, T), Decision::Wait(_)));
        // Lease lapsed but k3s answers on the winner: still wait.
        let o = obs(election(A), Some((1, A, 600)), Some(WinnerHealth::Running { answers: true }), &[]);
        assert!(matches!(decide(&o, ME, LEASE, T), Decision::Wait(_)));
        // Epoch 0 (no lease): only EC2 can say it is gone.
        let o = obs(election(A), None, Some(WinnerHealth::Running { answers: false }), &[]);
        assert!(matches!(decide(&o, ME, LEASE, T), Decision::Wait(_)));
    }

    #[test]
    fn a_dead_or_silent_winner_is_replaced_by_the_next_epoch() {
        let o = obs(election(A), Some((1, A, 10)), Some(WinnerHealth::Gone("terminated".into())), &[]);
        match decide(&o, ME, LEASE, T) {
            Decision::Contend { epoch: 2, why } => assert!(why.contains("terminated") && why.contains(A), "{why}"),
            d => panic!("{d:?}"),
        }
        let o = obs(election(A), Some((4, A, 61)), Some(WinnerHealth::Running { answers: false }), &[]);
        assert!(matches!(decide(&o, ME, LEASE, T), Decision::Contend { epoch: 5, .. }));
        let o = obs(election(A), None, Some(WinnerHealth::Gone("stopped".into())), &[]);
        assert!(matches!(decide(&o, ME, LEASE, T), Decision::Contend { epoch: 1, .. }));
    }

    #[test]
    fn a_lost_token_never_starts_a_second_cluster() {
        let o = obs(TokenKind::Absent, None, None, &["i-0000000000000000c@127.0.0.5"]);
        match decide(&o, ME, LEASE, T) {
            Decision::Refuse(why) => assert!(why.contains(T) && why.contains("127.0.0.5") && why.contains("server/token"), "{why}"),
            d => panic!("{d:?}"),
        }
        // Elections held long ago, the token deleted, servers live: refuse too.
        let o = obs(TokenKind::Absent, Some((2, A, 99999)), Some(WinnerHealth::Running { answers: true }), &["127.0.0.5"]);
        assert!(matches!(decide(&o, ME, LEASE, T), Decision::Refuse(_)));
        // Token deleted and nothing live: a fresh election (cold start without a snapshot).
        let o = obs(TokenKind::Absent, Some((2, A, 99999)), Some(WinnerHealth::Gone("terminated".into())), &[]);
        assert!(matches!(decide(&o, ME, LEASE, T), Decision::Contend { epoch: 3, .. }));
        // Just won by someone else, who has not written the token yet: wait, even though its k3s
        // may already answer.
        let o = obs(TokenKind::Absent, Some((3, A, 1)), Some(WinnerHealth::Running { answers: false }), &["127.0.0.5"]);
        assert!(!needs_live_check(&o, LEASE));
        assert!(matches!(decide(&o, ME, LEASE, T), Decision::Wait(_)));
        // A winner that secured the token long since explains nothing: refuse at once.
        let mut o = o;
        o.latest.as_mut().unwrap().secured = true;
        assert!(needs_live_check(&o, LEASE));
        assert!(matches!(decide(&o, ME, LEASE, T), Decision::Refuse(_)));
    }

    #[test]
    fn records_and_names() {
        let r = Record { winner: A.into(), won_at: 1, renewed_at: 2, took_over: None, secured_at: None, recovery: false };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"winner":"i-0000000000000000b","won_at":1,"renewed_at":2}"#);
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
        assert_eq!(epoch_of("/k3s-asg/clusters/a/election/12"), Some(12));
        assert_eq!(epoch_of("/k3s-asg/clusters/a/election/x"), None);
        assert_eq!(TokenKind::of(None), TokenKind::Absent);
        assert_eq!(TokenKind::of(Some(&format!("K10{}::server:p", "a".repeat(64)))), TokenKind::Secure);
        assert_eq!(TokenKind::of(Some(token::new_election_token(A).expose())), election(A));
    }
}
