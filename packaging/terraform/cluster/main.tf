# One k3s-asg cluster: its security groups, the ingress target group, the SSM cluster spec, an
# instance role per role, launch templates and Auto Scaling Groups with a terminating lifecycle
# hook and instance refresh (and an optional Spot node group), the optional etcd snapshot
# bucket, and the EventBridge rule that tells the region's coordinator about its groups. Use it
# once per cluster, beside one ../region module per region. Adopting from the older Terraform
# modules: the Cluster/Role tags are the same, so nothing is retagged.

terraform {
  required_version = ">= 1.5"
  required_providers {
    # 5.32 added instance_refresh.preferences.max_healthy_percentage (launch before terminate);
    # 5.60 the aws_service_principal data source.
    aws = { source = "hashicorp/aws", version = ">= 5.60" }
  }
}

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

data "aws_service_principal" "ec2" {
  service_name = "ec2"
}

locals {
  partition = data.aws_partition.current.partition

  roles = {
    "control-plane" = { min = var.control_plane_count, max = var.control_plane_count, ami = var.ami_id }
    "node"          = { min = var.node_min, max = var.node_max, ami = var.node_ami_id != "" ? var.node_ami_id : var.ami_id }
  }
  # The Auto Scaling groups: one per role, and the optional Spot node group (spot_nodes), which
  # launches from the node launch template (Role=node, the node instance profile) with a mixed
  # instances policy. `labels`/`taints` become the Cluster Autoscaler's node-template tags of
  # the autoscaled groups (the control plane is not one).
  spot_groups = { for key, s in { "node-spot" = var.spot_nodes } : key => s if s != null }
  groups = merge(
    {
      for role, r in local.roles : role => {
        role           = role
        min            = r.min
        max            = r.max
        spot           = false
        instance_types = []
        autoscaled     = role == "node"
        labels         = role == "node" ? var.node_template_labels : {}
        taints         = role == "node" ? var.node_template_taints : {}
      }
    },
    {
      for key, s in local.spot_groups : key => {
        role           = "node"
        min            = s.min
        max            = s.max
        spot           = true
        instance_types = s.instance_types
        autoscaled     = true
        labels         = s.labels
        taints         = s.taints
      }
    },
  )
  group_names = { for key in keys(local.groups) : key => "${var.cluster}-${key}" }

  # Names AWS limits in length (target groups 32, IAM roles and EventBridge rules 64): the readable
  # name when it fits, else its head and 8 hex digits of a hash of the whole name, so a long
  # cluster name (up to the 63 the agent allows) still gets a name of its own.
  wanted_names = merge(
    { target_group = { name = "${var.cluster}-ingress", max = 32 } },
    { for role in keys(local.roles) : "role-${role}" => { name = "${var.cluster}-k3s-asg-${role}", max = 64 } },
    { asg_events = { name = "${try(var.coordinator.event_rule_prefix, "k3s-asg-coordinator-asg-")}${var.cluster}", max = 64 } },
  )
  names = {
    for key, n in local.wanted_names :
    key => length(n.name) <= n.max ? n.name : "${substr(n.name, 0, n.max - 9)}-${substr(sha1(n.name), 0, 8)}"
  }
}


resource "aws_lb_target_group" "ingress" {
  #checkov:skip=CKV_AWS_378:the ALB terminates TLS; it reaches k3s's ingress inside the VPC over HTTP
  name                 = local.names.target_group
  port                 = var.ingress_port
  protocol             = "HTTP"
  vpc_id               = var.vpc_id
  target_type          = "instance"
  deregistration_delay = 30
  # k3s's Traefik answers every path on the ingress port (404 for a host no Ingress names):
  # healthy means the node's ingress answers at all.
  health_check {
    path    = "/"
    matcher = "200-404"
  }
}

# Security groups. k3s's inbound rules (docs.k3s.io, Requirements, "Inbound Rules for K3s Nodes"):
# 6443/tcp from every node to the servers (supervisor and API: agents join and probe servers,
# servers join each other), 2379-2380/tcp between servers (embedded etcd), 8472/udp (flannel
# VXLAN) and 10250/tcp (kubelet) between all nodes; 51820-51821/udp (flannel wireguard-native)
# and 5001/tcp plus 6443/tcp between all nodes (the embedded registry, Spegel) only when used.
# Every instance gets `node`; the control plane also gets `control_plane`.
resource "aws_security_group" "node" {
  name        = "k3s-asg-${var.cluster}-nodes"
  description = "k3s-asg cluster ${var.cluster}: every instance, servers and agents"
  vpc_id      = var.vpc_id
  tags        = { Name = "k3s-asg-${var.cluster}-nodes", Cluster = var.cluster }
}

resource "aws_security_group" "control_plane" {
  name        = "k3s-asg-${var.cluster}-control-plane"
  description = "k3s-asg cluster ${var.cluster}: the servers (control plane and etcd)"
  vpc_id      = var.vpc_id
  tags        = { Name = "k3s-asg-${var.cluster}-control-plane", Cluster = var.cluster }
}

locals {
  k3s_rules = merge(
    {
      supervisor = { to = "control_plane", protocol = "tcp", from_port = 6443, to_port = 6443, description = "k3s supervisor and Kubernetes API, from every node" }
      etcd       = { to = "control_plane", protocol = "tcp", from_port = 2379, to_port = 2380, description = "embedded etcd, between servers" }
      vxlan      = { to = "node", protocol = "udp", from_port = 8472, to_port = 8472, description = "flannel VXLAN, between all nodes" }
      kubelet    = { to = "node", protocol = "tcp", from_port = 10250, to_port = 10250, description = "kubelet metrics and API, between all nodes" }
    },
    var.flannel_wireguard ? {
      wireguard = { to = "node", protocol = "udp", from_port = 51820, to_port = 51821, description = "flannel wireguard-native, between all nodes" }
    } : {},
    var.embedded_registry ? {
      spegel     = { to = "node", protocol = "tcp", from_port = 5001, to_port = 5001, description = "embedded registry (Spegel), between all nodes" }
      spegel_api = { to = "node", protocol = "tcp", from_port = 6443, to_port = 6443, description = "embedded registry (Spegel), between all nodes" }
    } : {},
  )
  security_groups = { node = aws_security_group.node.id, control_plane = aws_security_group.control_plane.id }
}

resource "aws_vpc_security_group_ingress_rule" "k3s" {
  for_each = local.k3s_rules
  # Sources are the cluster's own groups: `etcd` comes from servers only, the rest from every node.
  security_group_id            = local.security_groups[each.value.to]
  referenced_security_group_id = each.key == "etcd" ? aws_security_group.control_plane.id : aws_security_group.node.id
  ip_protocol                  = each.value.protocol
  from_port                    = each.value.from_port
  to_port                      = each.value.to_port
  description                  = each.value.description
}

# The ingress port (the target group's) from the ALB and from the coordinator's health probes.
resource "aws_vpc_security_group_ingress_rule" "ingress" {
  #checkov:skip=CKV_AWS_260:false positive: the source is a security group (referenced_security_group_id), which checkov 3.3 does not read, not 0.0.0.0/0
  for_each                     = var.ingress_from_security_groups
  security_group_id            = aws_security_group.node.id
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = var.ingress_port
  to_port                      = var.ingress_port
  description                  = "ingress (${each.key})"
}

# kubectl from outside the cluster (the API hostname resolves to the servers' addresses).
resource "aws_vpc_security_group_ingress_rule" "api" {
  for_each          = toset(var.api_ingress_cidrs)
  security_group_id = aws_security_group.control_plane.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 6443
  to_port           = 6443
  description       = "Kubernetes API from ${each.value}"
}

# k3s: "Typically, all outbound traffic is allowed": AWS APIs, image registries, the cluster.
resource "aws_vpc_security_group_egress_rule" "node" {
  security_group_id = aws_security_group.node.id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
  description       = "all outbound: AWS APIs, image registries, the cluster"
}

# etcd snapshots to S3 (optional; snapshot_bucket = "" leaves them off). k3s on the control
# plane uploads and prunes them; a recovery after the loss of every server restores the newest.
locals {
  snapshots_on           = var.snapshot_bucket != ""
  create_snapshot_bucket = local.snapshots_on && var.create_snapshot_bucket
  snapshot_bucket        = local.create_snapshot_bucket ? one(aws_s3_bucket.snapshots[*].bucket) : var.snapshot_bucket
  snapshot_folder        = var.snapshot_folder != "" ? var.snapshot_folder : "clusters/${var.cluster}"
  # The spec's `snapshots` section, present only when snapshots are on (`region` only when set:
  # the agent defaults it to the instance's region). schedule and retention keep the agent's
  # defaults ("0 */6 * * *", 28).
  snapshots_section = {
    for key, section in {
      snapshots = merge(
        { bucket = local.snapshot_bucket, folder = local.snapshot_folder },
        { for field, value in { region = var.snapshot_region } : field => value if value != "" },
      )
    } : key => section if local.snapshots_on
  }
}

resource "aws_ssm_parameter" "cluster_spec" {
  #checkov:skip=CKV2_AWS_34:the cluster spec holds no secret and is a String parameter by contract (README "SSM parameters")
  name = "${var.prefix}/clusters/${var.cluster}/config"
  type = "String"
  value = jsonencode(merge({
    api = { hostname = var.api_hostname, hosted_zone_id = var.hosted_zone_id, ttl = 30, address = "private" }
    target_groups = [
      { arn = aws_lb_target_group.ingress.arn, port = var.ingress_port, roles = ["node", "control-plane"], ingress = true }
    ]
    # The kubelet's own health endpoint: served on every k3s node as written. Put your ingress's
    # health URL here once one serves the target group's port.
    readiness = [{ http = "http://127.0.0.1:10248/healthz", expect_status = 200 }]
    # servicelb (klipper-lb) stays on: it binds Traefik to the ingress port on every node, where
    # the target group sends traffic.
    k3s   = { server = {}, agent = {} }
    drain = { timeout_s = 360, grace_period_s = 180 }
  }, local.snapshots_section))
}

# A bucket for the snapshots, only with create_snapshot_bucket: private, SSE-S3, no versioning
# (the default) and no lifecycle rules (k3s prunes to the spec's retention itself). Not
# force_destroy: `terraform destroy` keeps a bucket that still holds snapshots.
resource "aws_s3_bucket" "snapshots" {
  #checkov:skip=CKV_AWS_21:k3s prunes old snapshots to the spec's retention; versioning would keep every pruned one
  #checkov:skip=CKV2_AWS_61:no lifecycle rules: k3s prunes to the spec's retention itself
  #checkov:skip=CKV_AWS_145:SSE-S3 by design (README); a customer managed key also needs kms grants for the control-plane role
  #checkov:skip=CKV_AWS_144:cross-region replication needs a second bucket in another region: the operator's choice
  #checkov:skip=CKV_AWS_18:access logging needs a log bucket of the operator's
  #checkov:skip=CKV2_AWS_62:nothing consumes event notifications of snapshots
  count  = local.create_snapshot_bucket ? 1 : 0
  bucket = var.snapshot_bucket
}

resource "aws_s3_bucket_public_access_block" "snapshots" {
  count                   = local.create_snapshot_bucket ? 1 : 0
  bucket                  = aws_s3_bucket.snapshots[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "snapshots" {
  count  = local.create_snapshot_bucket ? 1 : 0
  bucket = aws_s3_bucket.snapshots[0].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

# One instance role per cluster role, each with its own policy rendered from
# packaging/iam/<role>-policy.json.tftpl (docs/iam.md): this cluster's parameters only (a node:
# its spec, the agent token and the drain kubeconfig, never the server token or the admin
# kubeconfig, and it writes none), this cluster's target groups, lifecycle actions only in this
# cluster's groups of the same role, and (control plane only) A records of the API hostname in its
# zone, UPSERT and DELETE. The template variables are documented in docs/iam.md.
locals {
  policy_vars = {
    partition   = local.partition
    region      = data.aws_region.current.name
    account_id  = data.aws_caller_identity.current.account_id
    dns_suffix  = data.aws_partition.current.dns_suffix
    prefix      = var.prefix
    cluster     = var.cluster
    cluster_tag = "Cluster"
    role_tag    = "Role"
    # Route53's forms: the zone id without "/hostedzone/", the name lower case without its dot.
    hosted_zone_id    = trimprefix(var.hosted_zone_id, "/hostedzone/")
    api_hostname      = lower(trimsuffix(var.api_hostname, "."))
    target_group_arns = [aws_lb_target_group.ingress.arn]
  }
  instance_policies = {
    for role in keys(local.roles) : role => templatefile("${path.module}/../../iam/${role}-policy.json.tftpl", local.policy_vars)
  }
}

# One instance role (and instance profile) per cluster role, each with its role's policy (above);
# only the control plane gets the snapshot bucket.
resource "aws_iam_role" "agent" {
  for_each = local.roles
  name     = local.names["role-${each.key}"]
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = data.aws_service_principal.ec2.name }, Action = "sts:AssumeRole" }]
  })
}

resource "aws_iam_role_policy" "agent" {
  for_each = local.roles
  name     = "k3s-asg-agent"
  role     = aws_iam_role.agent[each.key].id
  policy   = local.instance_policies[each.key]
}

resource "aws_iam_role_policy" "snapshots" {
  count = local.snapshots_on ? 1 : 0
  name  = "k3s-asg-control-plane-snapshots"
  role  = aws_iam_role.agent["control-plane"].id
  policy = replace(templatefile("${path.module}/../../iam/control-plane-snapshots-policy.json", {
    bucket = local.snapshot_bucket
    folder = local.snapshot_folder
  }), "arn:aws:", "arn:${local.partition}:")
}

resource "aws_iam_instance_profile" "agent" {
  for_each = local.roles
  name     = local.names["role-${each.key}"]
  role     = aws_iam_role.agent[each.key].name
}

resource "aws_launch_template" "role" {
  for_each      = local.roles
  name_prefix   = "${var.cluster}-${each.key}-"
  image_id      = each.value.ami
  instance_type = var.instance_type
  # The user-data matching the AMI's OS (packaging/ami bakes both).
  user_data = filebase64("${path.module}/../../cloud-init/user-data-${var.os}.yaml")
  vpc_security_group_ids = concat(
    [aws_security_group.node.id],
    each.key == "control-plane" ? [aws_security_group.control_plane.id] : [],
    var.extra_security_group_ids,
  )

  iam_instance_profile {
    arn = aws_iam_instance_profile.agent[each.key].arn
  }

  # IMDSv2 only, and instance tags readable through IMDS (the agent's first choice).
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }

  tag_specifications {
    resource_type = "instance"
    tags          = { Cluster = var.cluster, Role = each.key }
  }
}

resource "aws_autoscaling_group" "role" {
  for_each            = local.groups
  name                = local.group_names[each.key]
  min_size            = each.value.min
  max_size            = each.value.max
  vpc_zone_identifier = var.subnet_ids

  # A version number, not "$Latest": a new template version (a new AMI) is then a change of
  # this group, and that change starts the instance refresh below.
  dynamic "launch_template" {
    for_each = each.value.spot ? [] : [aws_launch_template.role[each.value.role]]
    content {
      id      = launch_template.value.id
      version = launch_template.value.latest_version
    }
  }

  # The Spot node group: Spot only (no On-Demand base or share), from the pools with the lowest
  # price and interruption risk among several instance types. The Cluster Autoscaler predicts a
  # new node from the first type (give types of the same vCPU and memory).
  dynamic "mixed_instances_policy" {
    for_each = each.value.spot ? [aws_launch_template.role[each.value.role]] : []
    content {
      instances_distribution {
        on_demand_base_capacity                  = 0
        on_demand_percentage_above_base_capacity = 0
        spot_allocation_strategy                 = "price-capacity-optimized"
      }
      launch_template {
        launch_template_specification {
          launch_template_id = mixed_instances_policy.value.id
          version            = mixed_instances_policy.value.latest_version
        }
        dynamic "override" {
          for_each = each.value.instance_types
          content {
            instance_type = override.value
          }
        }
      }
    }
  }
  # A Spot instance at elevated risk of interruption is replaced early (launch, then terminate
  # through the lifecycle hook below: the agent leaves in order while it still can).
  capacity_rebalance = each.value.spot

  # Rolling AMI upgrades (README "Rolling AMI upgrade"): every change of launch_template (or of
  # the Spot group's mixed_instances_policy) starts a refresh (no `triggers` needed for it). Launch before terminate, one instance at a time:
  # min 100 % keeps every old instance until its replacement is in service and warmed up; max
  # 110 % (what the console sends for "launch before terminating") lets the group run 10 % over
  # its desired capacity, and at least one instance over, so a control plane of 1, 3, 5 or 7
  # servers gets one extra server at a time: etcd gains a member before it loses one. (With
  # 200 % a group of 3 would launch 3 new servers and then terminate 3 old ones at once.) The
  # leaving server's agent still applies its quorum guard. For nodes, one at a time means one
  # drain at a time; a larger group may raise it (up to 200) to replace more at once.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 100
      max_healthy_percentage = 110
      # Time for a new instance to join and pass its readiness probes before the refresh counts
      # it and moves on (EC2 health checks pass at boot). A leaving server whose member cannot
      # go without losing quorum is held by the agent's quorum guard regardless.
      instance_warmup = 300
      # Instances already on the group's launch template version are kept (a re-run after a
      # cancelled refresh replaces only the rest).
      skip_matching = true
    }
  }

  # The agent registers targets itself, once the node can serve.
  # (No target_group_arns here on purpose.)

  initial_lifecycle_hook {
    name                 = "k3s-asg-leave"
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    heartbeat_timeout    = 300
    default_result       = "CONTINUE"
  }

  tag {
    key                 = "Cluster"
    value               = var.cluster
    propagate_at_launch = true
  }

  tag {
    key                 = "Role"
    value               = each.value.role
    propagate_at_launch = true
  }

  # Cluster Autoscaler auto-discovery (--node-group-auto-discovery=asg:tag=k8s.io/cluster-autoscaler/enabled,k8s.io/cluster-autoscaler/<cluster>)
  # on the node groups, and their scale-from-zero templates: the agent renders the same
  # node-template labels and taints into k3s on each instance of the group. Never propagated:
  # with instance tags in instance metadata on, an instance tag key may not contain "/".
  dynamic "tag" {
    for_each = each.value.autoscaled ? merge(
      { "k8s.io/cluster-autoscaler/enabled" = "true", "k8s.io/cluster-autoscaler/${var.cluster}" = "owned" },
      { for k, v in each.value.labels : "k8s.io/cluster-autoscaler/node-template/label/${k}" => v },
      { for k, v in each.value.taints : "k8s.io/cluster-autoscaler/node-template/taint/${k}" => v },
    ) : {}
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = false
    }
  }
}

# The Cluster Autoscaler's permissions (packaging/iam/cluster-autoscaler-policy.json): describe
# calls, and scaling only the groups tagged k8s.io/cluster-autoscaler/<cluster> = owned. The
# `cluster_autoscaler_policy` output has it rendered for a role of your choice; with
# cluster_autoscaler_on_control_plane, the control plane's instance role gets it (run the
# autoscaler on the servers: README "The Cluster Autoscaler and other AWS-aware tools").
locals {
  cluster_autoscaler_policy = replace(
    templatefile("${path.module}/../../iam/cluster-autoscaler-policy.json", { cluster = var.cluster }),
    "arn:aws:", "arn:${local.partition}:",
  )
}

resource "aws_iam_role_policy" "cluster_autoscaler" {
  count  = var.cluster_autoscaler_on_control_plane ? 1 : 0
  name   = "k3s-asg-cluster-autoscaler"
  role   = aws_iam_role.agent["control-plane"].id
  policy = local.cluster_autoscaler_policy
}

# The region's coordinator hears about this cluster's groups, and only these: launches,
# terminations and terminating lifecycle actions (an API record to collect, a target gone).
# The rule's name starts with the prefix the region module's Lambda permission allows.
resource "aws_cloudwatch_event_rule" "asg_events" {
  count       = var.coordinator != null ? 1 : 0
  name        = local.names.asg_events
  description = "k3s-asg: Auto Scaling events of cluster ${var.cluster} for the coordinator"
  event_pattern = jsonencode({
    source        = ["aws.autoscaling"]
    "detail-type" = ["EC2 Instance Launch Successful", "EC2 Instance Terminate Successful", "EC2 Instance-terminate Lifecycle Action"]
    detail        = { AutoScalingGroupName = values(local.group_names) }
  })
}

resource "aws_cloudwatch_event_target" "coordinator" {
  count = var.coordinator != null ? 1 : 0
  rule  = aws_cloudwatch_event_rule.asg_events[0].name
  arn   = var.coordinator.function_arn
}
