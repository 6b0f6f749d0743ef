//! k3s on this host: render its config and unit (values from `crate::render`), start it through
//! systemd, wait until it is ready and the spec's readiness probes of this role pass.

use super::Joining;
use crate::error::{Error, Result};
use crate::render::{self, ConfigInputs};
use crate::secret::Secret;
use crate::vocab::Mode;
use crate::wait::Waiter;
use k3s_asg_aws::tags::Role;

/// What a readiness wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gate {
    /// k3s: the unit active and the Node Ready.
    K3s,
    /// k3s and the spec's readiness probes of this role.
    Probes,
}

/// What `render` wrote, for `start` and `ready`.
pub(super) struct Written {
    config_changed: bool,
    unit_written: bool,
    /// A node's drain kubeconfig, where one was published.
    pub(super) drain_kubeconfig: Option<std::path::PathBuf>,
}

impl Joining<'_> {
    /// Whether this server's cluster takes the agent token as its node password. k3s keeps the
    /// node password in the cluster's bootstrap data (`cred/passwd`) as the first server wrote
    /// it, and refuses to start a server whose copy changed locally and is newer ("newer than
    /// datastore": k3s-io/k3s `pkg/cluster/bootstrap.go` `ReconcileBootstrapData`;
    /// `pkg/daemons/control/deps/deps.go` `genUsers` rewrites it from `agent-token`). So:
    /// a server beginning a new cluster sets it; any other server follows what the cluster
    /// began with: the agent token parameter holding this token's agent token (published by the
    /// cluster's first server before its token was secured), or, restarting over the same
    /// datastore, what its k3s config already says ([`configures_agent_token`]). A cluster begun
    /// by an earlier release without one keeps the server password for nodes.
    fn uses_agent_token(&self, mode: Mode, token: &Secret) -> Result<bool> {
        let has_datastore = self.fx.fs.exists(crate::datastore::ETCD_MEMBER_PATH);
        let restoring = self.st.recovery.as_ref().is_some_and(|r| r.snapshot.is_some() && !r.restored);
        if mode == Mode::ClusterInit && !has_datastore && !restoring {
            return Ok(true);
        }
        if has_datastore && configures_agent_token(self.fx)? {
            return Ok(true);
        }
        let Some(published) = self.d.param(&self.d.names.agent_token) else { return Ok(false) };
        Ok(match crate::token::parse_secure(published.value.expose()) {
            Some(p) => p.password == crate::token::agent_password(crate::token::password_of(token.expose())),
            None => false,
        })
    }

    /// A joining server read the agent token parameter at discovery, possibly before the
    /// cluster's first server published it (just before it secured the token this server has
    /// waited for): read again where it was absent. One read, only then.
    pub(super) async fn refresh_agent_token(&mut self) -> Result<()> {
        let name = self.d.names.agent_token.clone();
        if self.d.params.contains_key(&name) {
            return Ok(());
        }
        if let Some(p) = self.fx.parameters.get(std::slice::from_ref(&name)).await?.remove(&name) {
            self.d.params.insert(name, p);
        }
        Ok(())
    }

    /// Renders and writes k3s's config, its unit, the drain manifest (servers) and the
    /// drain kubeconfig (nodes).
    pub(super) fn render(&mut self, mode: Mode, token: &Secret, server_url: Option<&str>) -> Result<Written> {
        let agent_token = self.d.role.is_server() && self.uses_agent_token(mode, token)?;
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
            agent_token,
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
    pub(super) async fn start(&self, w: &Written) -> Result<()> {
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
    pub(super) async fn ready(&mut self, drain_kubeconfig: Option<&std::path::Path>, gate: Gate) -> Result<()> {
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
                if fx.services.is_failed(unit).await? {
                    return Err(Error::failed("start k3s", unit, format!("systemd reports unit {unit} failed (see journalctl -u {unit})")));
                }
                format!("systemd unit {unit} is not active yet (k3s is starting)")
            } else if (role.is_server() || drain_kubeconfig.is_some()) && !fx.k3s.node_ready(self.me(), drain_kubeconfig).await? {
                format!("node {} is not Ready", self.me())
            } else if gate == Gate::K3s {
                return self.done_waiting();
            } else {
                match self.failing_probe().await {
                    None => return self.done_waiting(),
                    Some(f) => f,
                }
            };
            if self.st.waiting_for.as_deref() != Some(reason.as_str()) {
                self.st.waiting_for = Some(reason.clone());
                self.st.save(&fx.fs)?;
            }
            w.pending(reason).await.map_err(|why| Error::failed("wait for readiness", self.me(), why))?;
        }
    }

    /// Clears what `status` says the join waits for.
    fn done_waiting(&mut self) -> Result<()> {
        if self.st.waiting_for.take().is_some() {
            self.st.save(&self.fx.fs)?;
        }
        Ok(())
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
}

/// Whether the k3s config on this host sets `agent-token` (what this server's cluster uses as
/// its node password, as last configured).
pub(super) fn configures_agent_token(fx: &crate::effects::Effects) -> Result<bool> {
    Ok(fx.fs.read(render::CONFIG_PATH)?.is_some_and(|c| render::configured(&c, "agent-token").is_some()))
}
