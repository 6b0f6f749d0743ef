//! The coordinator's behaviour, end to end: `k3s-asg-coordinator` against moto through the
//! test bed's recording proxy — rules and latency records for clusters and shared endpoints,
//! owned safely. One module per behaviour.

mod api_record_collection;
mod bad_input;
mod common;
mod modes;
mod reconcile;
mod several_coordinators;
