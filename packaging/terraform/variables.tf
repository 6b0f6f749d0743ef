variable "cluster" {
  description = "Cluster name (the Cluster tag): lower-case letters, digits and '-'."
  type        = string
}

variable "region" {
  description = "AWS region of the cluster."
  type        = string
}

variable "ami_id" {
  description = "AMI baked with packaging/ami (k3s, air-gap images, k3s-asg-agent and its unit). A change rolls the control plane (and the nodes, unless node_ami_id holds them back) through an instance refresh."
  type        = string
}

variable "node_ami_id" {
  description = "AMI of the worker nodes when it differs from ami_id; empty: ami_id. Lets a rolling AMI upgrade do the control plane first, then the nodes (README \"Rolling AMI upgrade\")."
  type        = string
  default     = ""
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

variable "snapshot_bucket" {
  description = "S3 bucket for etcd snapshots (the spec's snapshots.bucket); empty: no snapshots. When set, the spec gets a snapshots section and the control-plane role gets packaging/iam/control-plane-snapshots-policy.json for this bucket and folder."
  type        = string
  default     = ""
}

variable "snapshot_folder" {
  description = "Key prefix of this cluster's snapshots in the bucket, without leading or trailing '/'; empty: clusters/<cluster>."
  type        = string
  default     = ""
}

variable "snapshot_region" {
  description = "Region of the snapshot bucket when it is not the cluster's; empty: the instances' own region."
  type        = string
  default     = ""
}

variable "create_snapshot_bucket" {
  description = "Create snapshot_bucket here (private, SSE-S3, no versioning, no lifecycle rules) instead of using an existing one."
  type        = bool
  default     = false
}
