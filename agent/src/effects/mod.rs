//! One narrow trait per outside system, each with its real implementation in
//! its own module. SSM, Route53, EC2 and ELBv2 are the shared crate's
//! (`k3s_asg_aws::{ssm, route53, ec2, elbv2}`), the same the coordinator uses;
//! `parameters` keeps SSM's under its old path.
//! Tests drive the real implementations against moto, the IMDS double and the
//! stub programs; pure logic needs none of them. No adapter imports `plan` or
//! `render`.

pub mod etcd;
pub mod hostfs;
pub mod k3s;
pub mod lifecycle;
pub mod metadata;
pub mod parameters;
pub mod probes;
pub mod services;
pub mod snapshots;
pub mod supervisor;

use k3s_asg_aws::ec2::Instances;
use k3s_asg_aws::elbv2::TargetGroups;
use k3s_asg_aws::route53::Zones;

/// Every effect join, leave and run use.
pub struct Effects {
    pub metadata: Box<dyn metadata::Metadata>,
    pub instances: Box<dyn Instances>,
    pub parameters: Box<dyn parameters::Parameters>,
    pub zones: Box<dyn Zones>,
    pub target_groups: Box<dyn TargetGroups>,
    pub services: Box<dyn services::Services>,
    pub k3s: Box<dyn k3s::K3s>,
    pub etcd: Box<dyn etcd::Etcd>,
    pub lifecycle: Box<dyn lifecycle::Lifecycle>,
    pub supervisor: Box<dyn supervisor::Supervisor>,
    pub probes: Box<dyn probes::Probes>,
    pub snapshots: Box<dyn snapshots::Snapshots>,
    pub fs: hostfs::HostFs,
}
