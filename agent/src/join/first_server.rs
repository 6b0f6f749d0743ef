//! The first-server election (DESIGN.md: whoever creates the token runs `cluster-init`): the
//! latest election's winner initialises the cluster and holds a lease on it until the token is
//! secure; everyone else joins. Decisions are `crate::election`'s; this performs them.

use super::Joining;
use crate::effects::parameters::Param;
use crate::election::{self, Decision};
use crate::error::{Error, Result};
use crate::render::{self};
use crate::secret::Secret;
use crate::state::StepName;
use crate::token;
use crate::vocab::Mode;
use crate::wait::{unix_now, Waiter};

/// The election this server won and leads: its epoch, and when this agent last rewrote its
/// record (SSM's LastModifiedDate is the lease clock others read).
#[derive(Debug, Clone, Copy)]
pub(super) struct Lease {
    pub(super) epoch: u64,
    renewed: Option<std::time::Instant>,
}

impl Lease {
    pub(super) fn new(epoch: u64) -> Self {
        Lease { epoch, renewed: None }
    }

    /// Whether the record is due a rewrite: never rewritten by this agent, or a third of a lease ago.
    fn due(&self, lease: std::time::Duration) -> bool {
        self.renewed.is_none_or(|t| t.elapsed() >= lease / 3)
    }

    /// The next look rewrites the record (after a long step such as a restore).
    pub(super) fn renew_at_next_look(&mut self) {
        self.renewed = None;
    }
}

impl Joining<'_> {
    /// The parameter holding election `epoch`'s record.
    fn election_record(&self, epoch: u64) -> String {
        format!("{}/{epoch}", self.cfg.prefix.elections(&self.d.cluster))
    }

    /// Token: nodes (and servers that joined before) wait for the secure token and a verified
    /// live server. Other servers go through the first-server election (`election`): its
    /// latest winner initialises the cluster, everyone else joins it.
    pub(super) async fn token(&mut self) -> Result<(Mode, Secret, Option<String>)> {
        // Any server, joiner or not: the unit refuses to start k3s over a tombstone (a joiner's
        // k3s would move its db aside and rejoin by itself; an initialiser's would start a
        // second cluster), so the agent backs the datastore up and joins as a new member.
        if self.d.role.is_server() && crate::datastore::member_removed(self.fx) {
            self.removed_member().await?;
        }
        if !self.d.role.is_server() || self.st.mode == Some(Mode::Join) {
            return self.join_live_server().await;
        }
        let names = self.d.names.clone();
        self.adopt_running_k3s()?;
        self.left_behind().await?;
        // A recovery's winner restarted before it finished: it still holds that election.
        if let Some(r) = self.st.recovery.as_ref().filter(|r| !r.done && self.st.mode == Some(Mode::ClusterInit)) {
            self.lease = Some(Lease::new(r.epoch));
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
    pub(super) async fn observe_election(&self) -> Result<election::Observed> {
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
            observed.live_servers = crate::live::answering(self.cfg, self.fx, &self.d.cluster, &self.d.spec.api, self.me()).await?;
        }
        Ok(observed)
    }

    /// The latest election record: its epoch as observed, and the record.
    pub(super) async fn latest_election(&self) -> Result<Option<(election::Epoch, election::Record)>> {
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

    /// Creates the record of election `epoch`; on success this instance is its winner.
    pub(super) async fn contend(&mut self, epoch: u64, why: &str, recovery: bool) -> Result<bool> {
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
    pub(super) async fn lead(&mut self, epoch: u64, observed: &election::Observed) -> Result<bool> {
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
        match self.lease.as_mut() {
            Some(l) => l.epoch = epoch,
            None => self.lease = Some(Lease::new(epoch)),
        }
        self.renew_lease().await?;
        Ok(true)
    }

    /// Rewrites this winner's election record (SSM's LastModifiedDate is the lease clock), a
    /// third of a lease after the last renewal.
    pub(super) async fn renew_lease(&mut self) -> Result<()> {
        if self.lease.is_some_and(|l| !l.due(self.cfg.election_lease)) {
            return Ok(());
        }
        if let Some((name, mut record)) = self.still_winner().await? {
            record.renewed_at = unix_now();
            self.fx.parameters.overwrite_string(&name, &serde_json::to_string(&record).expect("record serialises")).await?;
            if let Some(l) = self.lease.as_mut() {
                l.renewed = Some(std::time::Instant::now());
            }
        }
        Ok(())
    }

    /// Fails when a later election was won by another server while this one was starting (its
    /// record's name and value otherwise; `None` for a pre-election token, which has no record).
    async fn still_winner(&self) -> Result<Option<(String, election::Record)>> {
        let Some(epoch) = self.lease.map(|l| l.epoch).filter(|e| *e > 0) else {
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
        crate::datastore::back_up_and_reset(self.fx, "left behind by a recovery election")?;
        self.st.mode = None;
        self.st.epoch = None;
        self.st.recovery = None;
        self.st.election = Some(format!("left behind by recovery election {} ({}); datastore reset", latest.number, record.winner));
        self.st.save(&self.fx.fs)
    }

    /// A server whose etcd member was removed (its Node deleted while it ran: by hand, or a
    /// ghost collection on a wrong EC2 answer) must never start its datastore again as
    /// `cluster-init`: k3s would begin a second cluster with the same CA and token behind the
    /// live one. Stop k3s, back the datastore up and reset it, and join as a new member (a
    /// recovery takes over only if no server of the cluster is left).
    async fn removed_member(&mut self) -> Result<()> {
        tracing::warn!(
            path = crate::datastore::TOMBSTONE_PATH,
            "this server's etcd member was removed from the cluster: resetting k3s's datastore and joining as a new member, never starting a cluster"
        );
        let unit = render::unit_name(self.d.role);
        if self.fx.services.is_active(unit).await? {
            self.fx.services.stop(unit).await?;
        }
        crate::datastore::back_up_and_reset(self.fx, "its etcd member was removed (tombstone)")?;
        self.st.mode = Some(Mode::Join);
        self.st.server_url = None;
        self.st.recovery = None;
        self.st.election = Some("etcd member removed from the cluster (tombstone); datastore reset, joining as a new member".into());
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
        crate::datastore::back_up_and_reset(self.fx, "demoted: another server won the election")?;
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
    pub(super) fn init_token(&self) -> Result<Secret> {
        let t =
            self.d.param(&self.d.names.token).ok_or_else(|| Error::failed("read the join token", &self.d.names.token, "the parameter is missing"))?;
        Ok(Secret::new(token::password_of(t.value.expose())))
    }

    /// The creator replaces its election token with k3s's secure form, and marks its election
    /// finished (a recovery from a snapshot keeps the secure token it had: only the mark).
    pub(super) async fn secure_the_token(&self) -> Result<()> {
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
}
