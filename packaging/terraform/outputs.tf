output "ingress_target_group_arn" {
  value = module.cluster.ingress_target_group_arn
}

output "admin_kubeconfig_parameter" {
  description = "Read it with: k3s-asg-coordinator kubeconfig <cluster>"
  value       = module.cluster.admin_kubeconfig_parameter
}

output "auto_scaling_groups" {
  value = module.cluster.auto_scaling_groups
}

output "cluster_autoscaler_policy" {
  description = "The Cluster Autoscaler's IAM policy for this cluster (packaging/iam/cluster-autoscaler-policy.json, rendered)."
  value       = module.cluster.cluster_autoscaler_policy
}

output "alb_dns_name" {
  value = module.region.alb_dns_name
}

output "region" {
  description = "What a cluster in a stack of its own needs from this one: pass `coordinator` to its ../cluster module, and admit the two security groups on its ingress port."
  value = {
    coordinator                   = module.region.coordinator
    coordinator_security_group_id = module.region.coordinator_security_group_id
    alb_security_group_id         = module.region.alb_security_group_id
    region_spec_parameter         = module.region.region_spec_parameter
  }
}
