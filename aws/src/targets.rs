//! Target-group membership as plain values: who is registered on which port,
//! in which health state (ELBv2's `TargetHealthStateEnum`).

/// A target's health state, as ELBv2 reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    Initial,
    Healthy,
    Unhealthy,
    UnhealthyDraining,
    Unused,
    Draining,
    Unavailable,
    /// A state this build does not know (kept verbatim).
    Other(String),
}

impl TargetState {
    pub fn parse(s: &str) -> TargetState {
        match s {
            "initial" => TargetState::Initial,
            "healthy" => TargetState::Healthy,
            "unhealthy" => TargetState::Unhealthy,
            "unhealthy.draining" => TargetState::UnhealthyDraining,
            "unused" => TargetState::Unused,
            "draining" => TargetState::Draining,
            "unavailable" => TargetState::Unavailable,
            other => TargetState::Other(other.to_string()),
        }
    }

    /// On its way out: deregistered and finishing its connections.
    pub fn is_draining(&self) -> bool {
        matches!(self, TargetState::Draining | TargetState::UnhealthyDraining)
    }
}

/// One registered target: instance id, port, and health state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub port: u16,
    pub state: TargetState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        assert_eq!(TargetState::parse("healthy"), TargetState::Healthy);
        assert!(TargetState::parse("draining").is_draining());
        assert!(TargetState::parse("unhealthy.draining").is_draining());
        assert!(!TargetState::parse("unused").is_draining());
        assert_eq!(TargetState::parse("weird"), TargetState::Other("weird".into()));
    }
}
