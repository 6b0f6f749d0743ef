//! The Cluster Autoscaler sees AWS nodes (issue 16): providerID aws:///<zone>/<id>, the
//! instance-type label, k3s's cloud controller off on servers, and the group's node-template
//! tags rendered as the instance's labels and taints, with one AWS call more per join.

use k3s_asg_testbed::check::ok;
use k3s_asg_testbed::world::{Instance, World};
use std::collections::BTreeMap;

const GROUP: &str = "alpha-gpu-nodes";

/// Puts the instance in an Auto Scaling group as IMDS instance tags show it.
fn in_group(inst: &Instance, group: &str) {
    let tags: BTreeMap<String, String> = [("Cluster", inst.cluster.as_str()), ("Role", inst.role.as_str()), ("aws:autoscaling:groupName", group)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    inst.imds.set_tags(Some(tags));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_carry_aws_identity_and_their_groups_template() {
    let w = World::with_cluster("alpha").await.unwrap();
    let cp = w.joined("alpha", "control-plane").await.unwrap();
    let server = cp.k3s_config();
    assert!(server.contains("disable-cloud-controller: true\n"), "{server}");
    assert!(server.contains(&format!("  - \"provider-id=aws:///us-east-1a/{}\"", cp.id)), "{server}");
    assert!(server.contains("  - \"node.kubernetes.io/instance-type=t3.medium\""), "{server}");

    w.asg.set_group_tags(
        GROUP,
        &[
            ("k8s.io/cluster-autoscaler/enabled", "true"),
            ("k8s.io/cluster-autoscaler/node-template/label/nvidia.com/gpu.present", "true"),
            ("k8s.io/cluster-autoscaler/node-template/label/pool", "gpu"),
            ("k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu", "true:NoSchedule"),
        ],
    );
    let node = w.launch("alpha", "node").await.unwrap();
    in_group(&node, GROUP);
    w.recorder.clear();
    ok(&w.agent(&node, &["join"]).await.unwrap());
    let cfg = node.k3s_config();
    for line in [
        format!("  - \"provider-id=aws:///us-east-1a/{}\"", node.id),
        "  - \"node.kubernetes.io/instance-type=t3.medium\"".to_string(),
        "  - \"nvidia.com/gpu.present=true\"".to_string(),
        "  - \"pool=gpu\"".to_string(),
        "node-taint:\n  - \"nvidia.com/gpu=true:NoSchedule\"".to_string(),
    ] {
        assert!(cfg.contains(&line), "{line:?} missing from:\n{cfg}");
    }
    assert!(!cfg.contains("disable-cloud-controller"), "a server key never reaches a node");
    let tag_reads = w.recorder.calls_by(&node.access_key()).iter().filter(|c| c.operation == "DescribeTags").count();
    assert_eq!(tag_reads, 1, "one autoscaling:DescribeTags per join");
    k3s_asg_testbed::reliability::held(
        "Autoscaler",
        "a node of a group with node-template label and taint tags joins",
        1,
        "providerID aws:///zone/id, instance-type label, the group's labels and taints in config.yaml; one DescribeTags",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_template_tag_is_bad_input_and_nothing_starts() {
    let w = World::with_cluster("alpha").await.unwrap();
    let cp = w.joined("alpha", "control-plane").await.unwrap();
    w.asg.set_group_tags(GROUP, &[("k8s.io/cluster-autoscaler/node-template/taint/dedicated", "gpu")]);
    let node = w.launch("alpha", "node").await.unwrap();
    in_group(&node, GROUP);
    let run = w.agent(&node, &["join"]).await.unwrap();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("k8s.io/cluster-autoscaler/node-template/taint/dedicated") && run.stderr.contains("no effect"), "{}", run.stderr);
    assert!(node.file("/etc/rancher/k3s/config.yaml").is_none(), "nothing rendered");
    assert!(node.stub_calls().is_empty(), "nothing started: {:?}", node.stub_calls());

    // A label the kubelet would refuse to start with (NodeRestriction): bad input, not a crash loop.
    w.asg.set_group_tags(GROUP, &[("k8s.io/cluster-autoscaler/node-template/label/node-role.kubernetes.io/worker", "true")]);
    let run = w.agent(&node, &["join"]).await.unwrap();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("node-template/label/node-role.kubernetes.io/worker") && run.stderr.contains("kubelet refuses"), "{}", run.stderr);
    assert!(node.file("/etc/rancher/k3s/config.yaml").is_none(), "nothing rendered");
    assert!(node.stub_calls().is_empty(), "nothing started: {:?}", node.stub_calls());

    // A spec may not turn k3s's cloud controller back on behind the agent's back.
    let mut spec = w.default_spec(&w.clusters["alpha"]);
    spec["k3s"]["server"]["disable-cloud-controller"] = serde_json::json!(false);
    w.put_spec("alpha", &spec.to_string()).await.unwrap();
    let run = w.agent(&cp, &["join"]).await.unwrap();
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("k3s.server.disable-cloud-controller"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscalers_scale_down_is_an_ordered_leave() {
    let w = World::with_cluster("alpha").await.unwrap();
    let tg = w.target_group("alpha");
    let _cp = w.joined("alpha", "control-plane").await.unwrap();
    w.asg.set_group_tags(GROUP, &[("k8s.io/cluster-autoscaler/enabled", "true")]);
    let node = w.launch("alpha", "node").await.unwrap();
    in_group(&node, GROUP);
    w.asg.add(&node.id, GROUP, "InService", 30);
    let agent = w.run_until_ready(&node).await.unwrap();
    assert!(w.members(&tg).await.unwrap().contains(&node.id));
    // The autoscaler's call, as its AWS provider makes it.
    let creds = aws_sdk_autoscaling::config::Credentials::new("AKIAAUTOSCALER", "x", None, None, "testbed");
    let conf = aws_sdk_autoscaling::config::Builder::new()
        .behavior_version(aws_sdk_autoscaling::config::BehaviorVersion::latest())
        .region(aws_sdk_autoscaling::config::Region::new(k3s_asg_testbed::world::REGION))
        .endpoint_url(w.asg.url())
        .credentials_provider(creds)
        .build();
    let asg = aws_sdk_autoscaling::Client::from_conf(conf);
    asg.terminate_instance_in_auto_scaling_group().instance_id(&node.id).should_decrement_desired_capacity(true).send().await.unwrap();
    node.imds.set("autoscaling/target-lifecycle-state", Some("Terminated"));
    ok(&agent.wait(std::time::Duration::from_secs(60)).await.unwrap());
    // Deregistered before the Node was deleted; the hook completed with CONTINUE.
    let dereg = w.recorder.calls_by(&node.access_key()).into_iter().find(|c| c.operation == "DeregisterTargets").expect("deregistered").at_ms;
    let deleted = node.stub_call_at(&format!("delete node/{}", node.id)).expect("Node deleted");
    assert!(dereg < deleted, "out of the target group first");
    assert!(!w.members(&tg).await.unwrap().contains(&node.id));
    let actions = w.asg.actions();
    assert!(actions.iter().any(|(a, id, _, r)| a == "TerminateInstanceInAutoScalingGroup" && id == &node.id && r.contains("true")));
    assert!(actions.iter().any(|(a, id, _, r)| a == "CompleteLifecycleAction" && id == &node.id && r == "CONTINUE"), "{actions:?}");
    k3s_asg_testbed::reliability::held(
        "Autoscaler",
        "the Cluster Autoscaler scales a node down (TerminateInstanceInAutoScalingGroup, decrement)",
        1,
        "the lifecycle hook holds it; the agent deregisters, drains, deletes the Node, completes the hook",
    );
}

/// The bed's kubelet refuses what the real one refuses (kubernetes/kubernetes
/// `ValidateKubeletFlags`): the agent's exit 2 above is not the only guard the tests see. Here
/// the label reaches k3s's config by hand, as an operator's edit would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubelet_refuses_a_label_it_may_not_set_on_its_own_node() {
    let w = World::with_cluster("alpha").await.unwrap();
    let _cp = w.joined("alpha", "control-plane").await.unwrap();
    let node = w.joined("alpha", "node").await.unwrap();
    let config = node.file("/etc/rancher/k3s/config.yaml").unwrap();
    let with = |label: &str| config.replace("node-label:\n", &format!("node-label:\n  - \"{label}\"\n"));
    ok(&w.on_host(&node, &["systemctl", "stop", "k3s-agent"]).await.unwrap());
    std::fs::write(node.path("/etc/rancher/k3s/config.yaml"), with("node-role.kubernetes.io/worker=true")).unwrap();
    let refused = w.on_host(&node, &["systemctl", "start", "k3s-agent"]).await.unwrap();
    assert_ne!(refused.code, 0, "the kubelet refuses node-role.kubernetes.io/worker");
    assert!(node.etcd_log_at("kubelet refuses node labels").is_some());
    std::fs::write(node.path("/etc/rancher/k3s/config.yaml"), with("node.kubernetes.io/pool=gpu")).unwrap();
    ok(&w.on_host(&node, &["systemctl", "start", "k3s-agent"]).await.unwrap());
}
