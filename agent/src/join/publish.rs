//! What a joined server publishes for the cluster (kubeconfigs, the agent token, its API record)
//! and the registration that makes the instance routable.

use super::Joining;
use crate::error::{Error, Result};
use crate::plan::{self};
use crate::render::{self};
use crate::secret::Secret;
use crate::token;
use crate::wait::Waiter;
use k3s_asg_aws::ec2::InstanceInfo;
use k3s_asg_aws::records::{RecordChange, RecordSet};
use k3s_asg_aws::spec::AddressKind;

impl Joining<'_> {
    /// The winner of a restore deletes the Nodes the snapshot brought back of control-plane
    /// instances that no longer run: they are not etcd members any more (the reset made a
    /// one-member cluster), and counted as members they would block every quorum check.
    pub(super) async fn forget_lost_servers(&self) -> Result<()> {
        if !self.st.recovery.as_ref().is_some_and(|r| r.snapshot.is_some() && Some(r.epoch) == self.lease.map(|l| l.epoch)) {
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
    pub(super) async fn publish_kubeconfigs(&self) -> Result<()> {
        let (fx, names, spec) = (self.fx, &self.d.names, &self.d.spec);
        let refresh = self.st.recovery.as_ref().is_some_and(|r| Some(r.epoch) == self.lease.map(|l| l.epoch));
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
    pub(super) async fn publish_agent_token(&mut self) -> Result<()> {
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
    pub(super) async fn publish_api_record(&mut self) -> Result<()> {
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
    pub(super) async fn register(&mut self) -> Result<()> {
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
