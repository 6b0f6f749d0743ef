# Example module: a k3s-asg cluster on two Auto Scaling Groups, the SSM cluster
# spec, IAM, and the per-region coordinator Lambda. Adopting from the older
# Terraform modules: the Cluster/Role tags are the same, so nothing is retagged.

terraform {
  required_providers {
    # 5.32 added instance_refresh.preferences.max_healthy_percentage (launch before terminate).
    aws = { source = "hashicorp/aws", version = ">= 5.32" }
  }
}

provider "aws" {
  region = var.region
}

resource "aws_lb_target_group" "ingress" {
  name                 = "${var.cluster}-ingress"
  port                 = 80
  protocol             = "HTTP"
  vpc_id               = var.vpc_id
  target_type          = "instance"
  deregistration_delay = 30
  health_check {
    path = "/ping"
  }
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
  name = "/k3s-asg/clusters/${var.cluster}/config"
  type = "String"
  value = jsonencode(merge({
    api = { hostname = var.api_hostname, hosted_zone_id = var.hosted_zone_id, ttl = 30, address = "private" }
    target_groups = [
      { arn = aws_lb_target_group.ingress.arn, port = 80, roles = ["node", "control-plane"], ingress = true }
    ]
    readiness = [{ http = "http://127.0.0.1:80/ping", expect_status = 200 }]
    k3s       = { server = { disable = ["servicelb"] }, agent = {} }
    drain     = { timeout_s = 360, grace_period_s = 180 }
  }, local.snapshots_section))
}

# A bucket for the snapshots, only with create_snapshot_bucket: private, SSE-S3, no versioning
# (the default) and no lifecycle rules (k3s prunes to the spec's retention itself). Not
# force_destroy: `terraform destroy` keeps a bucket that still holds snapshots.
resource "aws_s3_bucket" "snapshots" {
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

locals {
  roles = {
    "control-plane" = { min = var.control_plane_count, max = var.control_plane_count, ami = var.ami_id }
    "node"          = { min = var.node_min, max = var.node_max, ami = var.node_ami_id != "" ? var.node_ami_id : var.ami_id }
  }
}

# One instance role per cluster role: both get the agent's policy, only the control plane
# gets the snapshot bucket.
resource "aws_iam_role" "agent" {
  for_each = local.roles
  name     = "${var.cluster}-k3s-asg-${each.key}"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "ec2.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
}

resource "aws_iam_role_policy" "agent" {
  for_each = local.roles
  name     = "k3s-asg-agent"
  role     = aws_iam_role.agent[each.key].id
  policy   = file("${path.module}/../iam/agent-policy.json")
}

resource "aws_iam_role_policy" "snapshots" {
  count = local.snapshots_on ? 1 : 0
  name  = "k3s-asg-control-plane-snapshots"
  role  = aws_iam_role.agent["control-plane"].id
  policy = templatefile("${path.module}/../iam/control-plane-snapshots-policy.json", {
    bucket = local.snapshot_bucket
    folder = local.snapshot_folder
  })
}

resource "aws_iam_instance_profile" "agent" {
  for_each = local.roles
  name     = "${var.cluster}-k3s-asg-${each.key}"
  role     = aws_iam_role.agent[each.key].name
}

# Earlier versions of this module had one role for both; its node half keeps its name.
moved {
  from = aws_iam_role.node
  to   = aws_iam_role.agent["node"]
}

moved {
  from = aws_iam_role_policy.agent
  to   = aws_iam_role_policy.agent["node"]
}

moved {
  from = aws_iam_instance_profile.node
  to   = aws_iam_instance_profile.agent["node"]
}

resource "aws_launch_template" "role" {
  for_each      = local.roles
  name_prefix   = "${var.cluster}-${each.key}-"
  image_id      = each.value.ami
  instance_type = var.instance_type
  user_data     = filebase64("${path.module}/../cloud-init/user-data-al2023.yaml")

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
  for_each            = local.roles
  name                = "${var.cluster}-${each.key}"
  min_size            = each.value.min
  max_size            = each.value.max
  vpc_zone_identifier = var.subnet_ids

  # A version number, not "$Latest": a new template version (a new AMI) is then a change of
  # this group, and that change starts the instance refresh below.
  launch_template {
    id      = aws_launch_template.role[each.key].id
    version = aws_launch_template.role[each.key].latest_version
  }

  # Rolling AMI upgrades (README "Rolling AMI upgrade"): every change of launch_template starts
  # a refresh (no `triggers` needed for it). Launch before terminate, one instance at a time:
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
    value               = each.key
    propagate_at_launch = true
  }
}

# The region's coordinator (one per region; include it in one cluster's stack only).
resource "aws_iam_role" "coordinator" {
  name = "k3s-asg-coordinator-${var.region}"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "lambda.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
}

resource "aws_iam_role_policy" "coordinator" {
  name   = "k3s-asg-coordinator"
  role   = aws_iam_role.coordinator.id
  policy = file("${path.module}/../iam/coordinator-policy.json")
}

resource "aws_iam_role_policy_attachment" "coordinator_logs" {
  role       = aws_iam_role.coordinator.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
}

resource "aws_lambda_function" "coordinator" {
  function_name = "k3s-asg-coordinator"
  role          = aws_iam_role.coordinator.arn
  runtime       = "provided.al2023"
  architectures = ["arm64"]
  handler       = "bootstrap"
  filename      = var.coordinator_zip
  timeout       = 300
  memory_size   = 128
  environment {
    variables = { K3S_ASG_PREFIX = "/k3s-asg", K3S_ASG_OWNER = "k3s-asg", K3S_ASG_REFRESH_S = "300" }
  }
}

resource "aws_cloudwatch_event_rule" "schedule" {
  name                = "k3s-asg-coordinator-schedule"
  schedule_expression = "rate(5 minutes)"
}

resource "aws_cloudwatch_event_rule" "asg_events" {
  name = "k3s-asg-coordinator-asg-events"
  event_pattern = jsonencode({
    source        = ["aws.autoscaling", "aws.ec2"]
    "detail-type" = ["EC2 Instance Launch Successful", "EC2 Instance Terminate Successful", "EC2 Instance-terminate Lifecycle Action", "EC2 Instance State-change Notification"]
  })
}

# A warm coordinator keeps the specs it read (K3S_ASG_REFRESH_S); a change under the
# prefix tells it to read them again at once.
resource "aws_cloudwatch_event_rule" "spec_changes" {
  name = "k3s-asg-coordinator-spec-changes"
  event_pattern = jsonencode({
    source        = ["aws.ssm"]
    "detail-type" = ["Parameter Store Change"]
    detail        = { name = [{ prefix = "/k3s-asg/" }] }
  })
}

resource "aws_cloudwatch_event_target" "coordinator" {
  for_each = {
    schedule = aws_cloudwatch_event_rule.schedule.name
    asg      = aws_cloudwatch_event_rule.asg_events.name
    specs    = aws_cloudwatch_event_rule.spec_changes.name
  }
  rule = each.value
  arn  = aws_lambda_function.coordinator.arn
}

resource "aws_lambda_permission" "events" {
  for_each = {
    schedule = aws_cloudwatch_event_rule.schedule.arn
    asg      = aws_cloudwatch_event_rule.asg_events.arn
    specs    = aws_cloudwatch_event_rule.spec_changes.arn
  }
  statement_id  = "events-${each.key}"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.coordinator.function_name
  principal     = "events.amazonaws.com"
  source_arn    = each.value
}
