//! k3s join tokens.
//!
//! The first control-plane agent creates an *election* token
//! (`k3sasg{instance-id}x{hex}`: it names its creator, so a restarted creator
//! knows it won). Once its k3s is up the creator replaces it with k3s's
//! *secure* form, `K10<sha256 of the cluster CA bundle>::server:<password>`,
//! which lets every joiner verify the server it talks to.

use crate::secret::Secret;
use rand::Rng;

const ELECTION_PREFIX: &str = "k3sasg";

pub fn new_election_token(instance_id: &str) -> Secret {
    let bytes: [u8; 16] = rand::rng().random();
    Secret::new(format!("{ELECTION_PREFIX}{}x{}", instance_id.replace('-', ""), hex::encode(bytes)))
}

/// The instance id that created an election token, if the token is one.
pub fn election_creator(token: &str) -> Option<String> {
    let rest = token.strip_prefix(ELECTION_PREFIX)?;
    let (id, _) = rest.split_once('x')?;
    let hexpart = id.strip_prefix('i')?;
    Some(format!("i-{hexpart}"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureToken {
    pub ca_hash: String,
    pub password: String,
}

pub fn parse_secure(token: &str) -> Option<SecureToken> {
    let rest = token.strip_prefix("K10")?;
    let (hash, creds) = rest.split_once("::")?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (_user, password) = creds.split_once(':')?;
    Some(SecureToken { ca_hash: hash.to_ascii_lowercase(), password: password.to_string() })
}

/// The agent token's password, derived from the server token's: every server of a cluster
/// configures the same `agent-token` without another parameter to agree on, a recovery that
/// starts a new cluster with a new token gets a new agent token with it, and the server token
/// cannot be recovered from it (SHA-256 of a domain label and the password).
pub fn agent_password(server_password: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("k3s-asg agent-token v1\n{server_password}").as_bytes());
    hex::encode(&digest[..16])
}

/// The agent token in k3s's secure form, for the cluster of this secure server token.
pub fn agent_token_of(server: &SecureToken) -> String {
    format!("K10{}::node:{}", server.ca_hash, agent_password(&server.password))
}

/// The password part k3s derives a cluster from: the whole election token, or the
/// part after `server:` of a secure token.
/// k3s's short hash of a token: the first 12 hex digits of the sha256 of its password (the
/// `K3s-Token-Hash` metadata of its S3 snapshots, and the key of its bootstrap data in etcd):
/// k3s-io/k3s `pkg/util/token.go` `GetTokenHash`/`ShortHash`, `pkg/cluster/encrypt.go`.
pub fn short_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(password_of(token).as_bytes()))[..12].to_string()
}

pub fn password_of(token: &str) -> &str {
    match token.strip_prefix("K10").and_then(|r| r.split_once("::")) {
        Some((_, creds)) => creds.split_once(':').map(|(_, p)| p).unwrap_or(creds),
        None => token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_names_its_creator() {
        let t = new_election_token("i-0123456789abcdef0");
        assert_eq!(election_creator(t.expose()).as_deref(), Some("i-0123456789abcdef0"));
        assert!(parse_secure(t.expose()).is_none());
        assert_eq!(password_of(t.expose()), t.expose());
    }

    #[test]
    fn secure_form() {
        let hash = "a".repeat(64);
        let t = format!("K10{hash}::server:secretpw");
        let s = parse_secure(&t).unwrap();
        assert_eq!(s.ca_hash, hash);
        assert_eq!(s.password, "secretpw");
        assert_eq!(password_of(&t), "secretpw");
        assert_eq!(election_creator(&t), None);
        assert!(parse_secure("K10short::server:x").is_none());
    }

    #[test]
    fn agent_token_follows_the_server_token() {
        let hash = "b".repeat(64);
        let server = parse_secure(&format!("K10{hash}::server:secretpw")).unwrap();
        let agent = agent_token_of(&server);
        let parsed = parse_secure(&agent).unwrap();
        assert_eq!(parsed.ca_hash, hash);
        assert_eq!(parsed.password, agent_password("secretpw"));
        assert_eq!(parsed.password.len(), 32);
        assert!(agent.contains("::node:") && !agent.contains("secretpw"));
        assert_ne!(agent_password("secretpw"), agent_password("another"));
    }
}
