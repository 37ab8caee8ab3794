//! The `refresh_token` grant in two halves around an in-flight window, so concurrent
//! refreshes of one token collide as on Salesforce: [`World::begin_refresh`] checks and marks
//! the token, [`World::finish_refresh`] answers (rotating under rotation), and
//! [`World::abandon_refresh`] clears the mark when the client went away. Must never: answer a
//! revoked, rotated or expired token, or let a superseded token's reuse go unpunished.

use super::{RefreshRecord, TokenRequest, TokenSuccess, World};
use crate::emulator::errors::{self, OAuthError};
use crate::emulator::ids;
use crate::emulator::model::RefreshPolicy;

/// The idle cap of "Limit idle refresh token TTL".
const IDLE_TTL_CAP_MS: i64 = 30 * 24 * 3600 * 1000;

/// A refresh that passed its checks and is now in flight.
#[derive(Debug)]
pub struct RefreshTicket {
    token: String,
    host: String,
}

impl World {
    /// First half of a refresh: every check, then the token is marked in flight.
    pub fn begin_refresh(
        &mut self,
        req: &TokenRequest,
        now: i64,
    ) -> Result<RefreshTicket, OAuthError> {
        let ctx = self.classify(&req.host);
        let app = self.visible_app(&ctx, req.client_id())?;
        let client_id = app.client_id.clone();
        Self::check_secret(
            app,
            req.client_secret(),
            app.spec.require_secret_for_refresh,
        )?;
        if req.param("scope").is_some() {
            return Err(errors::SCOPE_NOT_SUPPORTED);
        }
        let token = req
            .param("refresh_token")
            .ok_or(errors::EXPIRED_REFRESH_TOKEN)?
            .to_owned();
        let record = self
            .refresh
            .get(&token)
            .ok_or(errors::EXPIRED_REFRESH_TOKEN)?;
        let family_id = record.family;
        let family = &self.families[&family_id];
        if family.client_id != client_id || family.revoked {
            return Err(errors::EXPIRED_REFRESH_TOKEN);
        }
        let org = self
            .org_by_id(&family.org_id)
            .ok_or(errors::EXPIRED_REFRESH_TOKEN)?;
        if !self.reaches(&ctx, org) {
            return Err(errors::EXPIRED_REFRESH_TOKEN);
        }
        if record.rotated {
            // Reuse of a superseded token: Salesforce revokes the whole family.
            self.revoke_family(family_id);
            return Err(errors::EXPIRED_REFRESH_TOKEN);
        }
        if record.in_flight {
            return Err(errors::EXPIRED_AUTHORIZATION_CODE);
        }
        let spec = &self.apps[&client_id].spec;
        let idle = now - record.last_used;
        let expired = match spec.refresh_policy {
            RefreshPolicy::ImmediatelyExpire => true,
            RefreshPolicy::IdleExpire { seconds } => idle > seconds as i64 * 1000,
            RefreshPolicy::AbsoluteExpire { seconds } => {
                now - family.issued_at > seconds as i64 * 1000
            }
            RefreshPolicy::ValidUntilRevoked => spec.limit_idle_ttl && idle > IDLE_TTL_CAP_MS,
        };
        if expired {
            return Err(errors::EXPIRED_REFRESH_TOKEN);
        }
        let username = family.username.clone();
        // On a refresh the inactive org is worded as a grant error (seen in client logs).
        self.admit(&username, &client_id, req.peer, now)
            .map_err(|e| {
                if e == errors::INACTIVE_ORG {
                    errors::INACTIVE_ORGANIZATION
                } else {
                    e
                }
            })?;
        self.refresh.get_mut(&token).expect("exists").in_flight = true;
        Ok(RefreshTicket {
            token,
            host: req.host.clone(),
        })
    }

    /// A refresh whose client went away before its answer: nothing changes but the mark.
    pub fn abandon_refresh(&mut self, ticket: RefreshTicket) {
        if let Some(record) = self.refresh.get_mut(&ticket.token) {
            record.in_flight = false;
        }
    }

    /// Second half of a refresh: a new access token, and under rotation a new refresh token.
    pub fn finish_refresh(
        &mut self,
        ticket: RefreshTicket,
        now: i64,
    ) -> Result<TokenSuccess, OAuthError> {
        let record = self
            .refresh
            .get_mut(&ticket.token)
            .ok_or(errors::EXPIRED_REFRESH_TOKEN)?;
        record.in_flight = false;
        let family_id = record.family;
        let family = &self.families[&family_id];
        if family.revoked || record.rotated {
            return Err(errors::EXPIRED_REFRESH_TOKEN);
        }
        record.last_used = now;
        let family = self.families.get_mut(&family_id).expect("checked above");
        family.use_count += 1;
        family.last_used = now;
        let (username, client_id, scope) = (
            family.username.clone(),
            family.client_id.clone(),
            family.scope.clone(),
        );
        let rotation = self.apps[&client_id].spec.rotation;
        let ctx = self.classify(&ticket.host);
        let mut body = self.issue_access(
            &ctx,
            &ticket.host,
            &username,
            &client_id,
            &scope,
            now,
            Some(family_id),
        );
        if rotation {
            self.refresh.get_mut(&ticket.token).expect("exists").rotated = true;
            let next = ids::refresh_token();
            self.refresh.insert(
                next.clone(),
                RefreshRecord {
                    family: family_id,
                    last_used: now,
                    rotated: false,
                    in_flight: false,
                },
            );
            body.refresh_token = Some(next);
        }
        Ok(body)
    }
}
