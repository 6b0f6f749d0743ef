//! The join path (DESIGN.md "join"): every step observes, asks `plan` what to
//! do, and does only that, so a second join changes nothing.

use crate::config::AgentConfig;
use crate::effects::parameters::Param;
use crate::effects::Effects;
use crate::error::{Error, Result};
use crate::plan::{self, Mode};
use crate::render::{self, ConfigInputs};
use crate::secret::Secret;
use crate::state::State;
use crate::token;
use crate::wait::Waiter;
use k3s_asg_aws::names::check_cluster_name;
use k3s_asg_aws::spec::{AddressKind, ClusterSpec};
use k3s_asg_aws::tags::Role;
use std::collections::BTreeMap;

/// Who this instance is, from IMDSv2.
pub use k3s_asg_aws::imds::Identity;
use k3s_asg_aws::imds::IDENTITY_PATHS;

/// Who and where this instance is, from IMDS. Everything here is input the agent cannot
/// do without: an IMDS that does not answer, a 404 or a value that makes no sense is
/// bad input (exit 2) naming the metadata path; systemd restarts the agent.
pub async fn identity(fx: &Effects) -> Result<Identity> {
    let mut values = Vec::new();
    for path in IDENTITY_PATHS {
        values.push(crate::effects::metadata::required(fx.metadata.as_ref(), path).await?);
    }
    k3s_asg_aws::imds::check_identity(values)
        .map_err(|e| Error::bad_input("read instance metadata", format!("/latest/meta-data/{}", e.path), e.problem))
}

/// Cluster and role from the instance tags: IMDS when instance metadata tags
/// are on, else `ec2:DescribeTags`.
pub async fn cluster_and_role(cfg: &AgentConfig, fx: &Effects, instance_id: &str) -> Result<(String, Role)> {
    let keys = &cfg.tag_keys;
    let tags: BTreeMap<String, String> = match fx.metadata.get("tags/instance").await? {
        Some(listing) => {
            let mut tags = BTreeMap::new();
            let present = k3s_asg_aws::imds::tag_keys(&listing);
            for key in [&keys.cluster, &keys.role] {
                if present.contains(&key.as_str()) {
                    if let Some(v) = fx.metadata.get(&format!("tags/instance/{key}")).await? {
                        tags.insert(key.clone(), v);
                    }
                }
            }
            tags
        }
        None => {
            tracing::info!("instance metadata tags are off; reading tags through ec2:DescribeTags");
            fx.instances.tags(instance_id).await?
        }
    };
    let get = |key: &String| {
        tags.get(key)
            .map(|v| v.trim().to_string())
            .ok_or_else(|| Error::bad_input("read instance tags", format!("{instance_id} tag {key:?}"), "the tag is missing"))
    };
    let cluster = get(&keys.cluster)?;
    check_cluster_name(&cluster).map_err(|why| Error::bad_input("read instance tags", format!("{instance_id} tag {:?}", keys.cluster), why))?;
    let role: Role =
        get(&keys.role)?.parse().map_err(|why: String| Error::bad_input("read instance tags", format!("{instance_id} tag {:?}", keys.role), why))?;
    Ok((cluster, role))
}

/// The cluster spec from the parameters read; exit-2 errors name the parameter and field.
pub fn cluster_spec(params: &BTreeMap<String, Param>, name: &str) -> Result<ClusterSpec> {
    let param = params.get(name).ok_or_else(|| Error::bad_input("read cluster spec", name, "the parameter does not exist"))?;
    ClusterSpec::parse(name, param.value.expose())
        .map_err(|e| Error::bad_input("read cluster spec", &e.parameter, format!("field `{}`: {}", e.field, e.problem)))
}

struct Names {
    config: String,
    token: String,
    admin: String,
    drain: String,
}

pub async fn join(cfg: &AgentConfig, fx: &Effects) -> Result<State> {
    let id = identity(fx).await?;
    let (cluster, role) = cluster_and_role(cfg, fx, &id.instance_id).await?;
    tracing::info!(instance = %id.instance_id, cluster = %cluster, role = %role, "joining");
    let names = Names {
        config: cfg.prefix.cluster_config(&cluster),
        token: cfg.prefix.cluster_token(&cluster),
        admin: cfg.prefix.admin_kubeconfig(&cluster),
        drain: cfg.prefix.drain_kubeconfig(&cluster),
    };
    let mut wanted = vec![names.config.clone(), names.token.clone(), names.drain.clone()];
    if role.is_server() {
        wanted.push(names.admin.clone());
    }
    let mut params = fx.parameters.get(&wanted).await?;
    let spec = cluster_spec(&params, &names.config)?;
    for secret in [&names.token, &names.admin, &names.drain] {
        if params.get(secret).is_some_and(|p| !p.secure) {
            return Err(Error::bad_input(
                "read parameters",
                secret,
                "holds a secret but is not a SecureString; delete it (agents create it as a SecureString) or re-create it with --type SecureString",
            ));
        }
    }

    let mut st = State::begin(&fx.fs, &id.instance_id, &cluster, role, "joining")?;
    st.api_hostname = role.is_server().then(|| spec.api.hostname.clone());
    st.step(&fx.fs, "identity")?;

    // Token: a server creates the election token if there is none; whoever created it initialises.
    let existing_config = fx.fs.read(render::CONFIG_PATH)?;
    if role.is_server() && !params.contains_key(&names.token) {
        let election = token::new_election_token(&id.instance_id);
        if fx.parameters.create_secure(&names.token, &election).await? {
            tracing::info!(parameter = %names.token, "created the join token: this instance initialises the cluster");
            params.insert(names.token.clone(), Param { value: election, secure: true });
        } else {
            params.extend(fx.parameters.get(std::slice::from_ref(&names.token)).await?);
        }
    }
    let current_token = params.get(&names.token).map(|p| p.value.clone());
    let mode = plan::decide_mode(role, existing_config.as_deref(), current_token.as_ref().map_or("", |t| t.expose()), &id.instance_id);
    st.mode = Some(mode);

    let (config_token, server_url) = match mode {
        Mode::ClusterInit => {
            let t = current_token.expect("a cluster-init server holds the token it created");
            (Secret::new(token::password_of(t.expose())), None)
        }
        Mode::Join => {
            let (t, url) = wait_for_server(cfg, fx, &spec, &names, &id, &mut params, existing_config.as_deref()).await?;
            (t, Some(url))
        }
    };
    st.server_url = server_url.clone();
    st.step(&fx.fs, "token")?;

    // Render and write.
    let config = render::render_config(&ConfigInputs {
        role,
        mode,
        instance_id: &id.instance_id,
        node_ip: &id.local_ipv4,
        region: &id.region,
        zone: &id.zone,
        token: config_token.expose(),
        server_url: server_url.as_deref(),
        spec: &spec,
    });
    let config_changed = fx.fs.write_if_changed(render::CONFIG_PATH, &config, 0o600)?;
    let unit = render::unit_name(role);
    let unit_path = render::unit_path(role);
    let unit_written = if fx.fs.exists(&unit_path) { false } else { fx.fs.write_if_changed(&unit_path, &render::render_unit(role), 0o644)? };
    if role.is_server() {
        fx.fs.write_if_changed(render::DRAIN_MANIFEST_PATH, &render::render_drain_manifest(), 0o600)?;
    }
    let drain_kubeconfig = match (role, params.get(&names.drain)) {
        (Role::Node, Some(p)) => {
            fx.fs.write_if_changed(render::DRAIN_KUBECONFIG_PATH, p.value.expose(), 0o600)?;
            Some(fx.fs.path(render::DRAIN_KUBECONFIG_PATH))
        }
        _ => None,
    };
    st.step(&fx.fs, "render")?;

    // Start k3s through systemd.
    if unit_written {
        fx.services.daemon_reload().await?;
    }
    let active = fx.services.is_active(unit).await?;
    if active && config_changed {
        tracing::info!(unit, "configuration changed; restarting k3s");
        fx.services.restart(unit).await?;
    } else if !active {
        fx.services.enable_start(unit).await?;
    }
    st.step(&fx.fs, "start")?;

    // Wait for k3s and every readiness probe.
    let mut w = Waiter::new("k3s and the readiness probes", cfg.ready_timeout);
    loop {
        let reason = if !fx.services.is_active(unit).await? {
            format!("systemd unit {unit} is not active")
        } else if (role.is_server() || drain_kubeconfig.is_some()) && !fx.k3s.node_ready(&id.instance_id, drain_kubeconfig.as_deref()).await? {
            format!("node {} is not Ready", id.instance_id)
        } else {
            let mut failed = None;
            for (i, probe) in spec.readiness.iter().enumerate() {
                let url = probe.http.replace("{node_ip}", &id.local_ipv4);
                if let Err(why) = fx.probes.http(&url, probe.expect_status).await {
                    failed = Some(format!("readiness[{i}] {url} {why}"));
                    break;
                }
            }
            match failed {
                None => break,
                Some(f) => f,
            }
        };
        w.pending(reason).await.map_err(|why| Error::failed("wait for readiness", &id.instance_id, why))?;
    }
    st.step(&fx.fs, "ready")?;

    if role.is_server() {
        if mode == Mode::ClusterInit {
            secure_the_token(fx, &names, &params).await?;
        }
        publish_kubeconfigs(cfg, fx, &spec, &names, &params).await?;
        st.step(&fx.fs, "kubeconfigs")?;
        let address = match spec.api.address {
            AddressKind::Private => id.local_ipv4.clone(),
            AddressKind::Public => fx.metadata.get("public-ipv4").await?.ok_or_else(|| {
                Error::bad_input(
                    "publish API record",
                    "/latest/meta-data/public-ipv4",
                    "api.address is \"public\" but the instance has no public address",
                )
            })?,
        };
        upsert_api_record(fx, &spec, &id.instance_id, &address).await?;
        st.api_record = Some(format!("{} A {} (set {})", spec.api.hostname, address, id.instance_id));
        st.step(&fx.fs, "api-record")?;
    }

    // Register only now that the node can serve.
    let mut registered = Vec::new();
    for tg in spec.target_groups_for(role) {
        let members = fx.target_groups.members(&tg.arn).await?;
        let missing = plan::missing_registrations(&spec, role, &id.instance_id, |arn| (arn == tg.arn).then_some(members.as_slice()));
        if missing.iter().any(|m| m.arn == tg.arn) {
            fx.target_groups.register(&tg.arn, &id.instance_id, tg.port).await?;
            tracing::info!(target_group = %tg.arn, port = tg.port, "registered");
        }
        registered.push(format!("{}:{}", tg.arn, tg.port));
    }
    st.target_groups = registered;
    st.step(&fx.fs, "registered")?;
    st.phase = "ready".into();
    st.save(&fx.fs)?;
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    }
    Ok(st)
}

/// Waits for the secure join token and a server that proves it holds the cluster CA.
async fn wait_for_server(
    cfg: &AgentConfig,
    fx: &Effects,
    spec: &ClusterSpec,
    names: &Names,
    id: &Identity,
    params: &mut BTreeMap<String, Param>,
    existing_config: Option<&str>,
) -> Result<(Secret, String)> {
    let configured = plan::existing_server(existing_config);
    let mut w = Waiter::new("the join token and a live k3s server", cfg.join_timeout);
    let mut first = true;
    loop {
        if !first {
            let refresh = [names.token.clone(), names.drain.clone()];
            params.extend(fx.parameters.get(&refresh).await?);
        }
        first = false;
        let reason = match params.get(&names.token).map(|p| p.value.clone()) {
            None => format!("parameter {} does not exist yet", names.token),
            Some(t) => match token::parse_secure(t.expose()) {
                None => format!("parameter {} is not yet in k3s's secure form (the first server is starting)", names.token),
                Some(secure) => {
                    let records = fx.dns.a_records(&spec.api.hosted_zone_id, &spec.api.hostname).await?;
                    let candidates = plan::join_candidates(&records, &id.instance_id, configured.as_deref());
                    let mut found = None;
                    for ip in &candidates {
                        if fx.supervisor.verified_live(ip, &secure.ca_hash).await? {
                            found = Some(format!("https://{ip}:{}", cfg.supervisor_port));
                            break;
                        }
                    }
                    match found {
                        Some(url) => {
                            tracing::info!(server = %url, "found a live server holding the cluster CA");
                            return Ok((t, url));
                        }
                        None => format!("no live server with the cluster's CA among {} API record(s) of {}", candidates.len(), spec.api.hostname),
                    }
                }
            },
        };
        w.pending(reason).await.map_err(|why| Error::failed("wait for a server to join", &names.token, why))?;
    }
}

/// The creator replaces its election token with k3s's secure form.
async fn secure_the_token(fx: &Effects, names: &Names, params: &BTreeMap<String, Param>) -> Result<()> {
    let Some(current) = params.get(&names.token) else {
        return Ok(());
    };
    if token::parse_secure(current.value.expose()).is_some() {
        return Ok(());
    }
    let path = render::SERVER_TOKEN_PATH;
    let file = fx.fs.read(path)?.ok_or_else(|| Error::failed("secure the join token", path, "k3s has not written its token file"))?;
    let secure = Secret::new(file.trim());
    match token::parse_secure(secure.expose()) {
        Some(s) if s.password == token::password_of(current.value.expose()) => {}
        _ => return Err(Error::failed("secure the join token", path, "the token file does not hold the cluster's token in K10 form")),
    }
    fx.parameters.overwrite_secure(&names.token, &secure).await?;
    tracing::info!(parameter = %names.token, "replaced the election token with k3s's secure form");
    Ok(())
}

async fn publish_kubeconfigs(cfg: &AgentConfig, fx: &Effects, spec: &ClusterSpec, names: &Names, params: &BTreeMap<String, Param>) -> Result<()> {
    let have_admin = params.contains_key(&names.admin);
    let have_drain = params.contains_key(&names.drain);
    if have_admin && have_drain {
        return Ok(());
    }
    let k3s_yaml = fx
        .fs
        .read(render::KUBECONFIG_PATH)?
        .ok_or_else(|| Error::failed("publish kubeconfigs", render::KUBECONFIG_PATH, "k3s has not written its kubeconfig"))?;
    if !have_admin {
        let admin = Secret::new(render::admin_kubeconfig(&k3s_yaml, &spec.api.hostname));
        if fx.parameters.create_secure(&names.admin, &admin).await? {
            tracing::info!(parameter = %names.admin, "published the admin kubeconfig");
        }
    }
    if !have_drain {
        let mut w = Waiter::new("the drain service account token", cfg.ready_timeout);
        let token = loop {
            if let Some(t) = fx.k3s.drain_account_token().await? {
                break t;
            }
            w.pending(format!("secret kube-system/{} has no token yet", render::DRAIN_ACCOUNT))
                .await
                .map_err(|why| Error::failed("publish kubeconfigs", &names.drain, why))?;
        };
        let kc = render::drain_kubeconfig(&k3s_yaml, &spec.api.hostname, token.expose())
            .ok_or_else(|| Error::failed("publish kubeconfigs", render::KUBECONFIG_PATH, "no certificate-authority-data in k3s's kubeconfig"))?;
        if fx.parameters.create_secure(&names.drain, &Secret::new(kc)).await? {
            tracing::info!(parameter = %names.drain, "published the drain kubeconfig");
        }
    }
    Ok(())
}

async fn upsert_api_record(fx: &Effects, spec: &ClusterSpec, instance_id: &str, address: &str) -> Result<()> {
    let zone = &spec.api.hosted_zone_id;
    let observed = fx.dns.a_records(zone, &spec.api.hostname).await?;
    let mine = plan::own_record(instance_id, address, spec.api.ttl);
    let others = plan::other_instances(&observed, instance_id);
    let live = if others.is_empty() { Default::default() } else { fx.instances.live(&others).await? };
    let changes = plan::api_record_changes(&spec.api.hostname, &observed, &mine, &live);
    for c in &changes {
        match c {
            plan::RecordChange::Upsert { record, .. } => {
                tracing::info!(record = %spec.api.hostname, set = %record.set_identifier, "upserting own API record")
            }
            plan::RecordChange::Delete { record, .. } => {
                tracing::info!(record = %spec.api.hostname, set = %record.set_identifier, "removing API record of an instance that is not running")
            }
        }
    }
    fx.dns.change(zone, &changes).await
}
