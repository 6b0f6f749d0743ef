//! What a joined server publishes for the cluster (kubeconfigs, the agent token, its API record)
//! and the registration that makes the instance routable.

use super::Joining;
use crate::api_record;
use crate::error::Result;
use crate::render::{self};
use crate::secret::Secret;
use crate::token;

impl Joining<'_> {
    /// The winner of a restore deletes the Nodes the snapshot brought back of control-plane
    /// instances that no longer run: they are not etcd members any more (the reset made a
    /// one-member cluster), and counted as members they would block every quorum check.
    pub(super) async fn forget_lost_servers(&self) -> Result<()> {
        if !self.st.recovery.as_ref().is_some_and(|r| r.snapshot.is_some() && Some(r.epoch) == self.lease.map(|l| l.epoch)) {
            return Ok(());
        }
        crate::nodes::forget_lost_servers(self.fx, self.me()).await
    }

    /// Publishes the agent token nodes join with (`token::agent_token_of` this server's secure
    /// token, as k3s writes it), when this server's cluster uses it (its k3s config sets it: it
    /// began with one) and the token parameter holds this server's token (in the election's
    /// form or the secure one): only a server of the cluster the parameter describes speaks for
    /// it. A cluster's first server publishes it before it secures the token, so a server that
    /// sees the secure token sees the agent token too. Deterministic, so servers that publish at
    /// once write the same value; a new cluster (recovery without a snapshot) replaces it.
    pub(super) async fn publish_agent_token(&mut self) -> Result<()> {
        let (fx, names) = (self.fx, self.d.names.clone());
        if !super::host::configures_agent_token(fx)? {
            if self.d.param(&names.agent_token).is_none() {
                tracing::info!(
                    parameter = %names.agent_token,
                    "this cluster began without an agent token (an earlier release): its node password stays the server token's, \
                     and nodes join with the server token (README: Existing clusters)"
                );
            }
            return Ok(());
        }
        let Some(own) = fx.fs.read(render::SERVER_TOKEN_PATH)?.and_then(|t| token::parse_secure(t.trim())) else {
            return Ok(());
        };
        let fresh = fx.parameters.get(&[names.token.clone(), names.agent_token.clone()]).await?;
        if fresh.get(&names.token).map(|p| token::password_of(p.value.expose())) != Some(own.password.as_str()) {
            tracing::warn!(parameter = %names.token, "the token parameter does not hold this server's token: not publishing an agent token");
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

    /// Publishes this server's own API record and removes those of instances that no longer run;
    /// then finishes a rename's cleanup (the record under the previous name).
    pub(super) async fn publish_api_record(&mut self) -> Result<()> {
        let (fx, me) = (self.fx, self.d.id.instance_id.clone());
        let address = api_record::address(fx, &self.d.spec.api, Some(&self.d.id.local_ipv4)).await?;
        api_record::publish(fx, &self.d.spec.api, &me, &address, &mut self.st).await?;
        api_record::finish_rename(fx, &mut self.st, &me, &self.d.names).await
    }

    /// Registers into every target group of the role, only now that the node can serve.
    pub(super) async fn register(&mut self) -> Result<()> {
        let me = self.d.id.instance_id.clone();
        crate::membership::ensure(self.fx, &self.d.spec, self.d.role, &me, &mut self.st).await
    }
}
