//! The leave path (DESIGN.md "leave"): deregister and wait out draining →
//! delete own API record → drain → delete the Node → stop k3s → complete the
//! lifecycle action. Each step looks before it acts, so leave can run twice,
//! be interrupted anywhere, or run on a node that never joined.

use crate::config::AgentConfig;
use crate::discover::{discover, Purpose};
use crate::effects::lifecycle::WaitingHook;
use crate::effects::snapshots::SnapshotStore;
use crate::effects::Effects;
use crate::error::Result;
use crate::render;
use crate::secret::Secret;
use crate::state::{Phase, State, StepName, Trigger};
use crate::wait::{spot_deadline, Hurry, Waiter};
use k3s_asg_aws::spec::ClusterSpec;
use k3s_asg_aws::tags::Role;
use std::path::PathBuf;
use std::time::Duration;

/// The name k3s gives the last server's snapshot (before `-<node>-<time>`).
pub const FINAL_SNAPSHOT: &str = "k3s-asg-final";

/// Seconds kept back from a hook's global timeout for the steps after the quorum wait.
const LEAVE_MARGIN_S: u64 = 120;

/// Heartbeat often enough for the hook: a third of its timeout, at least every second.
pub fn heartbeat_interval(hook: &WaitingHook) -> Duration {
    Duration::from_secs((hook.heartbeat_timeout_s / 3).max(1))
}

pub async fn leave(cfg: &AgentConfig, fx: &Effects, hurry: &Hurry, trigger: Trigger) -> Result<()> {
    let d = discover(cfg, fx, Purpose::Leave).await?;
    let mut st = State::begin(&fx.fs, &d.id.instance_id, &d.cluster, d.role, Phase::Leaving)?;
    if trigger != Trigger::Resume || st.trigger.is_none() {
        st.trigger = Some(trigger);
        st.save(&fx.fs)?;
    }
    tracing::info!(instance = %d.id.instance_id, cluster = %d.cluster, role = %d.role, "leaving");

    let me = d.id.instance_id.as_str();
    let hook = fx.lifecycle.waiting_hook(me).await?;
    // The quorum guard may hold the hook as long as heartbeats can, less a margin for the
    // steps after it; without a hook, the configured bound.
    let quorum_timeout = match &hook {
        Some(h) => Duration::from_secs(h.global_timeout_s.saturating_sub(LEAVE_MARGIN_S + h.heartbeat_timeout_s).max(1)),
        None => cfg.quorum_timeout,
    };
    // A resumed leave keeps the first trigger, and with it the reclaim time.
    let deadline = st.trigger.as_ref().and_then(spot_deadline);
    if let Some(left) = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now())) {
        tracing::warn!(seconds_left = left.as_secs(), "a spot interruption: every wait of this leave is budgeted to finish before the reclaim");
    }
    // Undo what the instance was put into (the state file), and whatever the spec says now: a
    // spec edited since the join (or since `run` last converged) must not leave it registered.
    let spec = with_recorded(&d.spec, &st, d.role);
    let old_api: Vec<crate::api_record::ApiName> = st
        .api_hostname
        .clone()
        .zip(st.api_zone_id.clone())
        .into_iter()
        .chain(st.api_previous.clone())
        .filter(|n| !crate::api_record::is_api_name(&spec.api, n))
        .collect();
    let ctx = Leaving {
        fx,
        deadline,
        spec: &spec,
        old_api,
        returning: st.trigger.as_ref().is_some_and(Trigger::returns),
        role: d.role,
        instance_id: me,
        drain_kubeconfig: d.param(&d.names.drain).map(|p| p.value.clone()),
        hurry,
        quorum_timeout,
        snapshots: d.snapshot_store(),
    };
    let work = ctx.steps_through_busy_aws(&mut st);
    match &hook {
        None => work.await?,
        Some(h) => {
            tracing::info!(group = %h.group, hook = %h.hook, "a terminating lifecycle hook is waiting; heartbeating while leaving");
            tokio::pin!(work);
            let beat = async {
                loop {
                    tokio::time::sleep(heartbeat_interval(h)).await;
                    if let Err(e) = fx.lifecycle.heartbeat(h, me).await {
                        tracing::warn!(error = %e, "lifecycle heartbeat failed");
                    }
                }
            };
            tokio::select! {
                r = &mut work => r?,
                _ = beat => unreachable!("the heartbeat loop never ends"),
            }
        }
    }
    if let Some(h) = &hook {
        fx.lifecycle.complete(h, me).await?;
        tracing::info!(group = %h.group, hook = %h.hook, "completed the lifecycle action with CONTINUE");
        st.step(&fx.fs, StepName::LifecycleCompleted)?;
    }
    st.phase = Phase::Left;
    if let Some(e) = &d.spec_error {
        st.last_error = Some(format!("left from what the state file recorded (target groups, API record; drain with default timeouts): {e}"));
        tracing::warn!("left without the cluster spec: only what the state file recorded was undone");
    }
    st.target_groups.clear();
    st.api_record = None;
    st.save(&fx.fs)?;
    tracing::info!("left the cluster");
    Ok(())
}

/// A server taken out of service (not terminated) comes back later: k3s will not re-add an
/// etcd member that was removed while its `server/db` remains, so once its member is gone the
/// datastore goes, and `config.yaml` with it (no k3s start before the agent renders again can
/// begin a cluster from it); the server joins the live cluster when it returns, never
/// initialises one (`mode` is `join`). Recorded in the state file (`member_removed`), so a
/// resumed leave still wipes. Where the member was kept (quorum, or the last server), the
/// datastore stays and the server comes back as that member.
fn forget_membership(fx: &Effects, st: &mut State) -> Result<()> {
    if !st.member_removed {
        tracing::warn!("this server's etcd member was kept: keeping its datastore to come back as that member");
        return Ok(());
    }
    crate::datastore::back_up_and_reset(fx, "etcd member removed: the server joins again as a new member when it returns")?;
    fx.fs.remove_file(render::CONFIG_PATH)?;
    st.mode = Some(crate::vocab::Mode::Join);
    st.server_url = None;
    st.member_removed = false;
    st.save(&fx.fs)?;
    tracing::info!(
        path = render::SERVER_DB_PATH,
        "etcd member removed; moved the datastore aside so the server joins again as a new member when it returns"
    );
    Ok(())
}

/// The spec with every target group the state file recorded for this instance added.
fn with_recorded(spec: &ClusterSpec, st: &State, role: Role) -> ClusterSpec {
    let mut spec = spec.clone();
    for (arn, port) in st.registrations() {
        if !spec.target_groups_for(role).any(|tg| tg.arn == arn && tg.port == port) {
            spec.target_groups.push(k3s_asg_aws::spec::TargetGroupSpec { arn, port, roles: vec![role], ingress: false });
        }
    }
    spec
}

/// What the leave steps work from.
struct Leaving<'a> {
    fx: &'a Effects,
    spec: &'a ClusterSpec,
    /// The API names the state file recorded (and a rename's previous one), when the spec now
    /// names another: their records go too.
    old_api: Vec<crate::api_record::ApiName>,
    /// The instance comes back after this leave (warm pool, Standby).
    returning: bool,
    role: Role,
    instance_id: &'a str,
    drain_kubeconfig: Option<Secret>,
    hurry: &'a Hurry,
    quorum_timeout: Duration,
    snapshots: Option<SnapshotStore>,
    /// A spot reclaim's time, less a margin: every wait ends before it.
    deadline: Option<std::time::Instant>,
}

impl Leaving<'_> {
    /// `want`, or less so that it ends within `share` of the time left before a spot reclaim.
    fn budget(&self, want: Duration, share: f64) -> Duration {
        crate::wait::budget(self.deadline, want, share)
    }

    /// The steps, started over (each looks before it acts) while AWS is busy or out of reach
    /// (`Error::transient`), with backoff and jitter, for up to 10 minutes (a spot notice: 80 % of
    /// what is left); any other failure ends the leave at once.
    async fn steps_through_busy_aws(&self, st: &mut State) -> Result<()> {
        let mut w = Waiter::new("AWS to answer the leave's calls", self.budget(Duration::from_secs(600), 0.8))
            .max_delay(Duration::from_secs(15))
            .first_delay(Duration::from_secs(1))
            .hurry(self.hurry);
        loop {
            match self.steps(st).await {
                Err(e) if e.transient => {
                    tracing::warn!(error = %e, "AWS is busy or out of reach; the leave goes on after a pause");
                    w.pending(format!("{}: {}", e.step, e.detail)).await.map_err(|_| e)?;
                }
                other => return other,
            }
        }
    }

    async fn steps(&self, st: &mut State) -> Result<()> {
        let fs = &self.fx.fs;
        self.stop_a_removed_member().await?;
        self.deregister().await?;
        st.step(fs, StepName::Deregistered)?;
        // The last server going back to a warm pool or into Standby keeps its member, its
        // datastore and its API record: it is the cluster, and a server that finds its record
        // waits for it rather than recovering a new cluster behind it.
        let keep_cluster =
            self.returning && self.role.is_server() && (st.kept_cluster || crate::nodes::last_member(self.fx, self.role, self.instance_id).await?);
        if keep_cluster {
            st.kept_cluster = true;
            tracing::warn!(
                "the last server of the cluster is taken out of service: keeping its etcd member, datastore and API record \
                 (the cluster is down until it, or a recovery, brings it back)"
            );
            st.last_error = Some("the last server left service: its member, datastore and API record were kept".into());
            st.save(fs)?;
        }
        if self.role.is_server() && !keep_cluster {
            self.remove_api_record().await?;
            st.step(fs, StepName::ApiRecordRemoved)?;
        }
        // Drain, delete the Node, stop k3s — only where k3s was set up here.
        let unit = render::unit_name(self.role);
        let configured = fs.exists(render::CONFIG_PATH);
        let active = self.fx.services.is_active(unit).await?;
        if configured && active {
            if let Some(kubeconfig) = self.api_access()? {
                crate::nodes::drain(self.fx, self.instance_id, kubeconfig.as_deref(), &self.spec.drain, |t| self.budget(t, 0.8), self.hurry).await;
                st.step(fs, StepName::Drained)?;
                if self.role.is_server() && self.final_snapshot(st).await? {
                    st.step(fs, StepName::FinalSnapshot)?;
                }
                if keep_cluster {
                    // Nothing to remove: see above.
                } else if self.role.is_server()
                    && !crate::nodes::quorum_allows_removal(
                        self.fx,
                        self.instance_id,
                        st,
                        self.quorum_timeout,
                        self.budget(self.quorum_timeout, 0.8),
                        self.hurry,
                    )
                    .await?
                {
                    tracing::error!(
                        node = self.instance_id,
                        "not deleting this server's Node (and so its etcd member): quorum would be lost; \
                         remove the member by hand once the control plane is healthy"
                    );
                    st.last_error = Some("etcd member kept: removing it would have lost quorum".into());
                } else {
                    self.fx.k3s.delete_node(self.instance_id, kubeconfig.as_deref()).await?;
                    if self.role.is_server()
                        && !crate::nodes::member_removed(self.fx, self.instance_id, self.budget(Duration::from_secs(120), 0.8), self.hurry).await?
                    {
                        tracing::error!(
                            node = self.instance_id,
                            "etcd still lists this server's member after its Node was deleted; stopping k3s anyway \
                             (check the cluster's etcd members once the control plane is healthy)"
                        );
                    }
                    st.member_removed = self.role.is_server();
                    st.step(fs, StepName::NodeDeleted)?;
                }
            }
        }
        // Stopped wherever it was set up, active or not: a server whose member was removed
        // exits on its own and waits in systemd's automatic restart (not "active"), and
        // restarted it would find its tombstone and join the cluster again as a new member.
        if active || configured {
            self.fx.services.stop(unit).await?;
        }
        st.step(fs, StepName::K3sStopped)?;
        if self.returning && self.role.is_server() {
            forget_membership(self.fx, st)?;
        }
        Ok(())
    }

    /// A server whose etcd member is already gone (a leave cut short after deleting its Node),
    /// or whose k3s has exited (k3s exits when its member is removed, and systemd restarts it
    /// within seconds), has its k3s stopped before anything else: restarted, k3s would find its
    /// tombstone and join the cluster again as a new member while this leave drains.
    async fn stop_a_removed_member(&self) -> Result<()> {
        if !self.role.is_server() || !self.fx.fs.exists(render::CONFIG_PATH) {
            return Ok(());
        }
        let unit = render::unit_name(self.role);
        let exited = !self.fx.services.is_active(unit).await?;
        let removed =
            !exited && crate::nodes::etcd_members(self.fx).await?.is_some_and(|members| !members.iter().any(|m| m.node() == self.instance_id));
        if exited || removed {
            tracing::info!(exited, removed, "stopping k3s first: its etcd member is gone or it has exited, so it must not restart");
            self.fx.services.stop(unit).await?;
        }
        Ok(())
    }

    /// Deregisters from every group of the role (the spec's and the recorded), then waits until
    /// the groups report it gone or their delay has passed (a quarter of a spot notice's time).
    async fn deregister(&self) -> Result<()> {
        let groups: Vec<(String, u16)> = self.spec.target_groups_for(self.role).map(|tg| (tg.arn.clone(), tg.port)).collect();
        crate::membership::remove(self.fx, &groups, self.instance_id, |delay| self.budget(delay, 0.25), Some(self.hurry)).await
    }

    /// Deletes this server's own API record (under the spec's name, and under the name the state
    /// file recorded when the spec was renamed since).
    async fn remove_api_record(&self) -> Result<()> {
        let api = &self.spec.api;
        if api.hosted_zone_id.is_empty() && self.old_api.is_empty() {
            tracing::error!("no API record to remove: the spec cannot be read and the state file recorded no hosted zone");
            return Ok(());
        }
        let current = (!api.hosted_zone_id.is_empty()).then(|| (api.hostname.clone(), api.hosted_zone_id.clone()));
        let names: Vec<_> = current.into_iter().chain(self.old_api.clone()).collect();
        crate::api_record::remove(self.fx, &names, self.instance_id).await
    }

    /// How this instance reaches the API to drain itself: `Some(None)` for a server (its own
    /// API), `Some(Some(path))` for a node with a drain kubeconfig, `None` when it cannot.
    fn api_access(&self) -> Result<Option<Option<PathBuf>>> {
        match (self.role, &self.drain_kubeconfig) {
            (Role::ControlPlane, _) => Ok(Some(None)),
            (Role::Node, Some(kc)) => {
                self.fx.fs.write_if_changed(render::DRAIN_KUBECONFIG_PATH, kc.expose(), 0o600)?;
                Ok(Some(Some(self.fx.fs.path(render::DRAIN_KUBECONFIG_PATH))))
            }
            (Role::Node, None) => {
                tracing::warn!("no drain kubeconfig published; the node cannot drain itself");
                Ok(None)
            }
        }
    }

    /// The last server of a cluster with snapshots saves one to S3 and waits for it, so that
    /// scaling the control plane back from zero restores it. `true` when it saved one.
    async fn final_snapshot(&self, st: &mut State) -> Result<bool> {
        let Some(store) = &self.snapshots else {
            return Ok(false);
        };
        // The last healthy voter that stays, as etcd sees it: a member without a leader (a lost
        // server's) cannot take a snapshot, a learner holds no vote, and servers their group
        // terminates with this one (a scale to zero at once) may each be gone before any of
        // them is last: then each saves one.
        let members = crate::nodes::etcd_members(self.fx).await?.unwrap_or_default();
        let others: Vec<String> =
            members.iter().filter(|m| m.node() != self.instance_id && !m.learner && m.healthy).map(|m| m.node().to_string()).collect();
        if !others.is_empty() {
            let going = self.fx.lifecycle.terminating(&others).await?;
            if others.iter().any(|n| !going.contains(n)) {
                return Ok(false);
            }
        }
        tracing::info!(store = %store.url(), "the last server of the cluster: saving an etcd snapshot before going");
        let mut w = Waiter::new("the final etcd snapshot", self.budget(Duration::from_secs(600), 0.8)).hurry(self.hurry);
        loop {
            match self.fx.k3s.save_snapshot(FINAL_SNAPSHOT, store, self.budget(Duration::from_secs(600), 0.8)).await {
                Ok(()) => {
                    tracing::info!(store = %store.url(), "saved the final etcd snapshot");
                    return Ok(true);
                }
                Err(e) => {
                    if w.pending(e.to_string()).await.is_err() {
                        tracing::error!(error = %e, "could not save the final etcd snapshot; the newest scheduled one is what a recovery will restore");
                        st.last_error = Some(format!("final snapshot not saved: {e}"));
                        return Ok(false);
                    }
                }
            }
        }
    }
}
