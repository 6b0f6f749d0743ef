output "coordinator" {
  description = "Pass to each ../cluster module as `coordinator`."
  value = {
    function_arn      = aws_lambda_function.coordinator.arn
    event_rule_prefix = local.event_rule_prefix
  }
}

output "coordinator_security_group_id" {
  description = "The coordinator's security group: each cluster admits it on its ingress port (health probes)."
  value       = aws_security_group.coordinator.id
}

output "alb_security_group_id" {
  description = "The created ALB's security group (null with an existing ALB): each cluster admits it on its ingress port."
  value       = one(aws_security_group.alb[*].id)
}

output "alb_arn" {
  value = local.alb_arn
}

output "alb_dns_name" {
  value = local.alb_dns_name
}

output "listener_arns" {
  value = local.listener_arns
}

output "region_spec_parameter" {
  value = aws_ssm_parameter.region_spec.name
}

output "wildcard_record" {
  description = "The record sending the clusters' names to the ALB."
  value       = aws_route53_record.wildcard.name
}

output "coordinator_policy" {
  description = "The coordinator role's policy: packaging/iam/coordinator-policy.json.tftpl rendered for this region."
  value       = local.coordinator_policy
}
