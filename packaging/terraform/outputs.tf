output "ingress_target_group_arn" {
  value = aws_lb_target_group.ingress.arn
}

output "admin_kubeconfig_parameter" {
  description = "Read it with: k3s-asg-coordinator kubeconfig <cluster>"
  value       = "/k3s-asg/clusters/${var.cluster}/kubeconfig/admin"
}
