//! Killing approvals on purpose: a user's or admin's revoke, the revocation of one family
//! (its access tokens go with it) and a sandbox refresh, which gives the org a new id and drops
//! every token, approval and code of the old one. Must never: revoke on its own initiative —
//! eviction and reuse detection call [`World::revoke_family`] from their own rules.

use super::{ControlError, World, control};
use crate::emulator::ids;
use crate::emulator::model::OrgKind;

impl World {
    /// Revokes a user's approvals (for one app, or all), as the user or an admin would.
    pub fn revoke(
        &mut self,
        username: &str,
        client_id: Option<&str>,
    ) -> Result<usize, ControlError> {
        let username = username.to_ascii_lowercase();
        let Some(user) = self.users.get(&username) else {
            return control(format!("no user {username}"));
        };
        let user_id = user.id.clone();
        let keys: Vec<_> = self
            .approvals
            .keys()
            .filter(|(u, c)| *u == user_id && client_id.is_none_or(|id| id == c))
            .cloned()
            .collect();
        let mut count = 0;
        for key in keys {
            for family in self.approvals.remove(&key).unwrap_or_default() {
                self.revoke_family(family);
                count += 1;
            }
        }
        Ok(count)
    }

    /// A sandbox refresh: a new org id, every token and approval of the old org gone.
    pub fn refresh_sandbox(&mut self, name: &str) -> Result<String, ControlError> {
        let Some(org) = self
            .orgs
            .iter_mut()
            .find(|o| o.spec.name == name && o.spec.kind == OrgKind::Sandbox)
        else {
            return control(format!("no sandbox org {name}"));
        };
        let old = std::mem::replace(&mut org.id, ids::new_id("00D"));
        let new = org.id.clone();
        let dead: Vec<u64> = self
            .families
            .iter()
            .filter(|(_, f)| f.org_id == old)
            .map(|(id, _)| *id)
            .collect();
        for id in &dead {
            self.revoke_family(*id);
        }
        self.refresh.retain(|_, r| !dead.contains(&r.family));
        self.access.retain(|_, a| a.org_id != old);
        let org_users: Vec<String> = self
            .users
            .values()
            .filter(|u| u.spec.org == name)
            .map(|u| u.id.clone())
            .collect();
        self.approvals.retain(|(u, _), _| !org_users.contains(u));
        self.codes.retain(|_, c| {
            self.users
                .get(&c.username)
                .is_none_or(|u| u.spec.org != name)
        });
        Ok(new)
    }

    pub(super) fn revoke_family(&mut self, family_id: u64) {
        if let Some(family) = self.families.get_mut(&family_id) {
            family.revoked = true;
        }
        self.access.retain(|_, a| a.family != Some(family_id));
    }
}
