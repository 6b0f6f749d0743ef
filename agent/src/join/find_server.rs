//! Finding a server to join, and recovery: wait for the secure token and a server that proves
//! the cluster CA; a server that finds none, and none that could come up, may win a recovery
//! election and bring the cluster back (decisions: `crate::recovery`).

use super::first_server::Lease;
use super::Joining;
use crate::election::{self};
use crate::error::{Error, Result};
use crate::live;
use crate::recovery;
use crate::render::{self};
use crate::secret::Secret;
use crate::state::RESTORE_ATTEMPTS;
use crate::token;
use crate::vocab::Mode;
use crate::wait::{unix_now, Waiter};
use k3s_asg_aws::records::RecordSet;
use k3s_asg_aws::tags::Role;

/// What waiting for a server found.
pub(super) enum Found {
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

impl Joining<'_> {
    /// Joins through a verified live server; a server that finds none, and none that could come
    /// up, may win a recovery instead (`recovery`).
    pub(super) async fn join_live_server(&mut self) -> Result<(Mode, Secret, Option<String>)> {
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
                            match crate::api_record::read(fx, &api.hosted_zone_id, &api.hostname).await {
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
                        let candidates = live::join_candidates(&records, self.me(), configured.as_deref());
                        let found = live::first_verified(fx, &candidates, None, &secure.ca_hash)
                            .await?
                            .map(|ip| format!("https://{ip}:{}", cfg.supervisor_port));
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
        self.lease = Some(Lease::new(epoch));
        self.renew_lease().await?;
        let recovery = match self.st.recovery.clone().filter(|r| r.epoch == epoch) {
            Some(r) => r,
            None => {
                let store = self.d.snapshot_store();
                let skip = self.st.failed_snapshots();
                // Only the cluster's own snapshots: their k3s metadata names this token's hash.
                let hash = self.d.param(&self.d.names.token).map(|t| crate::token::short_hash(t.value.expose())).unwrap_or_default();
                let found = match &store {
                    Some(s) => self.fx.snapshots.newest(s, &skip, &hash).await?,
                    None => Default::default(),
                };
                let foreign = if found.foreign.is_empty() {
                    String::new()
                } else {
                    format!(" (skipped {}: another cluster's, by their k3s token hash)", found.foreign.join(", "))
                };
                let newest = found.snapshot;
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
                    (Some(s), Some(n)) => format!("recovery election {epoch}: restored snapshot {} from {}{foreign}", n.name, s.url()),
                    (Some(s), None) => format!(
                        "recovery election {epoch}: no snapshot of this cluster in {}{foreign}: started a NEW cluster with a new token; the old cluster's state is gone",
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
        crate::datastore::back_up_and_reset(self.fx, "a recovery without a snapshot starts a new cluster")?;
        let observed = self.observe_election().await?;
        if !self.lead(epoch, &observed).await? {
            return Err(Error::failed("recover the cluster", &self.d.names.token, "the token parameter changed while recovering; starting over"));
        }
        Ok((Mode::ClusterInit, self.init_token()?, None))
    }

    /// Restores snapshot `name` into this server's (stopped) datastore.
    pub(super) async fn restore(&mut self, name: &str) -> Result<()> {
        let unit = render::unit_name(self.d.role);
        if self.fx.services.is_active(unit).await? {
            self.fx.services.stop(unit).await?;
        }
        self.renew_lease().await?;
        tracing::warn!(snapshot = name, "restoring the cluster's datastore from its snapshot (k3s server --cluster-reset)");
        if let Err(e) = self.fx.k3s.restore_snapshot(name, self.cfg.ready_timeout).await {
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
        if let Some(l) = self.lease.as_mut() {
            l.renew_at_next_look();
        }
        self.renew_lease().await
    }
}
