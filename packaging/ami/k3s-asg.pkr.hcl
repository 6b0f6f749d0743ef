# Bakes an AMI for k3s-asg: k3s (binary and air-gap images, pinned), the
# k3s-asg-agent static binary and its systemd unit. Nothing is started at bake
# time; cloud-init (packaging/cloud-init) starts the agent on first boot.
#
#   packer init packaging/ami && packer build -var agent_binary=dist/x86_64/k3s-asg-agent packaging/ami

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
  type    = string
  default = "v1.31.4+k3s1"
}

variable "arch" {
  description = "amd64 or arm64"
  type        = string
  default     = "amd64"
}

variable "agent_binary" {
  description = "Path of the static k3s-asg-agent binary for this architecture."
  type        = string
}

source "amazon-ebs" "al2023" {
  region        = var.region
  instance_type = var.arch == "arm64" ? "t4g.medium" : "t3.medium"
  ssh_username  = "ec2-user"
  ami_name      = "k3s-asg-${var.k3s_version}-${var.arch}-{{timestamp}}"

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

build {
  sources = ["source.amazon-ebs.al2023"]

  provisioner "file" {
    source      = var.agent_binary
    destination = "/tmp/k3s-asg-agent"
  }

  provisioner "file" {
    source      = "${path.root}/../../systemd/k3s-asg-agent.service"
    destination = "/tmp/k3s-asg-agent.service"
  }

  provisioner "shell" {
    environment_vars = ["K3S_VERSION=${var.k3s_version}", "ARCH=${var.arch}"]
    inline = [
      "set -eu",
      "suffix=$([ \"$ARCH\" = arm64 ] && echo -arm64 || true)",
      "base=https://github.com/k3s-io/k3s/releases/download/$(printf %s \"$K3S_VERSION\" | sed 's/+/%2B/')",
      "sudo curl -fsSLo /usr/local/bin/k3s \"$base/k3s$suffix\"",
      "sudo chmod 0755 /usr/local/bin/k3s",
      "sudo mkdir -p /var/lib/rancher/k3s/agent/images",
      "sudo curl -fsSLo /var/lib/rancher/k3s/agent/images/k3s-airgap-images.tar.zst \"$base/k3s-airgap-images-$ARCH.tar.zst\"",
      "sudo install -m 0755 /tmp/k3s-asg-agent /usr/local/bin/k3s-asg-agent",
      "sudo install -m 0644 /tmp/k3s-asg-agent.service /etc/systemd/system/k3s-asg-agent.service",
      "sudo systemctl daemon-reload",
      "/usr/local/bin/k3s-asg-agent --version"
    ]
  }
}
