//! SSM Parameter Store names (DESIGN.md, "SSM parameters").

/// The prefix under which a region's k3s-asg parameters live (default `/k3s-asg`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(String);

pub const DEFAULT_PREFIX: &str = "/k3s-asg";

impl Default for Prefix {
    fn default() -> Self {
        Prefix(DEFAULT_PREFIX.into())
    }
}

impl Prefix {
    /// Accepts `/a/b` or `/a/b/`; refuses names SSM would refuse.
    pub fn new(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim_end_matches('/');
        if !trimmed.starts_with('/') {
            return Err(format!("prefix {raw:?} must start with '/'"));
        }
        if !trimmed[1..].split('/').all(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))) {
            return Err(format!("prefix {raw:?} may hold only a-z, A-Z, 0-9, '_', '.', '-' between '/'"));
        }
        Ok(Prefix(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn cluster_config(&self, cluster: &str) -> String {
        format!("{}/clusters/{cluster}/config", self.0)
    }
    pub fn cluster_token(&self, cluster: &str) -> String {
        format!("{}/clusters/{cluster}/token", self.0)
    }
    /// k3s's agent token in its secure form (`K10<ca hash>::node:<password>`): what nodes join
    /// with. Nodes never read the server token.
    pub fn agent_token(&self, cluster: &str) -> String {
        format!("{}/clusters/{cluster}/agent-token", self.0)
    }
    pub fn admin_kubeconfig(&self, cluster: &str) -> String {
        format!("{}/clusters/{cluster}/kubeconfig/admin", self.0)
    }
    pub fn drain_kubeconfig(&self, cluster: &str) -> String {
        format!("{}/clusters/{cluster}/kubeconfig/drain", self.0)
    }
    /// The folder of the cluster's first-server elections: one String parameter per epoch,
    /// `{prefix}/clusters/{cluster}/election/{epoch}`, created with `Overwrite=false`.
    pub fn elections(&self, cluster: &str) -> String {
        format!("{}/clusters/{cluster}/election", self.as_str())
    }

    pub fn endpoint(&self, name: &str) -> String {
        format!("{}/endpoints/{name}", self.0)
    }
    pub fn region(&self, region: &str) -> String {
        format!("{}/regions/{region}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let p = Prefix::default();
        assert_eq!(p.cluster_config("alpha"), "/k3s-asg/clusters/alpha/config");
        assert_eq!(p.cluster_token("alpha"), "/k3s-asg/clusters/alpha/token");
        assert_eq!(p.admin_kubeconfig("alpha"), "/k3s-asg/clusters/alpha/kubeconfig/admin");
        assert_eq!(p.drain_kubeconfig("alpha"), "/k3s-asg/clusters/alpha/kubeconfig/drain");
        assert_eq!(Prefix::new("/x/y/").unwrap().region("eu-west-1"), "/x/y/regions/eu-west-1");
        assert!(Prefix::new("x").is_err());
        assert!(Prefix::new("/a//b").is_err());
        assert!(Prefix::new("/a b").is_err());
    }
}
