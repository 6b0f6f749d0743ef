//! `run`: join, watch for the signal to go, leave.
//!
//! Triggers: SIGTERM when AWS says the instance is going away (EC2 shutting down or stopping,
//! or a notice below; a SIGTERM of a restart, an upgrade or a reboot leaves k3s running and
//! exits 0); IMDS `autoscaling/target-lifecycle-state` = `Terminated`;
//! a spot `spot/instance-action`; optionally a rebalance recommendation. A
//! second SIGTERM during leave skips the remaining waits but still cleans up.
//! An instance that boots into a warm pool (`Warmed:*`) or in `Standby` waits for `InService`;
//! one that the group takes out of service after it joined (back to a warm pool on scale-in,
//! or into `Standby`) leaves (a server also wipes its datastore once its etcd member is gone)
//! and joins again when it is put back in service.

use crate::config::AgentConfig;
use crate::effects::Effects;
use crate::error::{Error, Result};
pub use crate::state::Trigger;
use crate::state::{Phase, State};
use crate::wait::Hurry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

pub const POLL: Duration = Duration::from_secs(1);

/// A target lifecycle state in which the instance must serve nothing but is not going away.
pub fn out_of_service(target_state: &str) -> bool {
    let s = target_state.trim();
    (s.starts_with("Warmed:") && s != "Warmed:Terminated") || s == "Standby"
}

/// Reads IMDS once: a reason to leave, if any. `joined`: whether this instance serves now
/// (only then is being taken out of service a reason to leave).
pub async fn notice(cfg: &AgentConfig, fx: &Effects, joined: bool) -> Result<Option<Trigger>> {
    if let Some(state) = fx.metadata.get("autoscaling/target-lifecycle-state").await? {
        match state.trim() {
            "Terminated" | "Warmed:Terminated" => return Ok(Some(Trigger::LifecycleTerminated)),
            s if joined && out_of_service(s) => return Ok(Some(Trigger::OutOfService(s.to_string()))),
            _ => {}
        }
    }
    if let Some(action) = fx.metadata.get("spot/instance-action").await? {
        return Ok(Some(Trigger::SpotInterruption(action)));
    }
    if cfg.leave_on_rebalance && fx.metadata.get("events/recommendations/rebalance").await?.is_some() {
        return Ok(Some(Trigger::Rebalance));
    }
    Ok(None)
}

pub async fn run(cfg: &AgentConfig, fx: &Effects) -> Result<()> {
    let mut term = signal(SignalKind::terminate()).map_err(|e| Error::failed("install SIGTERM handler", "", e.to_string()))?;
    loop {
        if let Err(e) = serve_once(cfg, fx, &mut term).await {
            if !heal_a_stuck_join(cfg, fx, &mut term).await? {
                return Err(e);
            }
            tracing::info!("healed the lost etcd majority; joining again");
            continue;
        }
        // Taken out of service (warm pool, Standby) and left: serve again once back in service.
        if !State::load(&fx.fs)?.is_some_and(|s| s.phase == Phase::Left && s.trigger.as_ref().is_some_and(Trigger::returns)) {
            return Ok(());
        }
        tracing::info!("left while out of service; joining again once the instance is put back in service");
    }
}

/// A server whose join failed because its etcd lost its majority (k3s is never Ready without a
/// quorum: a survivor whose agent restarted during the loss) heals here as `watch` would,
/// looking every `--token-check` seconds: `true` once it reset etcd or reset its datastore to
/// follow another survivor (join again), `false` when etcd's majority is not lost (the join's
/// error stands) or on SIGTERM.
async fn heal_a_stuck_join(cfg: &AgentConfig, fx: &Effects, term: &mut tokio::signal::unix::Signal) -> Result<bool> {
    let Some(st) = State::load(&fx.fs)? else { return Ok(false) };
    if !matches!(st.phase, Phase::Joining | Phase::Failed) || !st.role.is_some_and(|r| r.is_server()) {
        return Ok(false);
    }
    let mut gone_since = None;
    loop {
        match crate::heal::round(fx, &st.instance_id, cfg.recovery_grace, cfg.ready_timeout, &mut gone_since).await? {
            crate::heal::Outcome::Healthy => return Ok(false),
            crate::heal::Outcome::Reset | crate::heal::Outcome::Rejoin => return Ok(true),
            crate::heal::Outcome::Waiting => {}
        }
        tokio::select! {
            _ = term.recv() => return Ok(false),
            _ = tokio::time::sleep(cfg.token_check) => {}
        }
    }
}

/// Join (unless a leave is to be finished), watch, leave once.
async fn serve_once(cfg: &AgentConfig, fx: &Effects, term: &mut tokio::signal::unix::Signal) -> Result<()> {
    let resuming = State::load(&fx.fs)?.is_some_and(|s| s.phase == Phase::Leaving);
    let trigger = if resuming {
        tracing::info!("a previous leave did not finish; finishing it");
        Trigger::Resume
    } else {
        // A notice that arrives while joining ends the join: leaving comes first.
        tokio::select! {
            r = join_when_in_service(cfg, fx) => {
                r?;
                watch(cfg, fx, term).await?
            }
            _ = term.recv() => Trigger::Sigterm,
            t = next_notice(cfg, fx) => {
                tracing::warn!(trigger = ?t, "a notice arrived while joining: the join stops here");
                t
            }
        }
    };
    let trigger = if trigger == Trigger::Sigterm {
        match going_away(cfg, fx).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                tracing::info!(
                    "SIGTERM, but AWS does not say this instance is going away (no lifecycle Terminated, no spot notice, \
                     the instance is not shutting down or stopping): a restart, an upgrade or a reboot; leaving k3s running"
                );
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "SIGTERM, and AWS could not be asked whether this instance is going away; leaving k3s running");
                return Ok(());
            }
        }
    } else {
        trigger
    };
    tracing::info!(?trigger, "leaving the cluster");
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    }
    let hurry: Hurry = Arc::new(AtomicBool::new(false));
    let second = async {
        term.recv().await;
        hurry.store(true, Ordering::SeqCst);
        tracing::warn!("second SIGTERM: skipping the remaining waits, still cleaning up");
        std::future::pending::<()>().await
    };
    tokio::select! {
        r = crate::leave::leave(cfg, fx, &hurry, trigger.clone()) => r,
        _ = second => unreachable!("waits forever"),
    }
}

/// In a warm pool or in Standby, prepare nothing and wait until the instance is put in service.
async fn join_when_in_service(cfg: &AgentConfig, fx: &Effects) -> Result<()> {
    let mut logged = false;
    loop {
        let state = fx.metadata.get("autoscaling/target-lifecycle-state").await?.unwrap_or_default();
        // Terminated from the warm pool: nothing to join (the notice ends `run`).
        if !out_of_service(&state) && state.trim() != "Warmed:Terminated" {
            break;
        }
        if !logged {
            tracing::info!(state = state.trim(), "instance is out of service (warm pool or Standby); waiting for InService before joining");
            logged = true;
        }
        // Hours in a warm pool must not hit the unit's start timeout: each poll extends it.
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::ExtendTimeoutUsec(60_000_000)]);
        }
        tokio::time::sleep(POLL).await;
    }
    crate::join::join(cfg, fx).await.map(|_| ())
}

/// On SIGTERM: whether AWS says this instance is going away (a notice in IMDS, or EC2 shows it
/// shutting down, stopping or gone). Only then does a SIGTERM mean leave.
async fn going_away(cfg: &AgentConfig, fx: &Effects) -> Result<Option<Trigger>> {
    if let Some(t) = notice(cfg, fx, false).await? {
        return Ok(Some(t));
    }
    let Some(id) = crate::effects::metadata::required(fx.metadata.as_ref(), "instance-id").await? else {
        return Ok(None);
    };
    let found = fx.instances.describe(std::slice::from_ref(&id)).await?;
    Ok(match found.first().map(|i| i.state.as_str()) {
        Some(state @ ("shutting-down" | "stopping" | "stopped" | "terminated")) => {
            tracing::info!(instance = %id, state, "SIGTERM and EC2 says the instance is {state}");
            Some(Trigger::Sigterm)
        }
        // Its own instance unknown to EC2: terminated and gone.
        None => {
            tracing::info!(instance = %id, "SIGTERM and EC2 no longer knows the instance");
            Some(Trigger::Sigterm)
        }
        Some(_) => None,
    })
}

/// Polls IMDS until it gives a reason to leave (joining: being out of service is none).
async fn next_notice(cfg: &AgentConfig, fx: &Effects) -> Trigger {
    loop {
        if let Ok(Some(t)) = notice(cfg, fx, false).await {
            return t;
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn watch(cfg: &AgentConfig, fx: &Effects, term: &mut tokio::signal::unix::Signal) -> Result<Trigger> {
    tracing::info!("joined; watching for SIGTERM, lifecycle and spot notices");
    let st = State::load(&fx.fs)?;
    let server = st.as_ref().and_then(|s| s.role).is_some_and(|r| r.is_server());
    let (me, cluster) = st.map(|s| (s.instance_id, s.cluster)).unwrap_or_default();
    let mut last_guard = std::time::Instant::now();
    let mut gone_since = None;
    let next_spec_check = || std::time::Instant::now() + cfg.spec_check.mul_f64(0.8 + rand::random::<f64>() * 0.4);
    let mut spec_check_at = next_spec_check();
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(Trigger::Sigterm),
            _ = tokio::time::sleep(POLL) => {
                if server && last_guard.elapsed() >= cfg.token_check {
                    last_guard = std::time::Instant::now();
                    // Its etcd member removed while it ran (its Node deleted): k3s wrote its
                    // tombstone and exited, and its unit will not start it again. Joining again
                    // backs up the datastore and joins the live cluster as a new member.
                    if crate::datastore::member_removed(fx) && !fx.services.is_active(crate::render::unit_name(k3s_asg_aws::tags::Role::ControlPlane)).await? {
                        tracing::warn!(
                            path = crate::datastore::TOMBSTONE_PATH,
                            "this server's etcd member was removed from the cluster and k3s has stopped; joining it again as a new member"
                        );
                        if let Some(t) = join_again(cfg, fx, term).await {
                            return Ok(t);
                        }
                        continue;
                    }
                    if let Err(e) = crate::guard::check_token(cfg, fx).await {
                        tracing::warn!(error = %e, "could not check the cluster's join token; will retry");
                    }
                    // A lost etcd majority, healed here (k3s server --cluster-reset) on the
                    // survivor with the newest data once the lost voters are gone for good.
                    match crate::heal::round(fx, &me, cfg.recovery_grace, cfg.ready_timeout, &mut gone_since).await {
                        Ok(crate::heal::Outcome::Rejoin) => {
                            tracing::warn!("another server healed the cluster and this server's datastore was reset; joining it again");
                            gone_since = None;
                            if let Some(t) = join_again(cfg, fx, term).await {
                                return Ok(t);
                            }
                            continue;
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "could not check etcd's quorum; will retry"),
                    }
                    if let Err(e) = crate::nodes::collect_ghosts(fx, &me).await {
                        tracing::warn!(error = %e, "could not collect the Nodes of dead instances; will retry");
                    }
                    // The API name as now recorded (a spec edit may have renamed it since the join).
                    let host = State::load(&fx.fs).ok().flatten().and_then(|s| s.api_hostname);
                    if let Some(host) = host.as_deref() {
                        if let Err(e) = crate::kubeconfigs::refresh_admin(cfg, fx, &cluster, host).await {
                            tracing::warn!(error = %e, "could not check the published admin kubeconfig; will retry");
                        }
                    }
                } else if !server && last_guard.elapsed() >= cfg.token_check {
                    last_guard = std::time::Instant::now();
                    match crate::guard::node_rejoin_reason(cfg, fx).await {
                        Ok(Some(why)) => {
                            tracing::warn!(reason = %why, "joining the cluster again");
                            if let Some(t) = join_again(cfg, fx, term).await {
                                return Ok(t);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "could not check the node's cluster; will retry"),
                    }
                }
                if std::time::Instant::now() >= spec_check_at {
                    spec_check_at = next_spec_check();
                    // A notice or SIGTERM ends it (a removed group's draining can be long): the
                    // state file says where the instance is, and the leave undoes that.
                    tokio::select! {
                        r = crate::converge::converge(cfg, fx) => {
                            if let Err(e) = r {
                                tracing::warn!(error = %e, "could not converge to the cluster spec; will retry");
                            }
                        }
                        _ = term.recv() => return Ok(Trigger::Sigterm),
                        t = next_notice(cfg, fx) => return Ok(t),
                    }
                }
                match notice(cfg, fx, true).await {
                    Ok(Some(t)) => return Ok(t),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "could not read instance metadata; will retry"),
                }
            }
        }
    }
}

/// Joins again in place (a node whose cluster changed, a server whose member was removed or
/// whose datastore was reset to follow a healed cluster). A notice or SIGTERM still ends it:
/// leaving comes first. A failed join is retried at the next round.
async fn join_again(cfg: &AgentConfig, fx: &Effects, term: &mut tokio::signal::unix::Signal) -> Option<Trigger> {
    tokio::select! {
        r = crate::join::join(cfg, fx) => {
            if let Err(e) = r {
                tracing::warn!(error = %e, "joining again failed; will retry");
            }
            None
        }
        _ = term.recv() => Some(Trigger::Sigterm),
        t = next_notice(cfg, fx) => Some(t),
    }
}
