//! Minting tokens once a grant has passed its checks: the access token with its identity URL,
//! instance URL and signature, and — when the grant may and the scope asks — a refresh token
//! opening a new approval, evicting the oldest beyond [`super::APPROVAL_LIMIT`]. Must never:
//! check anything; every caller has already decided the login is allowed.

use super::{APPROVAL_LIMIT, AccessRecord, Family, HostCtx, RefreshRecord, TokenSuccess, World};
use crate::emulator::ids;

impl World {
    /// Issues an access token and, when the scope allows and the grant may, a refresh token
    /// (a new approval, evicting the oldest beyond the limit).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn issue(
        &mut self,
        ctx: &HostCtx,
        host: &str,
        username: &str,
        client_id: &str,
        scope: &str,
        now: i64,
        may_refresh: bool,
    ) -> TokenSuccess {
        let wants_refresh = scope
            .split(' ')
            .any(|s| s == "refresh_token" || s == "offline_access");
        if !(may_refresh && wants_refresh) {
            return self.issue_access(ctx, host, username, client_id, scope, now, None);
        }
        let user_id = self.users[username].id.clone();
        let org_id = self.org_of_user(&self.users[username]).id.clone();
        self.next_family += 1;
        let family_id = self.next_family;
        self.families.insert(
            family_id,
            Family {
                username: username.to_owned(),
                client_id: client_id.to_owned(),
                org_id,
                issued_at: now,
                scope: scope.to_owned(),
                revoked: false,
                record_id: ids::new_id("0CQ"),
                use_count: 0,
                last_used: now,
            },
        );
        let approvals = self
            .approvals
            .entry((user_id, client_id.to_owned()))
            .or_default();
        approvals.push_back(family_id);
        let evicted = if approvals.len() > APPROVAL_LIMIT {
            approvals.pop_front()
        } else {
            None
        };
        if let Some(oldest) = evicted {
            self.revoke_family(oldest);
        }
        let token = ids::refresh_token();
        self.refresh.insert(
            token.clone(),
            RefreshRecord {
                family: family_id,
                last_used: now,
                rotated: false,
                in_flight: false,
            },
        );
        let mut body =
            self.issue_access(ctx, host, username, client_id, scope, now, Some(family_id));
        body.refresh_token = Some(token);
        body
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn issue_access(
        &mut self,
        ctx: &HostCtx,
        host: &str,
        username: &str,
        client_id: &str,
        scope: &str,
        now: i64,
        family: Option<u64>,
    ) -> TokenSuccess {
        let user = &self.users[username];
        let org = self.org_of_user(user);
        let access_token = ids::access_token(&org.id);
        let id = format!(
            "https://{}/id/{}/{}",
            host.to_ascii_lowercase(),
            org.id,
            user.id
        );
        let issued_at = now.to_string();
        let signature = hmac_signature(&self.apps[client_id].secret, &id, &issued_at);
        let instance_url = match ctx {
            HostCtx::Site { url, .. } => url.clone(),
            _ => format!("https://{}", org.my_domain_host()),
        };
        let org_id = org.id.clone();
        self.access.insert(
            access_token.clone(),
            AccessRecord {
                username: username.to_owned(),
                org_id,
                family,
                last_used: now,
            },
        );
        TokenSuccess {
            access_token,
            refresh_token: None,
            signature: Some(signature),
            scope: scope.to_owned(),
            instance_url,
            id,
            token_type: "Bearer",
            issued_at: Some(issued_at),
        }
    }
}

/// `signature`: base64 HMAC-SHA256 keyed with the consumer secret over `id + issued_at`.
pub fn hmac_signature(secret: &str, id: &str, issued_at: &str) -> String {
    use base64::Engine;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{id}{issued_at}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}
