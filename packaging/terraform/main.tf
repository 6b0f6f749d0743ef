# Example module: a k3s-asg cluster on two Auto Scaling Groups, the SSM cluster
# spec, IAM, and the per-region coordinator Lambda. Adopting from the older
# Terraform modules: the Cluster/Role tags are the same, so nothing is retagged.

terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = ">= 5.0" }
  }
}

provider "aws" {
  region = var.region
}

resource "aws_lb_target_group" "ingress" {
  name        = "${var.cluster}-ingress"
  port        = 80
  protocol    = "HTTP"
  vpc_id      = var.vpc_id
  target_type = "instance"
  deregistration_delay = 30
  health_check {
    path = "/ping"
  }
}

resource "aws_ssm_parameter" "cluster_spec" {
  name = "/k3s-asg/clusters/${var.cluster}/config"
  type = "String"
  value = jsonencode({
    api = { hostname = var.api_hostname, hosted_zone_id = var.hosted_zone_id, ttl = 30, address = "private" }
    target_groups = [
      { arn = aws_lb_target_group.ingress.arn, port = 80, roles = ["node", "control-plane"], ingress = true }
    ]
    readiness = [{ http = "http://127.0.0.1:80/ping", expect_status = 200 }]
    k3s       = { server = { disable = ["servicelb"] }, agent = {} }
    drain     = { timeout_s = 360, grace_period_s = 180 }
  })
}

resource "aws_iam_role" "node" {
  name = "${var.cluster}-k3s-asg-node"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "ec2.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
}

resource "aws_iam_role_policy" "agent" {
  name   = "k3s-asg-agent"
  role   = aws_iam_role.node.id
  policy = file("${path.module}/../iam/agent-policy.json")
}

resource "aws_iam_instance_profile" "node" {
  name = "${var.cluster}-k3s-asg-node"
  role = aws_iam_role.node.name
}

locals {
  roles = {
    "control-plane" = { min = var.control_plane_count, max = var.control_plane_count }
    "node"          = { min = var.node_min, max = var.node_max }
  }
}

resource "aws_launch_template" "role" {
  for_each      = local.roles
  name_prefix   = "${var.cluster}-${each.key}-"
  image_id      = var.ami_id
  instance_type = var.instance_type
  user_data     = filebase64("${path.module}/../cloud-init/user-data-al2023.yaml")

  iam_instance_profile {
    arn = aws_iam_instance_profile.node.arn
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

  launch_template {
    id      = aws_launch_template.role[each.key].id
    version = "$Latest"
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
  rule     = each.value
  arn      = aws_lambda_function.coordinator.arn
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
