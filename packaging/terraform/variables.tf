variable "cluster" {
  description = "Cluster name (the Cluster tag): lower-case letters, digits and '-'."
  type        = string
}

variable "region" {
  description = "AWS region of the cluster."
  type        = string
}

variable "ami_id" {
  description = "AMI baked with packaging/ami (k3s, air-gap images, k3s-asg-agent and its unit)."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the instances."
  type        = list(string)
}

variable "vpc_id" {
  type = string
}

variable "api_hostname" {
  description = "The cluster's API DNS name, e.g. api.alpha.us-east-1.example.com."
  type        = string
}

variable "hosted_zone_id" {
  description = "Route53 zone holding api_hostname."
  type        = string
}

variable "control_plane_count" {
  type    = number
  default = 3
}

variable "node_min" {
  type    = number
  default = 2
}

variable "node_max" {
  type    = number
  default = 10
}

variable "instance_type" {
  type    = string
  default = "t3.large"
}

variable "coordinator_zip" {
  description = "Lambda zip of k3s-asg-coordinator (its binary as bootstrap)."
  type        = string
}
