# Bakes an AMI for k3s-asg: k3s (binary and air-gap images, pinned, checked against the
# release's published sha256sum-<arch>.txt), the k3s-asg-agent static binary and its systemd
# unit. Nothing is started at bake time; cloud-init (packaging/cloud-init) starts the agent on
# first boot. Two sources, one per shipped user-data: Amazon Linux 2023 and Ubuntu 24.04.
#
#   scripts/build-static x86_64 && packer init packaging/ami && packer build packaging/ami
#   packer build -only=amazon-ebs.ubuntu -var arch=arm64 packaging/ami     (after build-static aarch64)

packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
  }
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "k3s_version" {
  description = "The k3s release baked in: inside upstream support, with the compressed-snapshot restore fix (k3s #14528, first in v1.37.1+k3s1). Upgrade one minor at a time, servers first (README: Upgrading k3s)."
  type        = string
  default     = "v1.37.1+k3s1"
}

variable "k3s_checksums_sha256" {
  description = "Optional: the sha256 of the release's sha256sum-<arch>.txt, to pin the checksums themselves (they are otherwise fetched from the same release as the files)."
  type        = string
  default     = ""
}

variable "arch" {
  description = "amd64 or arm64"
  type        = string
  default     = "amd64"
  validation {
    condition     = var.arch == "amd64" || var.arch == "arm64"
    error_message = "The arch must be amd64 or arm64."
  }
}

variable "agent_binary" {
  description = "Path of the static k3s-asg-agent binary for this architecture; empty: dist/<x86_64|aarch64>/k3s-asg-agent of this repository (scripts/build-static)."
  type        = string
  default     = ""
}

locals {
  agent_binary = var.agent_binary != "" ? var.agent_binary : "${path.root}/../../dist/${var.arch == "arm64" ? "aarch64" : "x86_64"}/k3s-asg-agent"
  # AMI names allow letters, digits and ( ) [ ] . / - ' @ _ and spaces: not the `+` of k3s versions.
  ami_version   = replace(var.k3s_version, "+", "-")
  timestamp     = formatdate("YYYYMMDDhhmmss", timestamp())
  instance_type = var.arch == "arm64" ? "t4g.medium" : "t3.medium"
}

source "amazon-ebs" "al2023" {
  region        = var.region
  instance_type = local.instance_type
  ssh_username  = "ec2-user"
  ami_name      = "k3s-asg-al2023-${local.ami_version}-${var.arch}-${local.timestamp}"

  source_ami_filter {
    filters = {
      name                = "al2023-ami-2023.*-kernel-*-${var.arch == "arm64" ? "arm64" : "x86_64"}"
      virtualization-type = "hvm"
    }
    owners      = ["amazon"]
    most_recent = true
  }

  # The baked instances require IMDSv2 and expose tags through IMDS.
  imds_support = "v2.0"
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }
}

# Ubuntu 24.04 LTS (Canonical's images), for packaging/cloud-init/user-data-ubuntu.yaml.
source "amazon-ebs" "ubuntu" {
  region        = var.region
  instance_type = local.instance_type
  ssh_username  = "ubuntu"
  ami_name      = "k3s-asg-ubuntu-${local.ami_version}-${var.arch}-${local.timestamp}"

  source_ami_filter {
    filters = {
      name                = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-${var.arch}-server-*"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["099720109477"]
    most_recent = true
  }

  imds_support = "v2.0"
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }
}

build {
  sources = ["source.amazon-ebs.al2023", "source.amazon-ebs.ubuntu"]

  provisioner "file" {
    source      = local.agent_binary
    destination = "/tmp/k3s-asg-agent"
  }

  provisioner "file" {
    source      = "${path.root}/../../systemd/k3s-asg-agent.service"
    destination = "/tmp/k3s-asg-agent.service"
  }

  # k3s from its GitHub release, each file checked against the release's sha256sum-<arch>.txt
  # (names: k3s or k3s-arm64, k3s-airgap-images-<arch>.tar.zst) before it is installed.
  provisioner "shell" {
    environment_vars = ["K3S_VERSION=${var.k3s_version}", "ARCH=${var.arch}", "CHECKSUMS_SHA256=${var.k3s_checksums_sha256}"]
    inline = [
      "set -eu",
      "suffix=$([ \"$ARCH\" = arm64 ] && echo -arm64 || true)",
      "base=https://github.com/k3s-io/k3s/releases/download/$(printf %s \"$K3S_VERSION\" | sed 's/+/%2B/')",
      "work=$(mktemp -d) && cd \"$work\"",
      "curl -fsSLo \"sha256sum-$ARCH.txt\" \"$base/sha256sum-$ARCH.txt\"",
      "if [ -n \"$CHECKSUMS_SHA256\" ]; then echo \"$CHECKSUMS_SHA256  sha256sum-$ARCH.txt\" | sha256sum -c -; fi",
      "curl -fsSLo \"k3s$suffix\" \"$base/k3s$suffix\"",
      "curl -fsSLo \"k3s-airgap-images-$ARCH.tar.zst\" \"$base/k3s-airgap-images-$ARCH.tar.zst\"",
      "grep -E \" (k3s$suffix|k3s-airgap-images-$ARCH\\.tar\\.zst)$\" \"sha256sum-$ARCH.txt\" > wanted.txt",
      "[ \"$(wc -l < wanted.txt)\" -eq 2 ] || { echo \"sha256sum-$ARCH.txt lacks k3s$suffix or k3s-airgap-images-$ARCH.tar.zst\" >&2; exit 1; }",
      "sha256sum -c wanted.txt",
      "sudo install -m 0755 \"k3s$suffix\" /usr/local/bin/k3s",
      "sudo mkdir -p /var/lib/rancher/k3s/agent/images",
      "sudo install -m 0644 \"k3s-airgap-images-$ARCH.tar.zst\" /var/lib/rancher/k3s/agent/images/k3s-airgap-images.tar.zst",
      "cd / && rm -rf \"$work\"",
      "sudo install -m 0755 /tmp/k3s-asg-agent /usr/local/bin/k3s-asg-agent",
      "sudo install -m 0644 /tmp/k3s-asg-agent.service /etc/systemd/system/k3s-asg-agent.service",
      "sudo systemctl daemon-reload",
      "/usr/local/bin/k3s --version",
      "/usr/local/bin/k3s-asg-agent --version"
    ]
  }
}
