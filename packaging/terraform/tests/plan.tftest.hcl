# `terraform test` (Terraform 1.11 or later: override_during): plans the example against a mocked
# AWS provider, so it needs no credentials and no network. It checks what `terraform validate`
# cannot: the expressions evaluated with real values, the names AWS limits in length, and the
# per-role IAM policies rendered from packaging/iam/*.tftpl (what each role may and may not name;
# tests/tools/iam_eval/ evaluates them as AWS would).

mock_provider "aws" {
  mock_data "aws_partition" {
    defaults = { partition = "aws-us-gov", dns_suffix = "amazonaws.com" }
  }
  mock_data "aws_region" {
    defaults = { name = "us-gov-west-1" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_vpc" {
    defaults = { cidr_block = "10.0.0.0/16" }
  }
}

variables {
  region         = "us-gov-west-1"
  ami_id         = "ami-0123456789abcdef0"
  subnet_ids     = ["subnet-a", "subnet-b"]
  alb_subnet_ids = ["subnet-c", "subnet-d"]
  vpc_id         = "vpc-0123"
  api_hostname   = "api.example.com"
  hosted_zone_id = "Z0123"
  zone           = "example.com"
  # Any file: the plan only hashes it.
  coordinator_zip = "main.tf"
}

run "longest_cluster_name" {
  command = plan

  variables {
    # 63 characters, the longest the agent allows.
    cluster = "a23456789-123456789-123456789-123456789-123456789-123456789-123"
  }

  assert {
    condition     = length(module.cluster.names.target_group) <= 32
    error_message = "target group name longer than 32"
  }
  assert {
    condition     = alltrue([for name in module.cluster.names.roles : length(name) <= 64])
    error_message = "IAM role name longer than 64"
  }
  assert {
    condition     = length(module.cluster.names.event_rule) <= 64 && startswith(module.cluster.names.event_rule, "k3s-asg-coordinator-asg-")
    error_message = "event rule name longer than 64 or without the prefix the coordinator's permission allows"
  }
}

run "short_names_stay_readable" {
  command = plan

  variables {
    cluster = "alpha"
  }

  assert {
    condition     = module.cluster.names.target_group == "alpha-ingress"
    error_message = "a name that fits is kept as it is"
  }
  assert {
    condition     = module.cluster.names.event_rule == "k3s-asg-coordinator-asg-alpha"
    error_message = "event rule name"
  }
  assert {
    condition     = jsondecode(module.cluster.event_pattern).detail.AutoScalingGroupName == ["alpha-control-plane", "alpha-node", "alpha-node-spot"]
    error_message = "the Auto Scaling rule matches this cluster's groups only, the Spot node group included"
  }
  assert {
    condition     = module.region.region_spec_parameter == "/k3s-asg/regions/us-gov-west-1"
    error_message = "region spec parameter name"
  }
  assert {
    condition     = module.region.wildcard_record == "*.us-gov-west-1.example.com"
    error_message = "wildcard record"
  }
}

run "existing_alb" {
  command = plan

  variables {
    cluster               = "bravo"
    alb_arn               = "arn:aws-us-gov:elasticloadbalancing:us-gov-west-1:123456789012:loadbalancer/app/shared/0123456789abcdef"
    listener_arns         = ["arn:aws-us-gov:elasticloadbalancing:us-gov-west-1:123456789012:listener/app/shared/0123456789abcdef/0123456789abcdef"]
    alb_security_group_id = "sg-0123"
    alb_subnet_ids        = []
  }

  assert {
    condition     = module.region.alb_arn == var.alb_arn && module.region.listener_arns == var.listener_arns
    error_message = "an existing ALB and its listeners go into the region spec as given"
  }
  assert {
    condition     = module.region.alb_security_group_id == null
    error_message = "no ALB security group is created for an existing ALB"
  }
  # The coordinator's policy: rules on this region's listeners only, changed only while they carry
  # its owner tag; no parameter write and no KMS (it never decrypts a secret).
  assert {
    condition     = jsonencode([for s in jsondecode(module.region.coordinator_policy).Statement : s.Resource if s.Sid == "CreateRulesOwnedByThisCoordinatorOnTheRegionsListeners"]) == jsonencode([var.listener_arns])
    error_message = "the coordinator creates rules on the region's listeners only"
  }
  assert {
    condition = jsonencode([for s in jsondecode(module.region.coordinator_policy).Statement : s.Resource if s.Sid == "ChangeOnlyRulesThisCoordinatorOwns"]) == jsonencode([[
      "arn:aws-us-gov:elasticloadbalancing:us-gov-west-1:123456789012:listener-rule/app/shared/0123456789abcdef/0123456789abcdef/*"
    ]])
    error_message = "the coordinator changes rules of the region's listeners only"
  }
  assert {
    condition     = !strcontains(module.region.coordinator_policy, "kms:") && !strcontains(module.region.coordinator_policy, "ssm:PutParameter")
    error_message = "the coordinator neither decrypts nor writes parameters"
  }
  assert {
    condition     = jsonencode([for s in jsondecode(module.region.coordinator_policy).Statement : s.Resource if s.Sid == "ReadThisRegionsSpec"]) == jsonencode(["arn:aws-us-gov:ssm:us-gov-west-1:123456789012:parameter/k3s-asg/regions/us-gov-west-1"])
    error_message = "the coordinator reads its own region's spec"
  }
}

# Each instance role's own policy, for one cluster. The target group's ARN is known only after
# apply: the override makes it known to the plan.
run "per_role_instance_policies" {
  command = plan

  variables {
    cluster      = "alpha"
    api_hostname = "API.Alpha.example.com."
  }

  override_resource {
    target          = module.cluster.aws_lb_target_group.ingress
    override_during = plan
    values = {
      arn = "arn:aws-us-gov:elasticloadbalancing:us-gov-west-1:123456789012:targetgroup/alpha-ingress/0123456789abcdef"
    }
  }

  assert {
    condition     = keys(module.cluster.instance_policies) == ["control-plane", "node"]
    error_message = "one policy per role"
  }
  # A node: never the server token, the admin kubeconfig or any kubeconfig but the drain one, and
  # no write of any kind.
  assert {
    condition = alltrue([for needle in ["/token\"", "kubeconfig/admin", "kubeconfig/*", "/election", "ssm:PutParameter", "ssm:GetParametersByPath", "route53:ChangeResourceRecordSets", "kms:Encrypt\"", "control-plane\""] :
    !strcontains(module.cluster.instance_policies["node"], needle)])
    error_message = "the node policy names the server token, the admin kubeconfig, the elections, a write, or the control plane's groups"
  }
  assert {
    condition = jsonencode(jsondecode(module.cluster.instance_policies["node"]).Statement[0].Resource) == jsonencode([
      "arn:aws-us-gov:ssm:us-gov-west-1:123456789012:parameter/k3s-asg/clusters/alpha/config",
      "arn:aws-us-gov:ssm:us-gov-west-1:123456789012:parameter/k3s-asg/clusters/alpha/agent-token",
      "arn:aws-us-gov:ssm:us-gov-west-1:123456789012:parameter/k3s-asg/clusters/alpha/kubeconfig/drain",
    ])
    error_message = "a node reads its cluster's spec, agent token and drain kubeconfig, in the partition, region and account"
  }
  assert {
    condition = alltrue([for p in values(module.cluster.instance_policies) :
      jsonencode([for s in jsondecode(p).Statement : s.Resource if startswith(s.Sid, "RegisterInto")]) == jsonencode([["arn:aws-us-gov:elasticloadbalancing:us-gov-west-1:123456789012:targetgroup/alpha-ingress/0123456789abcdef"]])
    ])
    error_message = "both roles register into this cluster's target group only"
  }
  assert {
    condition = jsonencode([for s in jsondecode(module.cluster.instance_policies["node"]).Statement : s.Condition if startswith(s.Sid, "LifecycleOf")]) == jsonencode([{
      StringEquals = { "autoscaling:ResourceTag/Cluster" = "alpha", "autoscaling:ResourceTag/Role" = "node" }
    }])
    error_message = "a node completes lifecycle actions in this cluster's node groups only"
  }
  # The control plane: its own cluster's secrets, and only A records of the API hostname (as
  # Route53 normalises it) in its zone, UPSERT or DELETE.
  assert {
    condition = jsonencode([for s in jsondecode(module.cluster.instance_policies["control-plane"]).Statement : s.Condition["ForAllValues:StringEquals"] if s.Sid == "UpsertOrDeleteApiARecordsOnly"]) == jsonencode([{
      "route53:ChangeResourceRecordSetsActions"               = ["UPSERT", "DELETE"]
      "route53:ChangeResourceRecordSetsNormalizedRecordNames" = ["api.alpha.example.com"]
      "route53:ChangeResourceRecordSetsRecordTypes"           = ["A"]
    }])
    error_message = "the control plane changes only A records of its API hostname, UPSERT or DELETE"
  }
  assert {
    condition     = jsonencode([for s in jsondecode(module.cluster.instance_policies["control-plane"]).Statement : s.Resource if s.Sid == "UpsertOrDeleteApiARecordsOnly"]) == jsonencode(["arn:aws-us-gov:route53:::hostedzone/Z0123"])
    error_message = "the control plane changes records in the API hostname's zone only"
  }
  assert {
    condition     = !strcontains(module.cluster.instance_policies["control-plane"], "/clusters/*") && strcontains(module.cluster.instance_policies["control-plane"], "/clusters/alpha/token")
    error_message = "the control plane reaches its own cluster's parameters only"
  }
}

run "https" {
  command = plan

  variables {
    cluster         = "charlie"
    certificate_arn = "arn:aws-us-gov:acm:us-gov-west-1:123456789012:certificate/0123"
  }

  assert {
    condition     = length(module.region.listener_arns) == 1
    error_message = "the coordinator manages the HTTPS listener only (port 80 redirects)"
  }
}

run "spot_node_group" {
  command = plan

  variables {
    cluster = "delta"
  }

  assert {
    condition = module.cluster.group_tags["delta-node-spot"] == {
      "k8s.io/cluster-autoscaler/enabled"                                          = "true"
      "k8s.io/cluster-autoscaler/delta"                                            = "owned"
      "k8s.io/cluster-autoscaler/node-template/label/node.kubernetes.io/lifecycle" = "spot"
      "k8s.io/cluster-autoscaler/node-template/taint/spot"                         = "true:PreferNoSchedule"
    }
    error_message = "the Spot node group: auto-discovery tags, its label and its taint, none propagated to instances"
  }
  assert {
    condition     = module.cluster.group_tags["delta-control-plane"] == {}
    error_message = "the control plane is not autoscaled"
  }
  assert {
    condition     = module.cluster.auto_scaling_groups["node-spot"] == "delta-node-spot"
    error_message = "the Spot node group's name"
  }
  assert {
    condition = jsondecode(output.cluster_autoscaler_policy).Statement[1].Condition == {
      StringEquals = { "aws:ResourceTag/k8s.io/cluster-autoscaler/delta" = "owned" }
    }
    error_message = "the autoscaler's policy scales this cluster's groups only"
  }
  assert {
    condition     = startswith(jsondecode(output.cluster_autoscaler_policy).Statement[1].Resource, "arn:aws-us-gov:autoscaling:")
    error_message = "the autoscaler's policy takes the partition's ARNs"
  }
}

run "no_spot_node_group" {
  command = plan

  variables {
    cluster    = "echo"
    spot_nodes = null
  }

  assert {
    condition     = jsondecode(module.cluster.event_pattern).detail.AutoScalingGroupName == ["echo-control-plane", "echo-node"]
    error_message = "without spot_nodes there is no Spot node group"
  }
  assert {
    condition     = keys(module.cluster.group_tags) == ["echo-control-plane", "echo-node"]
    error_message = "without spot_nodes there is no Spot node group"
  }
}
