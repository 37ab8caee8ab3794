//! The checks a login passes before any token is issued: the client secret, and for
//! user-bound grants the org, the user, the network, the hourly login rate and app access, in
//! the order Salesforce is believed to apply them. Must never: issue a token or change
//! approvals; the only state it writes is the user's login-rate window.

use std::net::IpAddr;

use super::{App, World};
use crate::emulator::errors::{self, OAuthError};
use crate::emulator::model::PermittedUsers;
use crate::net::{constant_time_eq, parse_cidr};

impl World {
    pub(super) fn check_secret(
        app: &App,
        secret: Option<&str>,
        required: bool,
    ) -> Result<(), OAuthError> {
        match secret {
            Some(s) if !constant_time_eq(s.as_bytes(), app.secret.as_bytes()) => {
                Err(errors::INVALID_CLIENT_CREDENTIALS)
            }
            None if required => Err(errors::INVALID_CLIENT_CREDENTIALS),
            _ => Ok(()),
        }
    }

    /// The checks every user-bound login shares, in the order Salesforce is believed to apply
    /// them: org, user, network, rate, app access. A passing check counts as a login.
    pub(super) fn admit(
        &mut self,
        username: &str,
        client_id: &str,
        peer: IpAddr,
        now: i64,
    ) -> Result<(), OAuthError> {
        let user = &self.users[username];
        let org = self.org_of_user(user);
        if !org.spec.active {
            return Err(errors::INACTIVE_ORG);
        }
        if !user.spec.active {
            return Err(errors::INACTIVE_USER);
        }
        if user.spec.frozen {
            return Err(errors::AUTHENTICATION_FAILURE);
        }
        if !user.spec.ip_ranges.is_empty()
            && !user
                .spec
                .ip_ranges
                .iter()
                .filter_map(|r| parse_cidr(r))
                .any(|c| c.contains(peer))
        {
            return Err(errors::IP_RESTRICTED);
        }
        let limit = org.spec.login_rate_per_hour as usize;
        let app = &self.apps[client_id];
        let assigned = app
            .spec
            .assigned_users
            .iter()
            .any(|u| u.eq_ignore_ascii_case(username))
            || user.spec.assigned_apps.iter().any(|c| c == client_id);
        let admin_only = app.spec.permitted_users == PermittedUsers::AdminApprovedPreAuthorized;
        let user = self.users.get_mut(username).expect("checked above");
        while user.logins.front().is_some_and(|t| now - t >= 3_600_000) {
            user.logins.pop_front();
        }
        if user.logins.len() >= limit {
            return Err(errors::RATE_LIMIT_EXCEEDED);
        }
        user.logins.push_back(now);
        if admin_only && !assigned {
            return Err(errors::NOT_ADMIN_APPROVED);
        }
        Ok(())
    }
}
