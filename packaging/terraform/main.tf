# Example stack: one region's shared pieces (./region) and one cluster (./cluster) in it.
#
# ./region is what a region has once: the shared ALB and listeners, the region spec
# parameter, the wildcard record and the coordinator Lambda. ./cluster is one cluster; add a
# cluster with another `module "<name>" { source = "./cluster" ... }` block here, or from a
# stack of its own that passes the region stack's outputs (README "Quick start on real AWS").

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = { source = "hashicorp/aws", version = ">= 5.60" }
  }
}

provider "aws" {
  region = var.region
}

locals {
  # scripts/build-static writes dist/<aarch64|x86_64>/k3s-asg-coordinator-lambda.zip.
  coordinator_zip = var.coordinator_zip != "" ? var.coordinator_zip : "${path.root}/../../dist/${var.coordinator_architecture == "arm64" ? "aarch64" : "x86_64"}/k3s-asg-coordinator-lambda.zip"
  # The security groups that reach the clusters' ingress port: the ALB's (created here, or the
  # existing one's when given) and the coordinator's (health probes).
  ingress_from = merge(
    { coordinator = module.region.coordinator_security_group_id },
    var.alb_arn == "" ? { alb = module.region.alb_security_group_id } : {},
    var.alb_arn != "" && var.alb_security_group_id != "" ? { alb = var.alb_security_group_id } : {},
  )
}

module "region" {
  source = "./region"

  vpc_id                   = var.vpc_id
  zone                     = var.zone
  zone_id                  = var.zone_id != "" ? var.zone_id : var.hosted_zone_id
  alb_arn                  = var.alb_arn
  listener_arns            = var.listener_arns
  alb_subnet_ids           = var.alb_subnet_ids
  certificate_arn          = var.certificate_arn
  coordinator_zip          = local.coordinator_zip
  coordinator_architecture = var.coordinator_architecture
  coordinator_subnet_ids   = length(var.coordinator_subnet_ids) > 0 ? var.coordinator_subnet_ids : var.subnet_ids
  prefix                   = var.prefix
  # The cluster's API zone too: the coordinator removes API records of instances that are gone.
  coordinator_zone_ids = concat([var.hosted_zone_id], var.coordinator_zone_ids)
}

module "cluster" {
  source = "./cluster"

  cluster                      = var.cluster
  prefix                       = var.prefix
  ami_id                       = var.ami_id
  node_ami_id                  = var.node_ami_id
  os                           = var.os
  subnet_ids                   = var.subnet_ids
  vpc_id                       = var.vpc_id
  api_hostname                 = var.api_hostname
  hosted_zone_id               = var.hosted_zone_id
  control_plane_count          = var.control_plane_count
  node_min                     = var.node_min
  node_max                     = var.node_max
  instance_type                = var.instance_type
  api_ingress_cidrs            = var.api_ingress_cidrs
  ingress_from_security_groups = local.ingress_from
  coordinator                  = module.region.coordinator
  snapshot_bucket              = var.snapshot_bucket
  snapshot_folder              = var.snapshot_folder
  snapshot_region              = var.snapshot_region
  create_snapshot_bucket       = var.create_snapshot_bucket
  node_template_labels         = var.node_template_labels
  node_template_taints         = var.node_template_taints
  # A Spot node group beside the On-Demand one, tagged for the Cluster Autoscaler with a label
  # and a taint (spot_nodes = null: none). Its default starts empty (min 0): nothing runs, and
  # nothing is paid, until the autoscaler scales it up for pods that tolerate the taint.
  spot_nodes                          = var.spot_nodes
  cluster_autoscaler_on_control_plane = var.cluster_autoscaler_on_control_plane
}

# This example used to be one flat module; its resources moved into ./cluster and ./region.
# These blocks carry an existing state along, so the groups, roles and the Lambda are kept,
# not replaced. (The old unscoped Auto Scaling/EC2 event rule is deleted: each cluster now has
# a rule of its own, scoped to its groups.)
moved {
  from = aws_lb_target_group.ingress
  to   = module.cluster.aws_lb_target_group.ingress
}

moved {
  from = aws_ssm_parameter.cluster_spec
  to   = module.cluster.aws_ssm_parameter.cluster_spec
}

moved {
  from = aws_s3_bucket.snapshots
  to   = module.cluster.aws_s3_bucket.snapshots
}

moved {
  from = aws_s3_bucket_public_access_block.snapshots
  to   = module.cluster.aws_s3_bucket_public_access_block.snapshots
}

moved {
  from = aws_s3_bucket_server_side_encryption_configuration.snapshots
  to   = module.cluster.aws_s3_bucket_server_side_encryption_configuration.snapshots
}

moved {
  from = aws_iam_role.agent
  to   = module.cluster.aws_iam_role.agent
}

moved {
  from = aws_iam_role_policy.agent
  to   = module.cluster.aws_iam_role_policy.agent
}

moved {
  from = aws_iam_role_policy.snapshots
  to   = module.cluster.aws_iam_role_policy.snapshots
}

moved {
  from = aws_iam_instance_profile.agent
  to   = module.cluster.aws_iam_instance_profile.agent
}

# The layout before per-role instance roles had one role for both; its node half keeps its name.
moved {
  from = aws_iam_role.node
  to   = module.cluster.aws_iam_role.agent["node"]
}

moved {
  from = aws_iam_instance_profile.node
  to   = module.cluster.aws_iam_instance_profile.agent["node"]
}

moved {
  from = aws_launch_template.role
  to   = module.cluster.aws_launch_template.role
}

moved {
  from = aws_autoscaling_group.role
  to   = module.cluster.aws_autoscaling_group.role
}

moved {
  from = aws_iam_role.coordinator
  to   = module.region.aws_iam_role.coordinator
}

moved {
  from = aws_iam_role_policy.coordinator
  to   = module.region.aws_iam_role_policy.coordinator
}

moved {
  from = aws_iam_role_policy_attachment.coordinator_logs
  to   = module.region.aws_iam_role_policy_attachment.coordinator_logs
}

moved {
  from = aws_lambda_function.coordinator
  to   = module.region.aws_lambda_function.coordinator
}

moved {
  from = aws_cloudwatch_event_rule.schedule
  to   = module.region.aws_cloudwatch_event_rule.schedule
}

moved {
  from = aws_cloudwatch_event_rule.spec_changes
  to   = module.region.aws_cloudwatch_event_rule.spec_changes
}

moved {
  from = aws_cloudwatch_event_target.coordinator
  to   = module.region.aws_cloudwatch_event_target.coordinator
}

moved {
  from = aws_lambda_permission.events
  to   = module.region.aws_lambda_permission.events
}
