variable "cluster" {
  description = "Cluster name (the Cluster tag): lower-case letters, digits and '-'."
  type        = string
}

variable "region" {
  description = "AWS region of the cluster."
  type        = string
}

variable "prefix" {
  description = "SSM prefix of the parameters (the programs' --prefix / K3S_ASG_PREFIX): a leading '/', no trailing '/'. The IAM policies are rendered for it."
  type        = string
  default     = "/k3s-asg"
}

variable "coordinator_zone_ids" {
  description = "More Route53 zones the coordinator may change (A and TXT records, UPSERT and DELETE), besides zone_id and hosted_zone_id: the zones of shared endpoints' hostnames."
  type        = list(string)
  default     = []
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

variable "os" {
  description = "OS of the AMIs (packaging/ami's al2023 or ubuntu source): picks the matching user-data."
  type        = string
  default     = "al2023"
}

variable "subnet_ids" {
  description = "Private subnets for the instances (and the coordinator, unless coordinator_subnet_ids)."
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
  description = "Route53 zone holding api_hostname (and `zone`, unless zone_id)."
  type        = string
}

variable "zone" {
  description = "DNS zone of the clusters' names `*--{cluster}.{region}.{zone}`, e.g. example.com: the region spec's `zone`."
  type        = string
}

variable "zone_id" {
  description = "Route53 zone of `zone` (gets `*.{region}.{zone}` → the ALB); empty: hosted_zone_id."
  type        = string
  default     = ""
}

variable "alb_arn" {
  description = "An existing ALB to share; empty: the region module creates one in alb_subnet_ids."
  type        = string
  default     = ""
}

variable "listener_arns" {
  description = "With alb_arn: the listeners the coordinator manages rules on."
  type        = list(string)
  default     = []
}

variable "alb_security_group_id" {
  description = "With alb_arn: the existing ALB's security group, admitted on the clusters' ingress port."
  type        = string
  default     = ""
}

variable "alb_subnet_ids" {
  description = "Public subnets (two availability zones or more) of the ALB the region module creates."
  type        = list(string)
  default     = []
}

variable "certificate_arn" {
  description = "ACM certificate for the created ALB's HTTPS listener; empty: HTTP on port 80 only."
  type        = string
  default     = ""
}

variable "api_ingress_cidrs" {
  description = "CIDR blocks that may reach the Kubernetes API (6443/tcp) from outside the cluster."
  type        = list(string)
  default     = []
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
  description = "Lambda zip of k3s-asg-coordinator (its binary as bootstrap); empty: dist/<arch>/k3s-asg-coordinator-lambda.zip of this repository (scripts/build-static)."
  type        = string
  default     = ""
}

variable "coordinator_architecture" {
  description = "arm64 (dist/aarch64) or x86_64 (dist/x86_64)."
  type        = string
  default     = "arm64"
}

variable "coordinator_subnet_ids" {
  description = "Private subnets of the coordinator Lambda (NAT or VPC endpoints for the AWS APIs); empty: subnet_ids."
  type        = list(string)
  default     = []
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

variable "node_template_labels" {
  description = "Labels of the node group's instances, as Cluster Autoscaler node-template tags on the group (the agent renders them as k3s node-label)."
  type        = map(string)
  default     = {}
}

variable "node_template_taints" {
  description = "Taints of the node group's instances (key => \"value:Effect\"), as Cluster Autoscaler node-template tags (the agent renders them as k3s node-taint)."
  type        = map(string)
  default     = {}
}

variable "spot_nodes" {
  description = "The Spot node group (README \"The Cluster Autoscaler and other AWS-aware tools\"): min, max, instance types of the same vCPU and memory and of the AMI's architecture, and optionally labels and taints (default node.kubernetes.io/lifecycle=spot, spot=true:PreferNoSchedule); null: none."
  type = object({
    min            = number
    max            = number
    instance_types = list(string)
    labels         = optional(map(string), { "node.kubernetes.io/lifecycle" = "spot" })
    taints         = optional(map(string), { spot = "true:PreferNoSchedule" })
  })
  # 2 vCPU and 8 GiB each, like the default instance_type t3.large (x86_64).
  default = { min = 0, max = 3, instance_types = ["t3.large", "t3a.large", "m5.large", "m5a.large", "m6i.large", "m6a.large"] }
}

variable "cluster_autoscaler_on_control_plane" {
  description = "Give the control plane's instance role packaging/iam/cluster-autoscaler-policy.json, for a Cluster Autoscaler run on the servers; false: attach the cluster_autoscaler_policy output to a role of your own."
  type        = bool
  default     = false
}
