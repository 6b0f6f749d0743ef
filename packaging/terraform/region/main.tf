# What a region has once, whatever number of clusters run in it: the shared ALB and its
# listeners (or existing ones), the region spec parameter the coordinator reads, the wildcard
# record `*.{region}.{zone}` that sends the clusters' names `*--{cluster}.{region}.{zone}` to
# the ALB, and the coordinator Lambda with its role, security group, log group, schedule and
# spec-change rule. Clusters (../cluster) are added beside it without touching it.

terraform {
  required_version = ">= 1.5"
  required_providers {
    # 5.60 added the aws_service_principal data source.
    aws = { source = "hashicorp/aws", version = ">= 5.60" }
  }
}

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

data "aws_service_principal" "lambda" {
  service_name = "lambda"
}

data "aws_service_principal" "events" {
  service_name = "events"
}

data "aws_vpc" "this" {
  id = var.vpc_id
}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account    = data.aws_caller_identity.current.account_id
  create_alb = var.alb_arn == ""
  https      = var.certificate_arn != ""
  alb_name   = var.alb_name != "" ? var.alb_name : "k3s-asg-${local.region}"

  alb_arn      = local.create_alb ? aws_lb.shared[0].arn : var.alb_arn
  alb_dns_name = local.create_alb ? aws_lb.shared[0].dns_name : data.aws_lb.existing[0].dns_name
  alb_zone_id  = local.create_alb ? aws_lb.shared[0].zone_id : data.aws_lb.existing[0].zone_id
  # The listeners the coordinator manages rules on: with a certificate the HTTPS one (port 80
  # only redirects), else the HTTP one.
  listener_arns = local.create_alb ? (local.https ? [aws_lb_listener.https[0].arn] : [aws_lb_listener.http[0].arn]) : var.listener_arns

  # EventBridge rules whose names begin with this may invoke the coordinator: each cluster
  # module names its Auto Scaling rule so.
  event_rule_prefix = "k3s-asg-coordinator-asg-"

  # The coordinator's owner id: as given, else derived from the prefix exactly as the coordinator
  # derives it (k3s-asg for /k3s-asg, k3s-asg-staging for /k3s-asg-staging), so two installations
  # with their own prefixes never share one.
  owner = var.owner != "" ? var.owner : replace(trimprefix(var.prefix, "/"), "/", ".")

  # The coordinator's policy (packaging/iam/coordinator-policy.json.tftpl, docs/iam.md): this
  # region's specs (never a secret: it lists the cluster parameters without decryption and has no
  # KMS permission), rules only on this region's listeners, created with its owner tag and changed
  # only while they carry it, and A and TXT records (UPSERT, DELETE) only in the zones it serves:
  # zone_id and coordinator_zone_ids (shared endpoints' zones, clusters' API zones).
  coordinator_policy = templatefile("${path.module}/../../iam/coordinator-policy.json.tftpl", {
    partition          = local.partition
    region             = local.region
    account_id         = local.account
    prefix             = var.prefix
    owner              = local.owner
    listener_arns      = local.listener_arns
    listener_rule_arns = [for arn in local.listener_arns : "${replace(arn, ":listener/", ":listener-rule/")}/*"]
    hosted_zone_arns   = [for id in distinct([for z in concat([var.zone_id], var.coordinator_zone_ids) : trimprefix(z, "/hostedzone/")]) : "arn:${local.partition}:route53:::hostedzone/${id}"]
  })
}

# --- The shared ALB (or an existing one: alb_arn and listener_arns) ---

data "aws_lb" "existing" {
  count = local.create_alb ? 0 : 1
  arn   = var.alb_arn
}

resource "aws_security_group" "alb" {
  count       = local.create_alb ? 1 : 0
  name        = "${local.alb_name}-alb"
  description = "k3s-asg shared ALB in ${local.region}"
  vpc_id      = var.vpc_id
  tags        = { Name = "${local.alb_name}-alb" }
}

resource "aws_vpc_security_group_ingress_rule" "alb" {
  for_each          = { for pair in setproduct(local.create_alb ? var.alb_ingress_cidrs : [], local.https ? [80, 443] : [80]) : "${pair[0]}:${pair[1]}" => pair }
  security_group_id = aws_security_group.alb[0].id
  cidr_ipv4         = each.value[0]
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  description       = "clients on ${each.value[1]}"
}

# To the clusters' ingress ports, inside the VPC (each cluster admits the ALB on its own port).
resource "aws_vpc_security_group_egress_rule" "alb" {
  for_each          = toset([for port in(local.create_alb ? var.target_ports : []) : tostring(port)])
  security_group_id = aws_security_group.alb[0].id
  cidr_ipv4         = data.aws_vpc.this.cidr_block
  ip_protocol       = "tcp"
  from_port         = each.value
  to_port           = each.value
  description       = "to the clusters' ingress on ${each.value}"
}

resource "aws_lb" "shared" {
  #checkov:skip=CKV_AWS_91:access logs need a bucket with the ELB log delivery policy: the operator's choice
  #checkov:skip=CKV2_AWS_28:a WAF web ACL is the operator's choice
  count                      = local.create_alb ? 1 : 0
  name                       = local.alb_name
  load_balancer_type         = "application"
  internal                   = var.alb_internal
  security_groups            = [aws_security_group.alb[0].id]
  subnets                    = var.alb_subnet_ids
  drop_invalid_header_fields = true
  enable_deletion_protection = var.alb_deletion_protection

  lifecycle {
    precondition {
      condition     = length(var.alb_subnet_ids) >= 2
      error_message = "alb_subnet_ids: an ALB needs subnets in at least two availability zones (or give alb_arn and listener_arns of an existing one)."
    }
  }
}

# Without a certificate: HTTP on 80, managed by the coordinator (endpoints then set
# listener_port 80). With one: HTTPS on 443, managed, and 80 redirecting to it.
resource "aws_lb_listener" "http" {
  #checkov:skip=CKV_AWS_2:HTTP only when no certificate_arn is given; with one this listener redirects to HTTPS
  count             = local.create_alb ? 1 : 0
  load_balancer_arn = aws_lb.shared[0].arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = local.https ? "redirect" : "fixed-response"
    dynamic "redirect" {
      for_each = local.https ? [1] : []
      content {
        port        = "443"
        protocol    = "HTTPS"
        status_code = "HTTP_301"
      }
    }
    dynamic "fixed_response" {
      for_each = local.https ? [] : [1]
      content {
        content_type = "text/plain"
        message_body = "no such host"
        status_code  = "404"
      }
    }
  }
}

resource "aws_lb_listener" "https" {
  count             = local.create_alb && local.https ? 1 : 0
  load_balancer_arn = aws_lb.shared[0].arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type = "fixed-response"
    fixed_response {
      content_type = "text/plain"
      message_body = "no such host"
      status_code  = "404"
    }
  }
}

# --- What the coordinator reads, and the names it serves ---

resource "aws_ssm_parameter" "region_spec" {
  #checkov:skip=CKV2_AWS_34:the region spec holds no secret and is a String parameter by contract (README "Shared endpoint and region specs")
  name = "${var.prefix}/regions/${local.region}"
  type = "String"
  value = jsonencode({
    alb_arn       = local.alb_arn
    listener_arns = local.listener_arns
    zone          = var.zone
    rules_quota   = var.rules_quota
  })
}

resource "aws_route53_record" "wildcard" {
  zone_id = var.zone_id
  name    = "*.${local.region}.${var.zone}"
  type    = "A"
  alias {
    name                   = local.alb_dns_name
    zone_id                = local.alb_zone_id
    evaluate_target_health = false
  }
}

# --- The coordinator ---

resource "aws_iam_role" "coordinator" {
  name = "k3s-asg-coordinator-${local.region}"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = data.aws_service_principal.lambda.name }, Action = "sts:AssumeRole" }]
  })
}

resource "aws_iam_role_policy" "coordinator" {
  name   = "k3s-asg-coordinator"
  role   = aws_iam_role.coordinator.id
  policy = local.coordinator_policy

  lifecycle {
    precondition {
      condition     = length(local.listener_arns) > 0
      error_message = "listener_arns: with alb_arn, give the listeners the coordinator manages rules on (its policy names them)."
    }
  }
}

# Logs, and the network interfaces a function in a VPC needs.
resource "aws_iam_role_policy_attachment" "coordinator_logs" {
  role       = aws_iam_role.coordinator.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

resource "aws_cloudwatch_log_group" "coordinator" {
  #checkov:skip=CKV_AWS_158:the coordinator logs no secrets (the tests scan its output); a KMS key is the operator's choice
  name              = "/k3s-asg/coordinator"
  retention_in_days = var.log_retention_days
}

# In the VPC so its health probes reach the instances' private addresses; AWS APIs over 443
# through the subnets' NAT gateway or VPC endpoints.
resource "aws_security_group" "coordinator" {
  name        = "k3s-asg-coordinator"
  description = "k3s-asg coordinator Lambda in ${local.region}"
  vpc_id      = var.vpc_id
  tags        = { Name = "k3s-asg-coordinator" }
}

resource "aws_vpc_security_group_egress_rule" "coordinator_apis" {
  security_group_id = aws_security_group.coordinator.id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "AWS APIs (SSM, ELBv2, EC2, Route53)"
}

resource "aws_vpc_security_group_egress_rule" "coordinator_probes" {
  for_each          = toset([for port in var.target_ports : tostring(port)])
  security_group_id = aws_security_group.coordinator.id
  cidr_ipv4         = data.aws_vpc.this.cidr_block
  ip_protocol       = "tcp"
  from_port         = each.value
  to_port           = each.value
  description       = "health probes of the clusters' ingress on ${each.value}"
}

resource "aws_lambda_function" "coordinator" {
  #checkov:skip=CKV_AWS_116:every event only triggers a full reconcile; a lost one is made good by the next schedule, so a DLQ would hold nothing to redo
  #checkov:skip=CKV_AWS_50:the coordinator emits no X-Ray traces
  #checkov:skip=CKV_AWS_272:the zip is built locally by scripts/build-static; code signing needs a Signer profile of the operator's
  #checkov:skip=CKV_AWS_173:the environment holds no secrets (prefix, owner, refresh interval)
  function_name    = "k3s-asg-coordinator"
  role             = aws_iam_role.coordinator.arn
  runtime          = "provided.al2023"
  architectures    = [var.coordinator_architecture]
  handler          = "bootstrap"
  filename         = var.coordinator_zip
  source_code_hash = filebase64sha256(var.coordinator_zip)
  timeout          = 300
  memory_size      = 128
  # One reconcile at a time in the region; events that arrive meanwhile wait in Lambda's queue.
  reserved_concurrent_executions = 1

  vpc_config {
    subnet_ids         = var.coordinator_subnet_ids
    security_group_ids = [aws_security_group.coordinator.id]
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.coordinator.name
  }

  environment {
    variables = { K3S_ASG_PREFIX = var.prefix, K3S_ASG_OWNER = local.owner, K3S_ASG_REFRESH_S = tostring(var.refresh_s) }
  }

  depends_on = [aws_iam_role_policy_attachment.coordinator_logs]
}

# A failed reconcile is not retried: the next event or the schedule reconciles anyway.
resource "aws_lambda_function_event_invoke_config" "coordinator" {
  function_name                = aws_lambda_function.coordinator.function_name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = 900
}

resource "aws_cloudwatch_event_rule" "schedule" {
  name                = "k3s-asg-coordinator-schedule"
  description         = "k3s-asg: the coordinator's periodic reconcile"
  schedule_expression = var.schedule
}

# A warm coordinator keeps the specs it read (K3S_ASG_REFRESH_S); a change under the
# prefix tells it to read them again at once.
resource "aws_cloudwatch_event_rule" "spec_changes" {
  name        = "k3s-asg-coordinator-spec-changes"
  description = "k3s-asg: changes of the specs under ${var.prefix}/"
  event_pattern = jsonencode({
    source        = ["aws.ssm"]
    "detail-type" = ["Parameter Store Change"]
    detail        = { name = [{ prefix = "${var.prefix}/" }] }
  })
}

resource "aws_cloudwatch_event_target" "coordinator" {
  for_each = {
    schedule = aws_cloudwatch_event_rule.schedule.name
    specs    = aws_cloudwatch_event_rule.spec_changes.name
  }
  rule = each.value
  arn  = aws_lambda_function.coordinator.arn
}

resource "aws_lambda_permission" "events" {
  for_each = {
    schedule = aws_cloudwatch_event_rule.schedule.arn
    specs    = aws_cloudwatch_event_rule.spec_changes.arn
    # Each cluster's Auto Scaling rule (../cluster), scoped there to that cluster's groups.
    clusters = "arn:${local.partition}:events:${local.region}:${local.account}:rule/${local.event_rule_prefix}*"
  }
  statement_id  = "events-${each.key}"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.coordinator.function_name
  principal     = data.aws_service_principal.events.name
  source_arn    = each.value
}
