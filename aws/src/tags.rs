//! Instance tags that place an instance in a cluster and give it a role.

use std::fmt;
use std::str::FromStr;

/// The tag keys the agent reads. Defaults match the Terraform modules k3s-asg replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagKeys {
    pub cluster: String,
    pub role: String,
}

impl Default for TagKeys {
    fn default() -> Self {
        TagKeys { cluster: "Cluster".into(), role: "Role".into() }
    }
}

/// The tag that the Auto Scaling service puts on the instances it launches.
pub const ASG_NAME_TAG: &str = "aws:autoscaling:groupName";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Node,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Node => "node",
        }
    }

    pub fn is_server(self) -> bool {
        self == Role::ControlPlane
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "control-plane" => Ok(Role::ControlPlane),
            "node" => Ok(Role::Node),
            other => Err(format!("{other:?} is not a role; expected \"control-plane\" or \"node\"")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse() {
        assert_eq!("control-plane".parse::<Role>().unwrap(), Role::ControlPlane);
        assert_eq!("node".parse::<Role>().unwrap(), Role::Node);
        assert!("server".parse::<Role>().unwrap_err().contains("\"server\""));
        assert!("Node".parse::<Role>().is_err());
    }
}
