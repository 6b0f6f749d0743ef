variable "cluster" {
  description = "Cluster name (the Cluster tag): lower-case letters, digits and '-', at most 63 characters."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.cluster))
    error_message = "cluster: 1 to 63 lower-case letters, digits and '-', beginning and ending with a letter or digit."
  }
}

variable "prefix" {
  description = "SSM prefix of the parameters (the agents' --prefix / K3S_ASG_PREFIX): a leading '/', no trailing '/'. The instance roles may read and write under it only this cluster's parameters."
  type        = string
  default     = "/k3s-asg"
  validation {
    condition     = can(regex("^(/[A-Za-z0-9_.-]+)+$", var.prefix))
    error_message = "prefix: a leading '/' and no trailing '/', e.g. /k3s-asg."
  }
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
  description = "OS of the AMI, which picks the user-data in packaging/cloud-init: al2023 or ubuntu."
  type        = string
  default     = "al2023"
  validation {
    condition     = contains(["al2023", "ubuntu"], var.os)
    error_message = "os: al2023 or ubuntu."
  }
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

variable "ingress_port" {
  description = "Port of k3s's ingress on every instance: the target group's port, the readiness probe's, and what the ALB and the coordinator's health probes reach."
  type        = number
  default     = 80
}

variable "ingress_from_security_groups" {
  description = "Security groups allowed to reach ingress_port on every instance, under names of your choice: the region's ALB and the coordinator (its health probes). Keys must be known at plan time; values may come from other resources."
  type        = map(string)
  default     = {}
}

variable "api_ingress_cidrs" {
  description = "CIDR blocks allowed to reach the Kubernetes API (6443/tcp) on the servers from outside the cluster, e.g. your VPN's; empty: only the cluster's own instances."
  type        = list(string)
  default     = []
}

variable "extra_security_group_ids" {
  description = "More security groups for every instance (SSH, monitoring, ...)."
  type        = list(string)
  default     = []
}

variable "flannel_wireguard" {
  description = "Open 51820-51821/udp between all nodes, for k3s's flannel-backend: wireguard-native."
  type        = bool
  default     = false
}

variable "embedded_registry" {
  description = "Open 5001/tcp and 6443/tcp between all nodes, for k3s's embedded registry (Spegel)."
  type        = bool
  default     = false
}

variable "coordinator" {
  description = "The region's coordinator (the region module's `coordinator` output): its function ARN and the name prefix its Lambda permission allows for EventBridge rules. null: no event rule, the coordinator sees this cluster on its schedule only."
  type = object({
    function_arn      = string
    event_rule_prefix = string
  })
  default = null
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
  description = "Labels of the node group's instances (Kubernetes label key => value), as Cluster Autoscaler node-template tags on the group; the agent renders them as k3s node-label, so scale-from-zero predicts the node that joins."
  type        = map(string)
  default     = {}
}

variable "node_template_taints" {
  description = "Taints of the node group's instances (key => \"value:Effect\", Effect one of NoSchedule, PreferNoSchedule, NoExecute), as Cluster Autoscaler node-template tags; the agent renders them as k3s node-taint."
  type        = map(string)
  default     = {}
}

variable "spot_nodes" {
  description = "A second node group of Spot instances (Role=node, the node launch template and instance role), null for none: its min and max size and several instance types of the same vCPU and memory and of the AMI's architecture (the Cluster Autoscaler predicts a new node from the first). labels and taints become its node-template tags (the agent renders them into k3s), by default node.kubernetes.io/lifecycle=spot and spot=true:PreferNoSchedule."
  type = object({
    min            = number
    max            = number
    instance_types = list(string)
    labels         = optional(map(string), { "node.kubernetes.io/lifecycle" = "spot" })
    taints         = optional(map(string), { spot = "true:PreferNoSchedule" })
  })
  default = null
  validation {
    condition     = var.spot_nodes == null || try(length(var.spot_nodes.instance_types) > 0 && var.spot_nodes.min >= 0 && var.spot_nodes.min <= var.spot_nodes.max, false)
    error_message = "spot_nodes: at least one instance type, and 0 <= min <= max."
  }
}

variable "cluster_autoscaler_on_control_plane" {
  description = "Give the control plane's instance role packaging/iam/cluster-autoscaler-policy.json (scaling this cluster's autoscaled groups only), for a Cluster Autoscaler that runs on the servers with host networking. false: attach the `cluster_autoscaler_policy` output to a role of your own."
  type        = bool
  default     = false
}
