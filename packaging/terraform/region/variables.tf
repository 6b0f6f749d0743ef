variable "vpc_id" {
  description = "The VPC of the clusters, the ALB and the coordinator."
  type        = string
}

variable "zone" {
  description = "DNS zone of the clusters' names `*--{cluster}.{region}.{zone}` (the region spec's `zone`), e.g. example.com."
  type        = string
}

variable "zone_id" {
  description = "Route53 hosted zone of `zone`: it gets the record `*.{region}.{zone}` → the ALB."
  type        = string
}

variable "coordinator_zone_ids" {
  description = "More Route53 zones the coordinator may change besides zone_id: the zones of the shared endpoints' hostnames and of the clusters' API hostnames (it removes the API records of instances that are gone). Only A and TXT records, UPSERT and DELETE."
  type        = list(string)
  default     = []
}

variable "alb_arn" {
  description = "An existing ALB to share; empty: this module creates one (alb_subnet_ids)."
  type        = string
  default     = ""
}

variable "listener_arns" {
  description = "With alb_arn: the listeners the coordinator manages rules on."
  type        = list(string)
  default     = []
}

variable "alb_name" {
  description = "Name of the created ALB (at most 32 characters); empty: k3s-asg-{region}."
  type        = string
  default     = ""
  validation {
    condition     = length(var.alb_name) <= 32
    error_message = "alb_name: at most 32 characters."
  }
}

variable "alb_subnet_ids" {
  description = "Subnets of the created ALB, in at least two availability zones (public ones for an internet-facing ALB)."
  type        = list(string)
  default     = []
}

variable "alb_internal" {
  description = "Create an internal ALB instead of an internet-facing one."
  type        = bool
  default     = false
}

variable "alb_ingress_cidrs" {
  description = "Who may reach the created ALB."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "alb_deletion_protection" {
  description = "Deletion protection of the created ALB (set false before `terraform destroy`)."
  type        = bool
  default     = true
}

variable "certificate_arn" {
  description = "ACM certificate for the created ALB's HTTPS listener on 443 (then port 80 redirects to it); empty: HTTP on 80 only, and endpoints set listener_port 80."
  type        = string
  default     = ""
}

variable "target_ports" {
  description = "The clusters' ingress ports (their target groups' ports): where the ALB forwards and the coordinator's health probes go."
  type        = list(number)
  default     = [80]
}

variable "rules_quota" {
  description = "The ALB's rules quota (region spec `rules_quota`)."
  type        = number
  default     = 100
}

variable "prefix" {
  description = "SSM prefix of the specs (K3S_ASG_PREFIX): a leading '/', no trailing '/'."
  type        = string
  default     = "/k3s-asg"
  validation {
    condition     = can(regex("^(/[A-Za-z0-9_.-]+)+$", var.prefix))
    error_message = "prefix: a leading '/' and no trailing '/', e.g. /k3s-asg."
  }
}

variable "owner" {
  description = "Owner id of the coordinator's rules and records (K3S_ASG_OWNER); empty: derived from prefix, as the coordinator derives it (k3s-asg for /k3s-asg)."
  type        = string
  default     = ""
}

variable "refresh_s" {
  description = "How long a warm coordinator keeps the specs it read (K3S_ASG_REFRESH_S)."
  type        = number
  default     = 300
}

variable "coordinator_zip" {
  description = "Lambda zip of k3s-asg-coordinator (its binary as bootstrap): dist/<arch>/k3s-asg-coordinator-lambda.zip from scripts/build-static."
  type        = string
}

variable "coordinator_architecture" {
  description = "Lambda architecture of coordinator_zip: arm64 (dist/aarch64) or x86_64 (dist/x86_64)."
  type        = string
  default     = "arm64"
  validation {
    condition     = contains(["arm64", "x86_64"], var.coordinator_architecture)
    error_message = "coordinator_architecture: arm64 or x86_64."
  }
}

variable "coordinator_subnet_ids" {
  description = "Private subnets of the coordinator Lambda: in the clusters' VPC (its health probes reach the instances' private addresses), with a NAT gateway or VPC endpoints for the AWS APIs."
  type        = list(string)
}

variable "schedule" {
  description = "How often the coordinator reconciles without an event."
  type        = string
  default     = "rate(5 minutes)"
}

variable "log_retention_days" {
  description = "Retention of the coordinator's log group /k3s-asg/coordinator."
  type        = number
  default     = 365
}
