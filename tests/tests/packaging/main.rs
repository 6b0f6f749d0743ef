//! Packaging artefacts checked by the tools their own field uses (IAM policies, Terraform,
//! cloud-init, the AMI template, the systemd unit), and the demo the README starts with.

mod ami;
mod cloud_init;
mod demo;
mod iam_policies;
mod systemd;
mod terraform;
