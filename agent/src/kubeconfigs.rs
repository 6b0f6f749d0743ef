//! The kubeconfigs, one home: the admin and drain kubeconfigs a control-plane agent publishes
//! into SSM (`{prefix}/clusters/{c}/kubeconfig/{admin,drain}`), pointing at the API hostname.
//! A join publishes them where absent ([`publish`]; a recovery's winner replaces them), `run`
//! replaces an ageing admin kubeconfig ([`refresh_admin`]), and a rename of the API points
//! them at the new name ([`repoint`]). Each looks before it writes: run twice, it writes once.

use crate::config::AgentConfig;
use crate::discover::Names;
use crate::effects::Effects;
use crate::error::{Error, Result};
use crate::render;
use crate::secret::Secret;
use crate::wait::Waiter;
use std::time::Duration;

/// A published kubeconfig pointed at `new_host` where it names `old_host` as its server;
/// `None` when it does not (nothing to write).
pub fn repointed(kubeconfig: &str, old_host: &str, new_host: &str) -> Option<String> {
    let (was, now) = (format!("https://{old_host}:"), format!("https://{new_host}:"));
    kubeconfig.contains(&was).then(|| kubeconfig.replace(&was, &now))
}

/// Whether a server replaces the published admin kubeconfig: it is `max_age` old or older and
/// this server's own differs (the same one is never rewritten; once replaced it is young again).
pub fn admin_due(age: Duration, max_age: Duration, mine: &Secret, published: &Secret) -> bool {
    age >= max_age && mine != published
}

/// Publishes the admin and drain kubeconfigs where they are absent (`published` says which are
/// there); with `replace` (the winner of a recovery) it replaces them (a new cluster has a new
/// CA and service-account token). The drain token waits up to `timeout`.
pub async fn publish(
    fx: &Effects,
    names: &Names,
    api_hostname: &str,
    published: impl Fn(&str) -> bool,
    replace: bool,
    timeout: Duration,
) -> Result<()> {
    let refresh = replace;
    let have_admin = published(&names.admin) && !refresh;
    let have_drain = published(&names.drain) && !refresh;
    if have_admin && have_drain {
        return Ok(());
    }
    let k3s_yaml = fx
        .fs
        .read(render::KUBECONFIG_PATH)?
        .ok_or_else(|| Error::failed("publish kubeconfigs", render::KUBECONFIG_PATH, "k3s has not written its kubeconfig"))?;
    if !have_admin {
        let admin = Secret::new(render::admin_kubeconfig(&k3s_yaml, api_hostname));
        if refresh {
            fx.parameters.overwrite_secure(&names.admin, &admin).await?;
            tracing::info!(parameter = %names.admin, "replaced the admin kubeconfig (recovery)");
        } else if fx.parameters.create_secure(&names.admin, &admin).await? {
            tracing::info!(parameter = %names.admin, "published the admin kubeconfig");
        }
    }
    if !have_drain {
        let mut w = Waiter::new("the drain service account token", timeout);
        let token = loop {
            if let Some(t) = fx.k3s.account_token(render::DRAIN_ACCOUNT).await? {
                break t;
            }
            w.pending(format!("secret kube-system/{} has no token yet", render::DRAIN_ACCOUNT))
                .await
                .map_err(|why| Error::failed("publish kubeconfigs", &names.drain, why))?;
        };
        let kc = render::drain_kubeconfig(&k3s_yaml, api_hostname, token.expose())
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

/// Replaces the published admin kubeconfig with this server's when the published one is older
/// than `max_age` (k3s's client certificates last a year, and k3s renews a server's own within
/// 90 days of expiry, when it restarts) and this server's differs. Once replaced, it is young
/// again: servers with different certificates do not take turns.
pub async fn refresh_admin(cfg: &AgentConfig, fx: &Effects, cluster: &str, api_hostname: &str) -> Result<bool> {
    let Some(k3s_yaml) = fx.fs.read(render::KUBECONFIG_PATH)? else {
        return Ok(false);
    };
    let name = cfg.prefix.admin_kubeconfig(cluster);
    let Some(published) = fx.parameters.get(std::slice::from_ref(&name)).await?.remove(&name) else {
        return Ok(false);
    };
    let age = published.modified.and_then(|t| std::time::SystemTime::now().duration_since(t).ok()).unwrap_or_default();
    let mine = Secret::new(render::admin_kubeconfig(&k3s_yaml, api_hostname));
    if !admin_due(age, cfg.kubeconfig_max_age, &mine, &published.value) {
        return Ok(false);
    }
    fx.parameters.overwrite_secure(&name, &mine).await?;
    tracing::info!(parameter = %name, age_days = age.as_secs() / 86_400, "replaced the published admin kubeconfig with this server's (its client certificate was getting old)");
    Ok(true)
}

/// Points the published kubeconfigs that name `old_host` at `new_host` (an API rename).
pub async fn repoint(fx: &Effects, names: &Names, old_host: &str, new_host: &str) -> Result<()> {
    for name in [&names.admin, &names.drain] {
        let Some(p) = fx.parameters.get(std::slice::from_ref(name)).await?.remove(name) else {
            continue;
        };
        if let Some(now) = repointed(p.value.expose(), old_host, new_host) {
            fx.parameters.overwrite_secure(name, &Secret::new(now)).await?;
            tracing::info!(parameter = %name, "pointed the published kubeconfig at the new API name");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_repoints_only_kubeconfigs_naming_the_old_host() {
        let kc = "clusters:\n- cluster:\n    server: https://api.a.example.com:6443\n";
        assert_eq!(
            repointed(kc, "api.a.example.com", "api2.a.example.com").as_deref(),
            Some("clusters:\n- cluster:\n    server: https://api2.a.example.com:6443\n")
        );
        assert_eq!(repointed(kc, "api.b.example.com", "api2.a.example.com"), None, "another name: left alone");
        // A longer name that starts with the old one is not the old one.
        assert_eq!(repointed("server: https://api.a.example.com.internal:6443", "api.a.example.com", "x"), None);
    }

    #[test]
    fn the_admin_kubeconfig_is_replaced_only_when_old_and_different() {
        let (mine, theirs) = (Secret::new("mine"), Secret::new("theirs"));
        let day = Duration::from_secs(86_400);
        assert!(admin_due(day * 300, day * 275, &mine, &theirs));
        assert!(!admin_due(day * 300, day * 275, &mine, &mine.clone()), "the same one is never rewritten");
        assert!(!admin_due(day * 10, day * 275, &mine, &theirs), "young: kept");
    }
}
