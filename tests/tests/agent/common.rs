//! What several of the agent's modules share: parameter names, the test-bed cluster most
//! tests start from, and who initialised a cluster.

use k3s_asg_testbed::world::{Instance, World};

pub(crate) const TOKEN: &str = "/k3s-asg/clusters/alpha/token";
pub(crate) const ADMIN: &str = "/k3s-asg/clusters/alpha/kubeconfig/admin";
pub(crate) const DRAIN: &str = "/k3s-asg/clusters/alpha/kubeconfig/drain";

async fn set_delay(w: &World, tg: &str, seconds: u32) {
    w.elb
        .modify_target_group_attributes()
        .target_group_arn(tg)
        .attributes(
            aws_sdk_elasticloadbalancingv2::types::TargetGroupAttribute::builder()
                .key("deregistration_delay.timeout_seconds")
                .value(seconds.to_string())
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// A world with cluster alpha (deregistration delay 2 s) and its first server joined:
/// `(world, server, target group ARN)`.
pub(crate) async fn cluster() -> (World, Instance, String) {
    let w = World::with_cluster("alpha").await.unwrap();
    let tg = w.target_group("alpha");
    set_delay(&w, &tg, 2).await;
    let cp = w.joined("alpha", "control-plane").await.unwrap();
    (w, cp, tg)
}

/// The servers that initialised a cluster (`cluster-init: true` in their k3s config).
pub(crate) fn initialisers(servers: &[Instance]) -> Vec<&Instance> {
    servers.iter().filter(|s| s.file("/etc/rancher/k3s/config.yaml").is_some_and(|c| c.contains("cluster-init: true"))).collect()
}

/// How many of `servers` ever began a new etcd cluster (the stub's etcd log says so at each
/// cluster-init start, whatever the server's config says now).
pub(crate) fn clusters_begun<'a>(servers: impl IntoIterator<Item = &'a Instance>) -> usize {
    servers.into_iter().filter(|s| s.etcd_log_at("initialised a new cluster").is_some()).count()
}

/// Ten servers joining at once wait for each other's etcd membership: etcd adds one learner at
/// a time and no member within 5 s of the last membership change, so each one's k3s is ready
/// only once etcd has come to it (`K3S_ASG_READY_TIMEOUT`, `K3S_ASG_JOIN_TIMEOUT`).
pub(crate) fn patient(w: &mut World) {
    w.agent_env.insert("K3S_ASG_READY_TIMEOUT".into(), "150".into());
    w.agent_env.insert("K3S_ASG_JOIN_TIMEOUT".into(), "150".into());
}
