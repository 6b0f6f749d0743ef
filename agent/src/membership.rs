//! Target-group membership, one home: the instance is registered into every target group of
//! its role only once it can serve (join), into groups a spec edit adds (converge), and leaves
//! them, waiting out connection draining, when a spec edit removes them or the instance leaves.
//! What it was put into is recorded in the state file (`State::registrations`), which is what a
//! leave undoes with what the spec names now.
//!
//! [`missing`] decides (pure); [`ensure`], [`register`] and [`remove`] perform, like a
//! finalizer: a registration already there is not made again, a target already draining or
//! gone is not deregistered again, and [`remove`] is correct when [`ensure`] never ran.

use crate::effects::Effects;
use crate::error::Result;
use crate::state::State;
use crate::wait::{Hurry, Waiter};
use k3s_asg_aws::spec::{ClusterSpec, TargetGroupSpec};
use k3s_asg_aws::tags::Role;
use k3s_asg_aws::targets::{Member, TargetState};
use std::time::Duration;

/// Target groups this instance is not yet registered in (a draining or absent
/// target counts as not registered).
pub fn missing<'a>(
    spec: &'a ClusterSpec,
    role: Role,
    instance_id: &str,
    members_of: impl Fn(&str) -> Option<&'a [Member]>,
) -> Vec<&'a TargetGroupSpec> {
    spec.target_groups_for(role)
        .filter(|tg| {
            let members = members_of(&tg.arn).unwrap_or(&[]);
            !members.iter().any(|m| m.id == instance_id && m.port == tg.port && !m.state.is_draining())
        })
        .collect()
}

/// Registers into every target group of the role (where not registered already) and records
/// each in `st`; what was recorded before stays recorded (a spec edited since: `run`
/// deregisters it after draining, a leave undoes it).
pub async fn ensure(fx: &Effects, spec: &ClusterSpec, role: Role, me: &str, st: &mut State) -> Result<()> {
    for tg in spec.target_groups_for(role) {
        let members = fx.target_groups.members(&tg.arn).await?;
        let missing = missing(spec, role, me, |arn| (arn == tg.arn).then_some(members.as_slice()));
        if missing.iter().any(|m| m.arn == tg.arn) {
            fx.target_groups.register(&tg.arn, me, tg.port).await?;
            tracing::info!(target_group = %tg.arn, port = tg.port, "registered");
        }
        st.add_registration(&tg.arn, tg.port);
    }
    Ok(())
}

/// Registers into one group a spec edit added, and records it (saved at once).
pub async fn register(fx: &Effects, arn: &str, port: u16, me: &str, st: &mut State) -> Result<()> {
    fx.target_groups.register(arn, me, port).await?;
    st.add_registration(arn, port);
    st.save(&fx.fs)
}

/// Deregisters from each of `groups` (arn, port) where this instance is a member not yet
/// draining, then waits until the groups report it gone or their longest deregistration delay
/// has passed (`budget` may shorten that wait: a spot reclaim's time; `hurry` ends it).
pub async fn remove(fx: &Effects, groups: &[(String, u16)], me: &str, budget: impl Fn(Duration) -> Duration, hurry: Option<&Hurry>) -> Result<()> {
    let tgs = &fx.target_groups;
    let mut waiting: Vec<(String, u16)> = Vec::new();
    let mut delay = 0;
    for (arn, port) in groups {
        let members = tgs.members(arn).await?;
        let Some(member) = members.iter().find(|m| m.id == me && m.port == *port) else {
            continue;
        };
        if !member.state.is_draining() {
            tgs.deregister(arn, me, *port).await?;
            tracing::info!(target_group = %arn, "deregistered");
        }
        delay = delay.max(tgs.deregistration_delay(arn).await?);
        waiting.push((arn.clone(), *port));
    }
    if waiting.is_empty() {
        return Ok(());
    }
    let mut w = Waiter::new("target groups to finish draining this instance", budget(Duration::from_secs(delay)));
    if let Some(h) = hurry {
        w = w.hurry(h);
    }
    loop {
        let mut still = Vec::new();
        for (arn, port) in &waiting {
            let members = tgs.members(arn).await?;
            if members.iter().any(|m| m.id == me && m.port == *port && m.state != TargetState::Unused) {
                still.push(arn.clone());
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if w.pending(format!("still draining in {}", still.join(", "))).await.is_err() {
            tracing::info!("connection draining time has passed; going on");
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "i-0000000000000000a";

    #[test]
    fn registrations() {
        let spec = ClusterSpec::parse(
            "p",
            r#"{"api":{"hostname":"api.a.example.com","hosted_zone_id":"Z1"},
                "target_groups":[
                  {"arn":"arn:aws:elasticloadbalancing:r:1:targetgroup/a/1","port":80},
                  {"arn":"arn:aws:elasticloadbalancing:r:1:targetgroup/b/2","port":6443,"roles":["control-plane"]}]}"#,
        )
        .unwrap();
        let a = vec![Member { id: ME.into(), port: 80, state: TargetState::Healthy }];
        let members = |arn: &str| {
            if arn.ends_with("a/1") {
                Some(a.as_slice())
            } else {
                None
            }
        };
        let found = missing(&spec, Role::ControlPlane, ME, members);
        assert_eq!(found.len(), 1);
        assert!(found[0].arn.ends_with("b/2"));
        assert!(missing(&spec, Role::Node, ME, members).is_empty());
        let draining = vec![Member { id: ME.into(), port: 80, state: TargetState::Draining }];
        assert_eq!(missing(&spec, Role::Node, ME, |_| Some(draining.as_slice())).len(), 1);
    }
}
