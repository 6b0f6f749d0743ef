output "ingress_target_group_arn" {
  value = aws_lb_target_group.ingress.arn
}

output "admin_kubeconfig_parameter" {
  description = "Read it with: k3s-asg-coordinator kubeconfig <cluster>"
  value       = "${var.prefix}/clusters/${var.cluster}/kubeconfig/admin"
}

output "instance_policies" {
  description = "Each instance role's policy (packaging/iam/<role>-policy.json.tftpl rendered for this cluster), by role: control-plane and node."
  value       = local.instance_policies
}

output "auto_scaling_groups" {
  description = "The groups' names by role (and node-spot for the Spot node group), for aws autoscaling describe-instance-refreshes and the like."
  value       = { for key, group in aws_autoscaling_group.role : key => group.name }
}

output "group_tags" {
  description = "Each group's own tags, not propagated to its instances (by group name): the Cluster Autoscaler's auto-discovery and node-template tags."
  value       = { for group in aws_autoscaling_group.role : group.name => { for t in group.tag : t.key => t.value if !t.propagate_at_launch } }
}

output "security_group_ids" {
  description = "node: every instance; control_plane: the servers."
  value       = { node = aws_security_group.node.id, control_plane = aws_security_group.control_plane.id }
}

output "names" {
  description = "Names AWS limits in length, as given (shortened with a hash when the readable one is too long)."
  value = {
    target_group = aws_lb_target_group.ingress.name
    roles        = [for role in aws_iam_role.agent : role.name]
    event_rule   = one(aws_cloudwatch_event_rule.asg_events[*].name)
  }
}

output "event_pattern" {
  description = "What the coordinator hears about this cluster (null without a coordinator)."
  value       = one(aws_cloudwatch_event_rule.asg_events[*].event_pattern)
}

output "cluster_autoscaler_policy" {
  description = "packaging/iam/cluster-autoscaler-policy.json for this cluster (and partition): the Cluster Autoscaler's permissions, scaling only the groups tagged k8s.io/cluster-autoscaler/<cluster> = owned."
  value       = local.cluster_autoscaler_policy
}
