//! Naming rules: cluster names, DNS hostnames, instance ids.

/// A cluster name becomes one DNS label (`*--{cluster}.{region}.{zone}`), so it
/// follows RFC 1123 label rules, lower case only.
pub fn check_cluster_name(name: &str) -> Result<(), String> {
    check_label(name).map_err(|why| format!("{name:?} is not a valid cluster name: {why}"))
}

fn check_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("it is empty");
    }
    if label.len() > 63 {
        return Err("it is longer than 63 characters");
    }
    if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err("only lower-case letters, digits and '-' are allowed");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("it must not start or end with '-'");
    }
    Ok(())
}

/// A fully qualified DNS hostname (no trailing dot needed, no wildcard).
pub fn check_hostname(name: &str) -> Result<(), String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    let labels: Vec<&str> = trimmed.split('.').collect();
    if labels.len() < 2 {
        return Err(format!("{name:?} is not a fully qualified hostname"));
    }
    for label in labels {
        check_label(label).map_err(|why| format!("{name:?} is not a valid hostname: label {label:?}: {why}"))?;
    }
    Ok(())
}

/// Normalises a DNS name the way Route53 returns it: lower case, trailing dot.
pub fn fqdn(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    }
}

/// An AWS region name: lower-case words and a number (`us-east-1`, `us-gov-west-1`).
pub fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

/// `i-` followed by 8 or 17 lower-case hex digits, as EC2 writes them (the one rule of
/// both programs: IMDS answers, API record set identifiers).
pub fn is_instance_id(s: &str) -> bool {
    match s.strip_prefix("i-") {
        Some(rest) => (rest.len() == 8 || rest.len() == 17) && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names() {
        assert!(check_cluster_name("alpha").is_ok());
        assert!(check_cluster_name("alpha-2").is_ok());
        assert!(check_cluster_name("Alpha").is_err());
        assert!(check_cluster_name("-a").is_err());
        assert!(check_cluster_name("a_b").is_err());
        assert!(check_cluster_name("").is_err());
        assert!(check_cluster_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn hostnames() {
        assert!(check_hostname("api.alpha.us-east-1.example.com").is_ok());
        assert!(check_hostname("api.example.com.").is_ok());
        assert!(check_hostname("localhost").is_err());
        assert!(check_hostname("a..b").is_err());
        assert!(check_hostname("*.example.com").is_err());
        assert_eq!(fqdn("API.Example.com"), "api.example.com.");
    }

    #[test]
    fn instance_ids() {
        assert!(is_instance_id("i-0123456789abcdef0"));
        assert!(is_instance_id("i-01234567"));
        assert!(!is_instance_id("i-xyz"));
        assert!(!is_instance_id("i-0123456789ABCDEF0"), "EC2 writes ids in lower case");
        assert!(!is_instance_id("us-east-1/blog.example.com"));
    }
}
