//! One narrow trait per outside system, each with its real implementation in
//! its own module. Tests drive the real implementations against moto, the IMDS
//! double and the stub programs; pure logic needs none of them.

pub mod dns;
pub mod hostfs;
pub mod instances;
pub mod k3s;
pub mod lifecycle;
pub mod metadata;
pub mod parameters;
pub mod probes;
pub mod services;
pub mod supervisor;
pub mod target_groups;

/// Every effect the join path uses.
pub struct Effects {
    pub metadata: Box<dyn metadata::Metadata>,
    pub instances: Box<dyn instances::Instances>,
    pub parameters: Box<dyn parameters::Parameters>,
    pub dns: Box<dyn dns::Dns>,
    pub target_groups: Box<dyn target_groups::TargetGroups>,
    pub services: Box<dyn services::Services>,
    pub k3s: Box<dyn k3s::K3s>,
    pub lifecycle: Box<dyn lifecycle::Lifecycle>,
    pub supervisor: Box<dyn supervisor::Supervisor>,
    pub probes: Box<dyn probes::Probes>,
    pub fs: hostfs::HostFs,
}
