//! Spec parsing (cluster, endpoint, region) from arbitrary parameter values:
//! never panics; every error names the parameter and a field; whatever parses,
//! written back as JSON, parses again to the same spec.
#![no_main]

use k3s_asg_aws::spec::{ClusterSpec, EndpointSpec, RegionSpec, SpecError};
use libfuzzer_sys::fuzz_target;

fn named(e: &SpecError, parameter: &str) {
    assert_eq!(e.parameter, parameter, "the error names the parameter");
    assert!(!e.field.is_empty(), "the error names a field: {e:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match ClusterSpec::parse("/fuzz/clusters/c/config", text) {
        Ok(spec) => {
            let again = serde_json::to_string(&spec).expect("a spec serialises");
            assert_eq!(ClusterSpec::parse("/fuzz/clusters/c/config", &again).expect("round trip parses"), spec);
        }
        Err(e) => named(&e, "/fuzz/clusters/c/config"),
    }
    match EndpointSpec::parse("/fuzz/endpoints/e", text) {
        Ok(spec) => {
            let again = serde_json::to_string(&spec).expect("a spec serialises");
            assert_eq!(EndpointSpec::parse("/fuzz/endpoints/e", &again).expect("round trip parses"), spec);
        }
        Err(e) => named(&e, "/fuzz/endpoints/e"),
    }
    match RegionSpec::parse("/fuzz/regions/r", text) {
        Ok(spec) => {
            let again = serde_json::to_string(&spec).expect("a spec serialises");
            assert_eq!(RegionSpec::parse("/fuzz/regions/r", &again).expect("round trip parses"), spec);
        }
        Err(e) => named(&e, "/fuzz/regions/r"),
    }
});
