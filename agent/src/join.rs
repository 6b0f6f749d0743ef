//! The join path (DESIGN.md "join"), as named steps: token → render → start →
//! ready → publish (control plane) → register. Each step observes, asks `plan`
//! what to do and does only that, so a second join changes nothing.

use crate::config::AgentConfig;
use crate::discover::{discover, Discovery, Purpose};
use crate::effects::parameters::Param;
use crate::effects::Effects;
use crate::election::{self, Decision};
use crate::error::{Error, Result};
use crate::plan::{self, Mode};
use crate::recovery;
use crate::render::{self, ConfigInputs};
use crate::secret::Secret;
use crate::state::{Phase, State, StepName, RESTORE_ATTEMPTS};
use crate::token;
use crate::wait::{unix_now, Waiter};
use k3s_asg_aws::ec2::InstanceInfo;
use k3s_asg_aws::records::{RecordChange, RecordSet};
use k3s_asg_aws::spec::AddressKind;
use k3s_asg_aws::tags::Role;
use std::path::PathBuf;

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
        if !crate::converge::is_api_name(&d.spec.api, &recorded) && st.api_record.is_some() && st.api_previous.is_none() {
            st.api_previous = Some(recorded);
            st.save(&fx.fs)?;
        }
    }
    st.api_hostname = d.role.is_server().then(|| d.spec.api.hostname.clone());
    st.step(&fx.fs, StepName::Identity)?;
    let mut j = Joining { cfg, fx, d, st, lease: None, renewed: None };

    let (mode, token, server_url) = j.token().await?;
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
        if mode == Mode::ClusterInit {
            j.secure_the_token().await?;
        }
        j.publish_kubeconfigs().await?;
        // Never a reason to fail the join (an instance role of an earlier release may not write
        // it: nodes then keep the server token); AWS being busy still is, as everywhere.
        if let Err(e) = j.publish_agent_token().await {
            if e.transient {
                return Err(e);
            }
            tracing::warn!(error = %e, "could not publish the agent token; nodes join with the server token where their role may read it");
        }
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

/// What a readiness wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// k3s: the unit active and the Node Ready.
    K3s,
    /// k3s and the spec's readiness probes of this role.
    Probes,
}

/// What waiting for a server found.
enum Found {
    Server(Secret, String),
    /// This server won recovery election N.
    Recover(u64),
}

/// One look at recovery.
enum RecoveryStep {
    Join(String),
    Recover(u64),
    Wait(String),
}

/// What `render` wrote, for `start` and `ready`.
struct Written {
    config_changed: bool,
    unit_written: bool,
    /// A node's drain kubeconfig, where one was published.
    drain_kubeconfig: Option<PathBuf>,
}

struct Joining<'a> {
    cfg: &'a AgentConfig,
    fx: &'a Effects,
    d: Discovery,
    st: State,
    /// The election this server won and leads (its lease to renew).
    lease: Option<u64>,
    renewed: Option<std::time::Instant>,
}

impl Joining<'_> {
    fn me(&self) -> &str {
        &self.d.id.instance_id
    }

    /// The parameter holding election `epoch`'s record.
    fn election_record(&self, epoch: u64) -> String {
        format!("{}/{epoch}", self.cfg.prefix.elections(&self.d.cluster))
    }

    /// Token: nodes (and servers that joined before) wait for the secure token and a verified
    /// live server. Other servers go through the first-server election (`election`): its
    /// latest winner initialises the cluster, everyone else joins it.
    async fn token(&mut self) -> Result<(Mode, Secret, Option<String>)> {
        if !self.d.role.is_server() || self.st.mode == Some(Mode::Join) {
            return self.join_live_server().await;
        }
        let names = self.d.names.clone();
        self.adopt_running_k3s()?;
        self.left_behind().await?;
        // A recovery's winner restarted before it finished: it still holds that election.
        if let Some(r) = self.st.recovery.as_ref().filter(|r| !r.done && self.st.mode == Some(Mode::ClusterInit)) {
            self.lease = Some(r.epoch);
        }
        if let Some(own) = self.restarted_initialiser()? {
            return Ok((Mode::ClusterInit, own, None));
        }
        let mut w = Waiter::new("the first-server election", self.cfg.join_timeout);
        let mut first = true;
        loop {
            if !first {
                match self.fx.parameters.get(std::slice::from_ref(&names.token)).await?.remove(&names.token) {
                    Some(p) => self.d.params.insert(names.token.clone(), p),
                    None => self.d.params.remove(&names.token),
                };
            }
            first = false;
            let observed = self.observe_election().await?;
            if self.st.mode == Some(Mode::ClusterInit) && observed.token == election::TokenKind::Secure {
                // The initialiser, restarted after it secured the token.
                return Ok((Mode::ClusterInit, self.init_token()?, None));
            }
            let decision = election::decide(&observed, self.me(), self.cfg.election_lease, &names.token);
            if self.st.mode == Some(Mode::ClusterInit) && !matches!(decision, Decision::Lead { .. }) {
                self.demote(&observed).await?;
                continue;
            }
            match decision {
                Decision::Join => return self.join_live_server().await,
                Decision::Lead { epoch } => {
                    if self.lead(epoch, &observed).await? {
                        self.st.waiting_for = None;
                        return Ok((Mode::ClusterInit, self.init_token()?, None));
                    }
                }
                Decision::Contend { epoch, why } => {
                    self.contend(epoch, &why, false).await?;
                }
                Decision::Wait(reason) => {
                    self.st.waiting_for = Some(reason.clone());
                    self.st.save(&self.fx.fs)?;
                    w.pending(reason).await.map_err(|why| Error::failed("wait for the first server", &names.token, why))?;
                }
                Decision::Refuse(why) => {
                    // The probes ran after the reads: refuse only if no election and no token
                    // appeared meanwhile (a server that just won starts k3s only after both).
                    let latest_now = self.latest_election().await?.map(|(e, _)| e.number);
                    let token_now = self.fx.parameters.get(std::slice::from_ref(&names.token)).await?;
                    if token_now.contains_key(&names.token) || latest_now != observed.latest.as_ref().map(|e| e.number) {
                        tracing::info!("an election was held while this server looked for live servers; looking again");
                        continue;
                    }
                    self.st.waiting_for = Some(why.clone());
                    self.st.save(&self.fx.fs)?;
                    return Err(Error::failed("start the cluster", &names.token, why));
                }
            }
        }
    }

    /// What the election decision needs, reading only what the situation asks for.
    async fn observe_election(&self) -> Result<election::Observed> {
        let (fx, d) = (self.fx, &self.d);
        let token = election::TokenKind::of(d.param(&d.names.token).map(|p| p.value.expose()));
        let mut observed = election::Observed { token, latest: None, winner: None, live_servers: vec![] };
        if observed.token == election::TokenKind::Secure {
            return Ok(observed);
        }
        observed.latest = self.latest_election().await?.map(|(epoch, _)| epoch);
        if let Some(current) = election::current(&observed).filter(|e| e.winner != self.me()) {
            let found = fx.instances.describe(std::slice::from_ref(&current.winner)).await?;
            observed.winner = Some(match found.first() {
                None => election::WinnerHealth::Gone("not known to EC2".into()),
                Some(i) if !i.is_live() => election::WinnerHealth::Gone(i.state.clone()),
                Some(i) => {
                    // Only worth a probe once the lease has lapsed.
                    let lapsed = current.age.is_some_and(|a| a > self.cfg.election_lease);
                    let answers = match (&i.private_ip, lapsed) {
                        (Some(ip), true) => fx.supervisor.ca_hash(ip).await?.is_some(),
                        _ => false,
                    };
                    election::WinnerHealth::Running { answers }
                }
            });
        }
        if election::needs_live_check(&observed, self.cfg.election_lease) {
            observed.live_servers = self.live_servers().await?;
        }
        Ok(observed)
    }

    /// The latest election record: its epoch as observed, and the record.
    async fn latest_election(&self) -> Result<Option<(election::Epoch, election::Record)>> {
        let folder = self.cfg.prefix.elections(&self.d.cluster);
        let listed = self.fx.parameters.list(&folder).await?;
        let Some(latest) = listed.iter().filter_map(|p| Some((election::epoch_of(&p.name)?, p))).max_by_key(|(n, _)| *n) else {
            return Ok(None);
        };
        let (number, p) = latest;
        let record: election::Record = serde_json::from_str(&p.value).unwrap_or(election::Record {
            winner: "(unreadable election record)".into(),
            won_at: 0,
            renewed_at: 0,
            took_over: None,
            secured_at: None,
            recovery: false,
        });
        let age = p.last_modified.map(|t| std::time::SystemTime::now().duration_since(t).unwrap_or_default());
        Ok(Some((election::Epoch { number, winner: record.winner.clone(), age, secured: record.secured_at.is_some() }, record)))
    }

    /// Other servers of this cluster on which a k3s supervisor answers: the API records' addresses
    /// and EC2's live control-plane instances of the cluster.
    async fn live_servers(&self) -> Result<Vec<String>> {
        let (fx, d, api) = (self.fx, &self.d, &self.d.spec.api);
        let mut addresses = std::collections::BTreeMap::new();
        // Route53 busy (its budget is the account's): EC2's control-plane instances below still
        // show every server that could be live.
        let records = match fx.zones.records_named(&api.hosted_zone_id, &api.hostname, "A").await {
            Ok(r) => r,
            Err(e) if e.transient => {
                tracing::debug!(error = %e, "Route53 is busy; looking for live servers through EC2 only");
                vec![]
            }
            Err(e) => return Err(e),
        };
        for r in records {
            if r.set_identifier.as_deref() != Some(self.me()) {
                for ip in r.values() {
                    addresses.insert(ip.clone(), r.set_identifier.clone().unwrap_or_default());
                }
            }
        }
        let tags = [(self.cfg.tag_keys.cluster.clone(), d.cluster.clone()), (self.cfg.tag_keys.role.clone(), Role::ControlPlane.to_string())];
        for i in fx.instances.live_tagged(&tags).await? {
            if let (Some(ip), false) = (i.private_ip, i.id == self.me()) {
                addresses.insert(ip, i.id);
            }
        }
        let mut live = Vec::new();
        for (ip, id) in addresses {
            if fx.supervisor.ca_hash(&ip).await?.is_some() {
                live.push(if id.is_empty() { ip } else { format!("{id}@{ip}") });
            }
        }
        Ok(live)
    }

    /// Creates the record of election `epoch`; on success this instance is its winner.
    async fn contend(&mut self, epoch: u64, why: &str, recovery: bool) -> Result<bool> {
        let now = unix_now();
        let record = election::Record {
            winner: self.me().to_string(),
            won_at: now,
            renewed_at: now,
            took_over: (epoch > 1).then(|| why.to_string()),
            secured_at: None,
            recovery,
        };
        let name = self.election_record(epoch);
        if self.fx.parameters.create_string(&name, &serde_json::to_string(&record).expect("record serialises")).await? {
            self.st.election = Some(format!("won election {epoch}: {why}"));
            self.st.epoch = Some(epoch);
            if recovery {
                tracing::warn!(election = epoch, parameter = %name, reason = why, "won the recovery election: this instance brings the cluster back");
                self.st.step(&self.fx.fs, StepName::RecoveryWon)?;
            } else {
                tracing::info!(election = epoch, parameter = %name, reason = why, "won the first-server election: this instance initialises the cluster");
                self.st.step(&self.fx.fs, StepName::ElectionWon)?;
            }
            Ok(true)
        } else {
            tracing::info!(election = epoch, parameter = %name, "another server won this election first");
            Ok(false)
        }
    }

    /// The winner of `epoch` makes sure the token parameter holds its own election token and
    /// renews its lease; `false` when the token parameter appeared meanwhile (observe again).
    async fn lead(&mut self, epoch: u64, observed: &election::Observed) -> Result<bool> {
        let (fx, name) = (self.fx, self.d.names.token.clone());
        let mine = matches!(&observed.token, election::TokenKind::Election { creator: Some(c) } if c == self.me());
        if !mine {
            let t = token::new_election_token(self.me());
            match observed.token {
                election::TokenKind::Absent if !fx.parameters.create_secure(&name, &t).await? => {
                    tracing::info!(parameter = %name, "the join token appeared while this server was writing it; looking again");
                    return Ok(false);
                }
                election::TokenKind::Absent => {}
                _ => fx.parameters.overwrite_secure(&name, &t).await?,
            }
            tracing::info!(parameter = %name, election = epoch, "wrote this server's election token");
            self.d.params.insert(name.clone(), Param { value: t, secure: true, modified: None });
            self.st.step(&fx.fs, StepName::TokenWritten)?;
        }
        self.st.mode = Some(Mode::ClusterInit);
        self.st.epoch = Some(epoch);
        self.lease = Some(epoch);
        self.renew_lease().await?;
        Ok(true)
    }

    /// Rewrites this winner's election record (SSM's LastModifiedDate is the lease clock), a
    /// third of a lease after the last renewal.
    async fn renew_lease(&mut self) -> Result<()> {
        if self.renewed.is_some_and(|t| t.elapsed() < self.cfg.election_lease / 3) {
            return Ok(());
        }
        if let Some((name, mut record)) = self.still_winner().await? {
            record.renewed_at = unix_now();
            self.fx.parameters.overwrite_string(&name, &serde_json::to_string(&record).expect("record serialises")).await?;
            self.renewed = Some(std::time::Instant::now());
        }
        Ok(())
    }

    /// Fails when a later election was won by another server while this one was starting (its
    /// record's name and value otherwise; `None` for a pre-election token, which has no record).
    async fn still_winner(&self) -> Result<Option<(String, election::Record)>> {
        let Some(epoch) = self.lease.filter(|e| *e > 0) else {
            return Ok(None);
        };
        let name = self.election_record(epoch);
        let Some((current, record)) = self.latest_election().await? else {
            return Ok(None);
        };
        if current.number != epoch || record.winner != self.me() {
            return Err(Error::failed(
                "renew the election lease",
                &name,
                format!("election {} was won by {} while this server was starting; it will join as a server", current.number, current.winner),
            ));
        }
        Ok(Some((name, record)))
    }

    /// A server whose state file lost its mode (deleted, corrupt) but whose k3s was configured
    /// here and holds the cluster's current token is a member, not a newcomer: take the mode
    /// from the config it runs with (never elect or recover past its own running cluster).
    fn adopt_running_k3s(&mut self) -> Result<()> {
        if self.st.mode.is_some() {
            return Ok(());
        }
        let (Some(config), Some(own)) = (self.fx.fs.read(render::CONFIG_PATH)?, self.fx.fs.read(render::SERVER_TOKEN_PATH)?) else {
            return Ok(());
        };
        let param = self.d.param(&self.d.names.token).map(|p| p.value.expose().to_string());
        if token::parse_secure(own.trim()).is_none() || param.as_deref() != Some(own.trim()) {
            return Ok(());
        }
        let mode = match render::configured(&config, "server") {
            Some(url) => {
                self.st.server_url = Some(url);
                Mode::Join
            }
            None if config.lines().any(|l| l == "cluster-init: true") => Mode::ClusterInit,
            None => return Ok(()),
        };
        tracing::warn!(?mode, "no join mode in the state file, but k3s was configured here with the cluster's token: going on as that member");
        self.st.mode = Some(mode);
        self.st.save(&self.fx.fs)
    }

    /// A server whose cluster was recovered without it (a recovery election later than the one it
    /// joined or won, won by another: it was stopped or cut off meanwhile) must not run its old
    /// datastore next to the recovered cluster: stop k3s, wipe the datastore, join afresh.
    async fn left_behind(&mut self) -> Result<()> {
        let (Some(_), Some(mine)) = (self.st.mode, self.st.epoch) else {
            return Ok(());
        };
        let Some((latest, record)) = self.latest_election().await? else {
            return Ok(());
        };
        if latest.number <= mine || !record.recovery || record.winner == self.me() {
            return Ok(());
        }
        tracing::warn!(
            election = latest.number,
            winner = %record.winner,
            "this server's cluster was recovered without it: resetting k3s's datastore and joining the recovered cluster"
        );
        let unit = render::unit_name(self.d.role);
        if self.fx.services.is_active(unit).await? {
            self.fx.services.stop(unit).await?;
        }
        self.fx.fs.remove_dir(render::SERVER_DB_PATH)?;
        self.st.mode = None;
        self.st.epoch = None;
        self.st.recovery = None;
        self.st.election = Some(format!("left behind by recovery election {} ({}); datastore reset", latest.number, record.winner));
        self.st.save(&self.fx.fs)
    }

    /// A server that began the cluster but lost the election (its lease lapsed and another
    /// server took over): stop k3s, wipe its datastore, and go on as a joiner.
    async fn demote(&mut self, observed: &election::Observed) -> Result<()> {
        let winner = election::current(observed).map(|e| format!("{} (election {})", e.winner, e.number)).unwrap_or_else(|| "nobody yet".into());
        tracing::warn!(winner = %winner, "this server began the cluster but is no longer the election's winner: resetting k3s's datastore and joining instead");
        let unit = render::unit_name(self.d.role);
        if self.fx.services.is_active(unit).await? {
            self.fx.services.stop(unit).await?;
        }
        self.fx.fs.remove_dir(render::SERVER_DB_PATH)?;
        self.st.mode = None;
        self.st.election = Some(format!("lost to {winner}; datastore reset"));
        self.st.save(&self.fx.fs)
    }

    /// A server that initialised the cluster and whose k3s wrote its secure token keeps it,
    /// whatever the token parameter holds now, unless the parameter holds an election token
    /// (someone else may have taken over: the election decides). A missing or replaced
    /// parameter is the guard's (`guard`) to put back.
    fn restarted_initialiser(&self) -> Result<Option<Secret>> {
        if self.st.mode != Some(Mode::ClusterInit) {
            return Ok(None);
        }
        let Some(file) = self.fx.fs.read(render::SERVER_TOKEN_PATH)? else {
            return Ok(None);
        };
        if token::parse_secure(file.trim()).is_none() {
            return Ok(None);
        }
        let param = self.d.param(&self.d.names.token).map(|p| p.value.expose().to_string());
        if param.as_deref().is_some_and(|p| token::parse_secure(p).is_none()) {
            return Ok(None);
        }
        Ok(Some(Secret::new(token::password_of(file.trim()))))
    }

    /// The token a cluster-init server configures: the password part of what it holds.
    fn init_token(&self) -> Result<Secret> {
        let t =
            self.d.param(&self.d.names.token).ok_or_else(|| Error::failed("read the join token", &self.d.names.token, "the parameter is missing"))?;
        Ok(Secret::new(token::password_of(t.value.expose())))
    }

    /// Joins through a verified live server; a server that finds none, and none that could come
    /// up, may win a recovery instead (`recovery`).
    async fn join_live_server(&mut self) -> Result<(Mode, Secret, Option<String>)> {
        // The mode is recorded only once this server has a server to join (the Token step): a
        // server that restarts while waiting goes through the election again.
        let found = self.wait_for_server().await?;
        self.st.waiting_for = None;
        match found {
            Found::Server(t, url) => {
                self.st.quiet_since = None;
                if self.d.role.is_server() {
                    self.st.epoch = Some(self.latest_election().await?.map_or(0, |(e, _)| e.number));
                }
                Ok((Mode::Join, t, Some(url)))
            }
            Found::Recover(epoch) => self.recover(epoch).await,
        }
    }

    /// Waits for the secure join token and a server that proves it holds the cluster CA.
    async fn wait_for_server(&mut self) -> Result<Found> {
        let (cfg, fx, names) = (self.cfg, self.fx, self.d.names.clone());
        let api = self.d.spec.api.clone();
        let configured = self.st.server_url.clone();
        let mut w = Waiter::new("the join token and a live k3s server", cfg.join_timeout);
        let mut first = true;
        // The API records as last read, and when to read them again: Route53's request budget is
        // the whole account's (5 a second), so a waiting agent reads them once the token is
        // secure and then at most every 10–20 s, probing the servers it already knows in between
        // (those probes go to the servers, not to AWS).
        let mut records: Option<Vec<RecordSet>> = None;
        let mut read_again_at = std::time::Instant::now();
        // Waited for the token with everyone else (a boot): the first read comes 0–10 s after the
        // token turns secure, not at the same moment as the herd's.
        let mut herd = false;
        let mut spread = false;
        loop {
            if !first {
                let join_token = if self.d.role.is_server() { &names.token } else { &names.agent_token };
                let refresh = [join_token.clone(), names.drain.clone()];
                let fresh = match fx.parameters.get(&refresh).await {
                    Ok(f) => f,
                    Err(e) if e.transient => {
                        w.pending(format!("SSM is busy ({})", e.detail))
                            .await
                            .map_err(|why| Error::failed("wait for a server to join", self.d.join_token_name(), why))?;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for name in &refresh {
                    if !fresh.contains_key(name) {
                        self.d.params.remove(name);
                    }
                }
                self.d.params.extend(fresh);
                if !self.d.role.is_server() {
                    let fallback = crate::discover::server_token_fallback(fx, &names, &self.d.params).await;
                    self.d.params.extend(fallback);
                }
            }
            first = false;
            let token_name = self.d.join_token_name().to_string();
            let secure_now = self.d.param(&token_name).is_some_and(|p| token::parse_secure(p.value.expose()).is_some());
            if !secure_now && !herd {
                herd = true;
            } else if secure_now && herd && records.is_none() && read_again_at <= std::time::Instant::now() && !spread {
                spread = true;
                read_again_at = std::time::Instant::now() + std::time::Duration::from_millis(rand::random::<u64>() % 10_000);
            }
            let reason = match self.d.param(&token_name).map(|p| p.value.clone()) {
                None if token_name == names.agent_token => {
                    format!("parameter {token_name} does not exist yet (a control-plane instance publishes it once it is ready)")
                }
                None => format!("parameter {token_name} does not exist yet"),
                Some(t) => match token::parse_secure(t.expose()) {
                    None => format!("parameter {token_name} is not yet in k3s's secure form (the first server is starting)"),
                    Some(_) if records.is_none() && herd && std::time::Instant::now() < read_again_at => {
                        "the token is secure; reading the API records after a random pause (a fleet booting together spreads its Route53 reads)"
                            .to_string()
                    }
                    Some(secure) => {
                        if records.is_none() || std::time::Instant::now() >= read_again_at {
                            read_again_at = std::time::Instant::now() + std::time::Duration::from_millis(10_000 + rand::random::<u64>() % 10_000);
                            match fx.zones.records_named(&api.hosted_zone_id, &api.hostname, "A").await {
                                Ok(r) => records = Some(r),
                                Err(e) if e.transient && records.is_some() => {
                                    tracing::debug!(error = %e, "Route53 is busy; probing the servers known")
                                }
                                Err(e) if e.transient => {
                                    w.pending(format!("Route53 is busy ({})", e.detail))
                                        .await
                                        .map_err(|why| Error::failed("wait for a server to join", self.d.join_token_name(), why))?;
                                    continue;
                                }
                                Err(e) => return Err(e),
                            }
                        }
                        let records = records.clone().unwrap_or_default();
                        let candidates = plan::join_candidates(&records, self.me(), configured.as_deref());
                        let mut found = None;
                        for ip in &candidates {
                            if fx.supervisor.verified_live(ip, &secure.ca_hash).await? {
                                found = Some(format!("https://{ip}:{}", cfg.supervisor_port));
                                break;
                            }
                        }
                        let none = || format!("no live server with the cluster's CA among {} API record(s) of {}", candidates.len(), api.hostname);
                        match found {
                            Some(url) => {
                                tracing::info!(server = %url, "found a live server holding the cluster CA");
                                return Ok(Found::Server(t, url));
                            }
                            None if self.d.role.is_server() => match self.recovery_step(&secure, &records).await? {
                                RecoveryStep::Join(url) => {
                                    tracing::info!(server = %url, "found a live server holding the cluster CA (not in the API records)");
                                    return Ok(Found::Server(t, url));
                                }
                                RecoveryStep::Recover(epoch) => return Ok(Found::Recover(epoch)),
                                RecoveryStep::Wait(why) => format!("{}; {why}", none()),
                            },
                            None => none(),
                        }
                    }
                },
            };
            if self.d.role.is_server() {
                self.st.waiting_for = Some(reason.clone());
                self.st.save(&fx.fs)?;
            }
            w.pending(reason).await.map_err(|why| Error::failed("wait for a server to join", self.d.join_token_name(), why))?;
        }
    }

    /// One look at whether this server should recover its cluster (`recovery`): the servers EC2
    /// shows for the cluster, probed; the latest election; how long all has been quiet.
    async fn recovery_step(&mut self, secure: &token::SecureToken, records: &[RecordSet]) -> Result<RecoveryStep> {
        let (fx, cfg) = (self.fx, self.cfg);
        let recorded: std::collections::BTreeSet<&str> = records.iter().filter_map(|r| r.set_identifier.as_deref()).collect();
        let latest = self.latest_election().await?;
        let tags = [(cfg.tag_keys.cluster.clone(), self.d.cluster.clone()), (cfg.tag_keys.role.clone(), Role::ControlPlane.to_string())];
        let servers: Vec<_> = fx.instances.live_tagged(&tags).await?.into_iter().filter(|i| i.id != self.me()).collect();
        let mut o = recovery::Observed {
            live_servers: vec![],
            could_come_up: vec![],
            latest: latest.as_ref().map(|(e, _)| e.clone()),
            latest_is_recovery: latest.as_ref().is_some_and(|(_, r)| r.recovery),
            winner: None,
            quiet_for: std::time::Duration::ZERO,
        };
        let mut live_url = None;
        for i in &servers {
            let Some(ip) = &i.private_ip else {
                o.could_come_up.push(format!("{} ({}, no address yet)", i.id, i.state));
                continue;
            };
            if fx.supervisor.verified_live(ip, &secure.ca_hash).await? {
                o.live_servers.push(format!("{}@{ip}", i.id));
                live_url.get_or_insert_with(|| format!("https://{ip}:{}", cfg.supervisor_port));
            } else if fx.supervisor.ca_hash(ip).await?.is_some() {
                o.could_come_up.push(format!("{} (answers with another cluster's CA)", i.id));
            } else if recorded.contains(i.id.as_str()) {
                o.could_come_up.push(format!("{} ({}, holds an API record)", i.id, i.state));
            } else if o.latest.as_ref().is_some_and(|e| e.winner == i.id) {
                o.could_come_up.push(format!("{} ({}, won election {})", i.id, i.state, o.latest.as_ref().map_or(0, |e| e.number)));
            }
        }
        // This server's own k3s serving the cluster: it is a member already (never recover past it).
        if fx.supervisor.verified_live(&self.d.id.local_ipv4, &secure.ca_hash).await? {
            o.could_come_up.push(format!("{} (this server: its own k3s serves the cluster's CA)", self.me()));
        }
        if let Some(e) = o.latest.as_ref().filter(|e| e.winner != self.me()) {
            o.winner = Some(match servers.iter().find(|i| i.id == e.winner) {
                Some(_) => election::WinnerHealth::Running { answers: false },
                None => election::WinnerHealth::Gone("not running".into()),
            });
        }
        let now = unix_now();
        let quiet = o.live_servers.is_empty() && o.could_come_up.is_empty();
        let since = if quiet { Some(self.st.quiet_since.unwrap_or(now)) } else { None };
        if since != self.st.quiet_since {
            self.st.quiet_since = since;
            self.st.save(&fx.fs)?;
        }
        o.quiet_for = std::time::Duration::from_secs(now.saturating_sub(since.unwrap_or(now)));
        Ok(match recovery::decide(&o, self.me(), cfg.election_lease, cfg.recovery_grace) {
            recovery::Decision::Join => RecoveryStep::Join(live_url.expect("a live server was found")),
            recovery::Decision::Lead { epoch } => RecoveryStep::Recover(epoch),
            recovery::Decision::Wait(why) => RecoveryStep::Wait(why),
            recovery::Decision::Contend { epoch, why } => {
                if self.contend(epoch, &why, true).await? {
                    RecoveryStep::Recover(epoch)
                } else {
                    RecoveryStep::Wait(format!("another server won recovery election {epoch}"))
                }
            }
        })
    }

    /// The winner of recovery election `epoch` brings the cluster back: with the newest
    /// snapshot (restored after `render`, by k3s, with the cluster's own token, so the CA and the
    /// token stay the same), or as a new cluster with a new token where there is none.
    async fn recover(&mut self, epoch: u64) -> Result<(Mode, Secret, Option<String>)> {
        self.lease = Some(epoch);
        self.renewed = None;
        self.renew_lease().await?;
        let recovery = match self.st.recovery.clone().filter(|r| r.epoch == epoch) {
            Some(r) => r,
            None => {
                let store = self.d.snapshot_store();
                let skip = self.st.failed_snapshots();
                let newest = match &store {
                    Some(s) => self.fx.snapshots.newest(s, &skip).await?,
                    None => None,
                };
                if let (Some(s), None, false) = (&store, &newest, skip.is_empty()) {
                    // Never trade snapshots that exist for a new, empty cluster.
                    return Err(Error::failed(
                        "recover the cluster",
                        s.url(),
                        format!(
                            "every snapshot left in {} failed to restore {RESTORE_ATTEMPTS} times ({}); fix or remove them, \
                             or clear restore_failures in the state file to try them again",
                            s.url(),
                            skip.join(", ")
                        ),
                    ));
                }
                let outcome = match (&store, &newest) {
                    (Some(s), Some(n)) => format!("recovery election {epoch}: restored snapshot {} from {}", n.name, s.url()),
                    (Some(s), None) => format!(
                        "recovery election {epoch}: no snapshot in {}: started a NEW cluster with a new token; the old cluster's state is gone",
                        s.url()
                    ),
                    (None, _) => format!(
                        "recovery election {epoch}: the cluster spec has no `snapshots`: started a NEW cluster with a new token; the old cluster's state is gone"
                    ),
                };
                let r = crate::state::Recovery { epoch, snapshot: newest.map(|n| n.name), restored: false, done: false, outcome };
                self.st.recovery = Some(r.clone());
                self.st.save(&self.fx.fs)?;
                r
            }
        };
        if recovery.snapshot.is_some() {
            tracing::warn!(outcome = %recovery.outcome, "recovering the cluster from its newest snapshot");
            self.st.mode = Some(Mode::ClusterInit);
            return Ok((Mode::ClusterInit, self.init_token()?, None));
        }
        tracing::error!(outcome = %recovery.outcome, "recovering the cluster without a snapshot");
        // Whatever datastore this host has belongs to the lost cluster.
        self.fx.fs.remove_dir(render::SERVER_DB_PATH)?;
        let observed = self.observe_election().await?;
        if !self.lead(epoch, &observed).await? {
            return Err(Error::failed("recover the cluster", &self.d.names.token, "the token parameter changed while recovering; starting over"));
        }
        Ok((Mode::ClusterInit, self.init_token()?, None))
    }

    /// Restores snapshot `name` into this server's (stopped) datastore.
    async fn restore(&mut self, name: &str) -> Result<()> {
        let unit = render::unit_name(self.d.role);
        if self.fx.services.is_active(unit).await? {
            self.fx.services.stop(unit).await?;
        }
        self.renew_lease().await?;
        tracing::warn!(snapshot = name, "restoring the cluster's datastore from its snapshot (k3s server --cluster-reset)");
        if let Err(e) = self.fx.k3s.restore_snapshot(name).await {
            // Retried on the next start; a snapshot that keeps failing is set aside for the next
            // newest (never for a new cluster while snapshots remain).
            let n = self.st.restore_failures.entry(name.to_string()).or_insert(0);
            *n += 1;
            if *n >= RESTORE_ATTEMPTS {
                tracing::error!(snapshot = name, error = %e, "this snapshot failed to restore {RESTORE_ATTEMPTS} times; the next start tries the next newest");
                self.st.recovery = None;
                // Back through the recovery on the next start (this server still leads its election).
                self.st.mode = None;
            }
            self.st.save(&self.fx.fs)?;
            return Err(e);
        }
        if let Some(r) = self.st.recovery.as_mut() {
            r.restored = true;
        }
        self.renewed = None;
        self.renew_lease().await
    }

    /// Renders and writes k3s's config, its unit, the drain manifest (servers) and the
    /// drain kubeconfig (nodes).
    fn render(&mut self, mode: Mode, token: &Secret, server_url: Option<&str>) -> Result<Written> {
        let (fx, d) = (self.fx, &self.d);
        let config = render::render_config(&ConfigInputs {
            role: d.role,
            mode,
            instance_id: &d.id.instance_id,
            node_ip: &d.id.local_ipv4,
            region: &d.id.region,
            zone: &d.id.zone,
            token: token.expose(),
            server_url,
            spec: &d.spec,
            instance_type: d.instance_type.as_deref(),
            template: &d.template,
        });
        let config_changed = fx.fs.write_if_changed(render::CONFIG_PATH, &config, 0o600)?;
        let unit_path = render::unit_path(d.role);
        let unit_written = if fx.fs.exists(&unit_path) { false } else { fx.fs.write_if_changed(&unit_path, &render::render_unit(d.role), 0o644)? };
        if d.role.is_server() {
            fx.fs.write_if_changed(render::DRAIN_MANIFEST_PATH, &render::render_drain_manifest(), 0o600)?;
        }
        let drain_kubeconfig = match (d.role, d.param(&d.names.drain)) {
            (Role::Node, Some(p)) => {
                fx.fs.write_if_changed(render::DRAIN_KUBECONFIG_PATH, p.value.expose(), 0o600)?;
                Some(fx.fs.path(render::DRAIN_KUBECONFIG_PATH))
            }
            _ => None,
        };
        Ok(Written { config_changed, unit_written, drain_kubeconfig })
    }

    /// Starts k3s through systemd (restarts it when its configuration changed).
    async fn start(&self, w: &Written) -> Result<()> {
        let (services, unit) = (&self.fx.services, render::unit_name(self.d.role));
        if w.unit_written {
            services.daemon_reload().await?;
        }
        let active = services.is_active(unit).await?;
        if active && w.config_changed {
            tracing::info!(unit, "configuration changed; restarting k3s");
            services.restart(unit).await?;
        } else if !active {
            services.start(unit).await?;
        }
        Ok(())
    }

    /// Waits for k3s (the unit, the Node Ready), and with `Gate::Probes` also for every readiness
    /// probe of this role.
    async fn ready(&mut self, drain_kubeconfig: Option<&std::path::Path>, gate: Gate) -> Result<()> {
        let (fx, role) = (self.fx, self.d.role);
        let unit = render::unit_name(role);
        let what = match gate {
            Gate::K3s => "k3s to be ready",
            Gate::Probes => "the readiness probes",
        };
        let mut w = Waiter::new(what, self.cfg.ready_timeout);
        if self.lease.is_some() {
            // Look often enough to renew the election lease in time.
            w = w.max_delay((self.cfg.election_lease / 3).clamp(std::time::Duration::from_millis(200), std::time::Duration::from_secs(5)));
        }
        loop {
            self.renew_lease().await?;
            let reason = if !fx.services.is_active(unit).await? {
                format!("systemd unit {unit} is not active")
            } else if (role.is_server() || drain_kubeconfig.is_some()) && !fx.k3s.node_ready(self.me(), drain_kubeconfig).await? {
                format!("node {} is not Ready", self.me())
            } else if gate == Gate::K3s {
                return Ok(());
            } else {
                match self.failing_probe().await {
                    None => return Ok(()),
                    Some(f) => f,
                }
            };
            w.pending(reason).await.map_err(|why| Error::failed("wait for readiness", self.me(), why))?;
        }
    }

    /// The first readiness probe that fails, and how.
    async fn failing_probe(&self) -> Option<String> {
        for (i, probe) in self.d.spec.readiness.iter().enumerate().filter(|(_, p)| p.roles.contains(&self.d.role)) {
            let url = probe.http.replace("{node_ip}", &self.d.id.local_ipv4);
            if let Err(why) = self.fx.probes.http(&url, probe.expect_status).await {
                return Some(format!("readiness[{i}] {url} {why}"));
            }
        }
        None
    }

    /// The creator replaces its election token with k3s's secure form, and marks its election
    /// finished (a recovery from a snapshot keeps the secure token it had: only the mark).
    async fn secure_the_token(&self) -> Result<()> {
        let name = &self.d.names.token;
        let Some(current) = self.d.param(name) else {
            return Ok(());
        };
        if token::parse_secure(current.value.expose()).is_some() {
            // Only this server's own cluster's token marks its election finished.
            let own = self.fx.fs.read(render::SERVER_TOKEN_PATH)?;
            if own.as_deref().map(str::trim) == Some(current.value.expose()) {
                self.still_winner().await?;
                self.mark_secured().await?;
            }
            return Ok(());
        }
        // Never secure a token for a cluster that lost its election meanwhile.
        self.still_winner().await?;
        let path = render::SERVER_TOKEN_PATH;
        let file = self.fx.fs.read(path)?.ok_or_else(|| Error::failed("secure the join token", path, "k3s has not written its token file"))?;
        let secure = Secret::new(file.trim());
        match token::parse_secure(secure.expose()) {
            Some(s) if s.password == token::password_of(current.value.expose()) => {}
            _ => return Err(Error::failed("secure the join token", path, "the token file does not hold the cluster's token in K10 form")),
        }
        self.fx.parameters.overwrite_secure(name, &secure).await?;
        tracing::info!(parameter = %name, "replaced the election token with k3s's secure form");
        self.mark_secured().await
    }

    /// Marks the latest election finished when this server won it (also after a restart, when
    /// the agent no longer holds the lease it had).
    async fn mark_secured(&self) -> Result<()> {
        let Some((epoch, mut record)) = self.latest_election().await? else {
            return Ok(());
        };
        if record.winner != self.me() || record.secured_at.is_some() || epoch.number == 0 {
            return Ok(());
        }
        record.secured_at = Some(unix_now());
        let name = self.election_record(epoch.number);
        self.fx.parameters.overwrite_string(&name, &serde_json::to_string(&record).expect("record serialises")).await?;
        Ok(())
    }

    /// The winner of a restore deletes the Nodes the snapshot brought back of control-plane
    /// instances that no longer run: they are not etcd members any more (the reset made a
    /// one-member cluster), and counted as members they would block every quorum check.
    async fn forget_lost_servers(&self) -> Result<()> {
        if !self.st.recovery.as_ref().is_some_and(|r| r.snapshot.is_some() && Some(r.epoch) == self.lease) {
            return Ok(());
        }
        let servers = self.fx.k3s.control_plane_nodes().await?.into_iter().map(|(n, _)| n).collect();
        let not_running = |i: Option<&InstanceInfo>| i.is_none_or(|i| !i.is_live());
        for node in crate::guard::delete_nodes_of_dead(self.fx, self.me(), servers, not_running, usize::MAX).await? {
            tracing::info!(node = %node, "deleted the Node of a server lost before the restore");
        }
        Ok(())
    }

    /// Publishes the admin and drain kubeconfigs where they are absent; the winner of a recovery
    /// replaces them (a new cluster has a new CA and service-account token).
    async fn publish_kubeconfigs(&self) -> Result<()> {
        let (fx, names, spec) = (self.fx, &self.d.names, &self.d.spec);
        let refresh = self.st.recovery.as_ref().is_some_and(|r| Some(r.epoch) == self.lease);
        let have_admin = self.d.params.contains_key(&names.admin) && !refresh;
        let have_drain = self.d.params.contains_key(&names.drain) && !refresh;
        if have_admin && have_drain {
            return Ok(());
        }
        let k3s_yaml = fx
            .fs
            .read(render::KUBECONFIG_PATH)?
            .ok_or_else(|| Error::failed("publish kubeconfigs", render::KUBECONFIG_PATH, "k3s has not written its kubeconfig"))?;
        if !have_admin {
            let admin = Secret::new(render::admin_kubeconfig(&k3s_yaml, &spec.api.hostname));
            if refresh {
                fx.parameters.overwrite_secure(&names.admin, &admin).await?;
                tracing::info!(parameter = %names.admin, "replaced the admin kubeconfig (recovery)");
            } else if fx.parameters.create_secure(&names.admin, &admin).await? {
                tracing::info!(parameter = %names.admin, "published the admin kubeconfig");
            }
        }
        if !have_drain {
            let mut w = Waiter::new("the drain service account token", self.cfg.ready_timeout);
            let token = loop {
                if let Some(t) = fx.k3s.account_token(render::DRAIN_ACCOUNT).await? {
                    break t;
                }
                w.pending(format!("secret kube-system/{} has no token yet", render::DRAIN_ACCOUNT))
                    .await
                    .map_err(|why| Error::failed("publish kubeconfigs", &names.drain, why))?;
            };
            let kc = render::drain_kubeconfig(&k3s_yaml, &spec.api.hostname, token.expose())
                .ok_or_else(|| Error::failed("publish kubeconfigs", render::KUBECONFIG_PATH, "no certificate-authority-data in k3s's kubeconfig"))?;
            if refresh {
                fx.parameters.overwrite_secure(&names.drain, &Secret::new(kc)).await?;
                tracing::info!(parameter = %names.drain, "replaced the drain kubeconfig (recovery)");
            } else if fx.parameters.create_secure(&names.drain, &Secret::new(kc)).await? {
                tracing::info!(parameter = %names.drain, "published the drain kubeconfig");
            }
        }
        Ok(())
    }

    /// Publishes the agent token nodes join with (`token::agent_token_of` this server's secure
    /// token, as k3s writes it), when the token parameter holds that same secure token: only a
    /// server of the cluster the parameter describes speaks for it. Deterministic, so servers
    /// that publish at once write the same value; a new cluster (recovery without a snapshot)
    /// replaces it.
    async fn publish_agent_token(&mut self) -> Result<()> {
        let (fx, names) = (self.fx, self.d.names.clone());
        let Some(own) = fx.fs.read(render::SERVER_TOKEN_PATH)?.and_then(|t| token::parse_secure(t.trim())) else {
            return Ok(());
        };
        let fresh = fx.parameters.get(&[names.token.clone(), names.agent_token.clone()]).await?;
        let published = fresh.get(&names.token).and_then(|p| token::parse_secure(p.value.expose()));
        if published.as_ref() != Some(&own) {
            tracing::warn!(parameter = %names.token, "the token parameter does not hold this server's secure token: not publishing an agent token");
            return Ok(());
        }
        let want = Secret::new(token::agent_token_of(&own));
        match fresh.get(&names.agent_token) {
            Some(p) if p.value.expose() == want.expose() => {}
            None => {
                if fx.parameters.create_secure(&names.agent_token, &want).await? {
                    tracing::info!(parameter = %names.agent_token, "published the agent token nodes join with");
                }
            }
            Some(_) => {
                fx.parameters.overwrite_secure(&names.agent_token, &want).await?;
                tracing::warn!(parameter = %names.agent_token, "replaced the agent token: it belonged to another token of this cluster");
            }
        }
        Ok(())
    }

    /// Upserts this server's own API record and removes those of instances that no longer run.
    async fn publish_api_record(&mut self) -> Result<()> {
        let (fx, api) = (self.fx, &self.d.spec.api);
        let address = match api.address {
            AddressKind::Private => self.d.id.local_ipv4.clone(),
            AddressKind::Public => fx.metadata.get("public-ipv4").await?.ok_or_else(|| {
                Error::bad_input(
                    "publish API record",
                    "/latest/meta-data/public-ipv4",
                    "api.address is \"public\" but the instance has no public address",
                )
            })?,
        };
        let observed = fx.zones.records_named(&api.hosted_zone_id, &api.hostname, "A").await?;
        let mine = RecordSet::api(&api.hosted_zone_id, &api.hostname, self.me(), &address, api.ttl);
        let others = plan::other_instances(&observed, self.me());
        let live = if others.is_empty() { Default::default() } else { fx.instances.live(&others).await? };
        let changes = plan::api_record_changes(&observed, &mine, &live);
        for c in &changes {
            tracing::info!(record = %c.record().label(), action = c.action(), purpose = c.purpose(), "API record change");
        }
        // The own record in a request of its own: a stale record that another agent or the
        // coordinator deletes first must not fail it (Route53 refuses a batch whole).
        let (own, stale): (Vec<_>, Vec<_>) = changes.into_iter().partition(|c| matches!(c, RecordChange::Upsert { .. }));
        if !own.is_empty() {
            fx.zones.change(&api.hosted_zone_id, &own).await?;
        }
        fx.zones.delete_each(&api.hosted_zone_id, &stale).await?;
        self.st.api_record = Some(format!("{} A {} (set {})", api.hostname, address, self.me()));
        self.st.api_zone_id = Some(api.hosted_zone_id.clone());
        let me = self.me().to_string();
        crate::converge::forget_previous_api(fx, &mut self.st, &me, &self.d.names).await?;
        Ok(())
    }

    /// Registers into every target group of the role, only now that the node can serve.
    async fn register(&mut self) -> Result<()> {
        let (fx, d) = (self.fx, &self.d);
        // What was recorded stays recorded (a spec edited since: `run` deregisters it after
        // draining, a leave undoes it), and what is registered now is added.
        for tg in d.spec.target_groups_for(d.role) {
            let members = fx.target_groups.members(&tg.arn).await?;
            let missing = plan::missing_registrations(&d.spec, d.role, self.me(), |arn| (arn == tg.arn).then_some(members.as_slice()));
            if missing.iter().any(|m| m.arn == tg.arn) {
                fx.target_groups.register(&tg.arn, self.me(), tg.port).await?;
                tracing::info!(target_group = %tg.arn, port = tg.port, "registered");
            }
            self.st.add_registration(&tg.arn, tg.port);
        }
        Ok(())
    }
}
