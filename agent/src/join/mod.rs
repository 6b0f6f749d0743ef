//! The join path (DESIGN.md "join"), as named steps: token → render → start →
//! ready → publish (control plane) → register. Each step observes, asks `plan`
//! what to do and does only that, so a second join changes nothing.

mod find_server;
mod first_server;
mod host;
mod publish;

use host::Gate;

use crate::config::AgentConfig;
use crate::discover::{discover, Discovery, Purpose};
use crate::effects::Effects;
use crate::error::{Error, Result};
use crate::state::{Phase, State, StepName};
use crate::vocab::Mode;
use crate::wait::Waiter;

/// Joins; AWS being busy or out of reach (throttling, a 5xx, a timeout: `Error::transient`,
/// after the SDK's own retries) is one more reason to wait, with backoff and jitter, within
/// `--join-timeout`: every step looks before it acts, so the join starts over where it was. Any
/// other failure ends it at once.
pub async fn join(cfg: &AgentConfig, fx: &Effects) -> Result<State> {
    let mut w = Waiter::new("AWS to answer the join's calls", cfg.join_timeout)
        .max_delay(std::time::Duration::from_secs(30))
        .first_delay(std::time::Duration::from_secs(2));
    loop {
        match join_once(cfg, fx).await {
            Err(e) if e.transient => {
                tracing::warn!(error = %e, "AWS is busy or out of reach; the join goes on after a pause");
                if let Some(mut st) = State::load(&fx.fs)? {
                    st.last_error = Some(e.to_string());
                    st.save(&fx.fs)?;
                }
                w.pending(format!("{}: {}", e.step, e.detail)).await.map_err(|_| e)?;
            }
            other => return other,
        }
    }
}

async fn join_once(cfg: &AgentConfig, fx: &Effects) -> Result<State> {
    // An instance in a warm pool configures and registers nothing (`run` waits for InService).
    if let Some(state) = fx.metadata.get("autoscaling/target-lifecycle-state").await?.filter(|s| s.trim().starts_with("Warmed:")) {
        return Err(Error::failed(
            "join",
            "/latest/meta-data/autoscaling/target-lifecycle-state",
            format!("the instance is in a warm pool ({}): it joins once put in service (`run` waits for that)", state.trim()),
        ));
    }
    let d = discover(cfg, fx, Purpose::Join).await?;
    tracing::info!(instance = %d.id.instance_id, cluster = %d.cluster, role = %d.role, "joining");
    let mut st = State::begin(&fx.fs, &d.id.instance_id, &d.cluster, d.role, Phase::Joining)?;
    st.kept_cluster = false;
    // A server that published under another name before a spec rename: that record goes once the
    // new one is published (`publish_api_record`).
    if let (true, Some(recorded)) = (d.role.is_server(), st.api_hostname.clone().zip(st.api_zone_id.clone())) {
        if !crate::api_record::is_api_name(&d.spec.api, &recorded) && st.api_record.is_some() && st.api_previous.is_none() {
            st.api_previous = Some(recorded);
            st.save(&fx.fs)?;
        }
    }
    st.api_hostname = d.role.is_server().then(|| d.spec.api.hostname.clone());
    st.step(&fx.fs, StepName::Identity)?;
    let mut j = Joining { cfg, fx, d, st, lease: None };

    let (mode, token, server_url) = j.token().await?;
    if j.d.role.is_server() && mode == Mode::Join {
        j.refresh_agent_token().await?;
    }
    j.st.mode = Some(mode);
    j.st.server_url = server_url.clone();
    j.st.step(&fx.fs, StepName::Token)?;
    let written = j.render(mode, &token, server_url.as_deref())?;
    j.st.step(&fx.fs, StepName::Render)?;
    if let Some(name) = j.st.recovery.as_ref().filter(|r| !r.restored).and_then(|r| r.snapshot.clone()) {
        j.restore(&name).await?;
        j.st.step(&fx.fs, StepName::Restored)?;
    }
    j.start(&written).await?;
    j.st.step(&fx.fs, StepName::Start)?;
    // k3s itself gates what the cluster needs (the secure token, kubeconfigs, the API record);
    // the spec's readiness probes gate only this instance's traffic (registration).
    j.ready(written.drain_kubeconfig.as_deref(), Gate::K3s).await?;
    j.st.step(&fx.fs, StepName::Ready)?;
    if j.d.role.is_server() {
        // The agent token before the secure token: a server that joins once the token is secure
        // finds the agent token too, and so configures the node password the cluster began with.
        // Never a reason to fail the join (an instance role of an earlier release may not write
        // it: nodes then keep the server token); AWS being busy still is, as everywhere.
        if let Err(e) = j.publish_agent_token().await {
            if e.transient {
                return Err(e);
            }
            tracing::warn!(error = %e, "could not publish the agent token; nodes join with the server token where their role may read it");
        }
        if mode == Mode::ClusterInit {
            j.secure_the_token().await?;
        }
        let replace = j.st.recovery.as_ref().is_some_and(|r| Some(r.epoch) == j.lease.map(|l| l.epoch));
        let published = |name: &str| j.d.params.contains_key(name);
        crate::kubeconfigs::publish(fx, &j.d.names, &j.d.spec.api.hostname, published, replace, cfg.ready_timeout).await?;
        j.st.step(&fx.fs, StepName::Kubeconfigs)?;
        j.forget_lost_servers().await?;
        j.publish_api_record().await?;
        j.st.step(&fx.fs, StepName::ApiRecord)?;
    }
    j.ready(written.drain_kubeconfig.as_deref(), Gate::Probes).await?;
    j.st.step(&fx.fs, StepName::Probes)?;
    j.register().await?;
    j.st.step(&fx.fs, StepName::Registered)?;

    let mut st = j.st;
    st.phase = Phase::Ready;
    st.quiet_since = None;
    if let Some(r) = st.recovery.as_mut() {
        r.done = true;
    }
    st.save(&fx.fs)?;
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    }
    Ok(st)
}

struct Joining<'a> {
    cfg: &'a AgentConfig,
    fx: &'a Effects,
    d: Discovery,
    st: State,
    /// The election this server won and leads (its lease to renew).
    lease: Option<first_server::Lease>,
}

impl Joining<'_> {
    fn me(&self) -> &str {
        &self.d.id.instance_id
    }
}
