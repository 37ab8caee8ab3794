//! The approvals as an admin sees them: the limit per (user, app), the live ones as the
//! `OauthToken` object lists them, and the count the control API reports. Must never: expose a
//! token value, or change state — issuing and revoking approvals are other modules' work.

use super::World;

/// Approvals kept per (user, app): the sixth evicts the oldest.
pub const APPROVAL_LIMIT: usize = 5;

/// One live approval as the `OauthToken` object shows it: never a token value.
#[derive(Debug, Clone)]
pub struct ApprovalRecord {
    pub id: String,
    pub user_id: String,
    pub client_id: String,
    pub created: i64,
    pub last_used: i64,
    pub use_count: u64,
}

impl World {
    /// Every live approval (not revoked, not evicted), oldest first per (user, app).
    pub fn live_approvals(&self) -> Vec<ApprovalRecord> {
        let mut rows: Vec<ApprovalRecord> = self
            .approvals
            .iter()
            .flat_map(|((user_id, client_id), families)| {
                families.iter().filter_map(move |id| {
                    let f = self.families.get(id).filter(|f| !f.revoked)?;
                    Some(ApprovalRecord {
                        id: f.record_id.clone(),
                        user_id: user_id.clone(),
                        client_id: client_id.clone(),
                        created: f.issued_at,
                        last_used: f.last_used,
                        use_count: f.use_count,
                    })
                })
            })
            .collect();
        // The map's order is random; creation order keeps answers stable between queries.
        rows.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        rows
    }

    /// Live refresh tokens of a user for an app, oldest first (for the control API).
    pub fn approvals_of(&self, username: &str, client_id: &str) -> usize {
        self.users
            .get(&username.to_ascii_lowercase())
            .and_then(|u| self.approvals.get(&(u.id.clone(), client_id.to_owned())))
            .map_or(0, |f| f.len())
    }
}
