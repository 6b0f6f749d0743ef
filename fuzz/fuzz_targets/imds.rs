//! IMDS answers: arbitrary bytes as the four identity values (split on NUL; a
//! missing part is a 404) and as a tag listing. Never panics; whatever passes
//! is a usable identity.
#![no_main]

use k3s_asg_aws::imds::{check_identity, tag_keys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let values: Vec<Option<String>> = text.split('\0').take(4).map(|s| Some(s.to_string())).collect();
    if let Ok(id) = check_identity(values) {
        assert!(id.instance_id.starts_with("i-"));
        assert!(id.zone.starts_with(&id.region) && id.zone.len() > id.region.len());
        assert!(id.local_ipv4.parse::<std::net::Ipv4Addr>().is_ok());
        for v in [&id.instance_id, &id.region, &id.zone, &id.local_ipv4] {
            assert!(!v.is_empty() && v.trim() == v.as_str());
        }
    }
    for key in tag_keys(&text) {
        assert!(!key.is_empty() && !key.contains('\n'));
    }
});
