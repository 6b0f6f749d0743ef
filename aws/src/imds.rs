//! What the agent takes from IMDS, checked (pure: fuzzed in fuzz/).

/// Who and where an instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub instance_id: String,
    pub region: String,
    pub zone: String,
    pub local_ipv4: String,
}

/// The paths under `/latest/meta-data/` that make an [`Identity`], in the order
/// [`check_identity`] takes their values.
pub const IDENTITY_PATHS: [&str; 4] = ["instance-id", "placement/region", "placement/availability-zone", "local-ipv4"];

/// A metadata value that makes no sense; `path` is under `/latest/meta-data/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataError {
    pub path: &'static str,
    pub problem: String,
}

/// Checks what IMDS answered for [`IDENTITY_PATHS`], in that order (`None`: 404).
pub fn check_identity(values: Vec<Option<String>>) -> Result<Identity, MetadataError> {
    let mut values = values.into_iter().chain(std::iter::repeat(None));
    let mut next = |path: &'static str| {
        let bad = move |problem: String| MetadataError { path, problem };
        match values.next().flatten().map(|s| s.trim().to_string()) {
            None => Err(bad("absent (IMDS answered 404)".into())),
            Some(s) if s.is_empty() => Err(bad("empty".into())),
            Some(s) if s.len() > 64 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') => {
                Err(bad(format!("{:?} is not a metadata value of this kind", s.chars().take(64).collect::<String>())))
            }
            Some(s) => Ok((bad, s)),
        }
    };
    let (bad, instance_id) = next(IDENTITY_PATHS[0])?;
    if !crate::names::is_instance_id(&instance_id) {
        return Err(bad(format!("{instance_id:?} is not an instance id (i- and 8 or 17 hex digits)")));
    }
    let (bad, region) = next(IDENTITY_PATHS[1])?;
    if !crate::names::is_region(&region) {
        return Err(bad(format!("{region:?} is not a region name")));
    }
    let (bad, zone) = next(IDENTITY_PATHS[2])?;
    let rest = zone.strip_prefix(region.as_str()).unwrap_or_default();
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(bad(format!("{zone:?} is not an availability zone of {region}")));
    }
    let (bad, local_ipv4) = next(IDENTITY_PATHS[3])?;
    if local_ipv4.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(bad(format!("{local_ipv4:?} is not an IPv4 address")));
    }
    Ok(Identity { instance_id, region, zone, local_ipv4 })
}

/// The tag keys in an IMDS `tags/instance` listing (one per line).
pub fn tag_keys(listing: &str) -> Vec<&str> {
    listing.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: &str, region: &str, zone: &str, ip: &str) -> Result<(), String> {
        let v = |s: &str| (!s.is_empty()).then(|| s.to_string());
        check_identity(vec![v(id), v(region), v(zone), v(ip)]).map(|_| ()).map_err(|e| format!("/latest/meta-data/{}: {}", e.path, e.problem))
    }

    #[test]
    fn real_shapes_pass() {
        check("i-0123456789abcdef0", "us-east-1", "us-east-1a", "10.0.1.7").unwrap();
        check("i-12345678", "us-gov-west-1", "us-gov-west-1b", "172.31.0.1").unwrap();
        check("i-0123456789abcdef0", "us-west-2", "us-west-2-lax-1a", "10.0.0.1").unwrap();
    }

    #[test]
    fn nonsense_names_the_path() {
        for (args, path) in [
            (("i-XYZ", "us-east-1", "us-east-1a", "10.0.0.1"), "instance-id"),
            (("i-0123456789abcdef", "us-east-1", "us-east-1a", "10.0.0.1"), "instance-id"),
            (("", "us-east-1", "us-east-1a", "10.0.0.1"), "instance-id"),
            (("i-12345678", "us_east_1", "us-east-1a", "10.0.0.1"), "placement/region"),
            (("i-12345678", "useast", "useasta", "10.0.0.1"), "placement/region"),
            (("i-12345678", "us-east-1", "us-east-1", "10.0.0.1"), "placement/availability-zone"),
            (("i-12345678", "us-east-1", "eu-west-1a", "10.0.0.1"), "placement/availability-zone"),
            (("i-12345678", "us-east-1", "us-east-1a", "::1"), "local-ipv4"),
            (("i-12345678", "us-east-1", "us-east-1a", "10.0.0"), "local-ipv4"),
        ] {
            let err = check(args.0, args.1, args.2, args.3).unwrap_err();
            assert!(err.starts_with(&format!("/latest/meta-data/{path}:")), "{args:?}: {err}");
        }
        assert!(check_identity(vec![]).is_err(), "too few values");
    }

    #[test]
    fn tag_listing() {
        assert_eq!(tag_keys("Cluster\nRole\n\n  Name \n"), vec!["Cluster", "Role", "Name"]);
    }
}
