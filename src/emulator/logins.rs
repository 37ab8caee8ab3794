//! What the token endpoint remembers about login attempts: one event per attempt of a known user
//! with a known app, for the `LoginHistory` object and `User.LastLoginDate`. Must never: keep a
//! password, an assertion or a token; an event holds ids, a time, a status text and an address.

use std::net::IpAddr;

use super::errors::{self, OAuthError};
use super::world::{TokenRequest, TokenSuccess, World};

/// Events kept; older ones are dropped first (Salesforce keeps months, tests need minutes).
pub const LOGIN_HISTORY_CAP: usize = 2_000;

/// One login attempt, as `LoginHistory` shows it.
#[derive(Debug, Clone)]
pub struct LoginEvent {
    /// Key prefix `0Ya`.
    pub id: String,
    pub user_id: String,
    pub client_id: String,
    pub at_ms: i64,
    /// `Success` or the failure's status text (see [`failure_status`]).
    pub status: &'static str,
    pub source_ip: IpAddr,
}

/// The `LoginHistory.Status` text for a token-endpoint failure, from the EventLogFile
/// LOGIN_STATUS strings listed in `docs/emulator.md`. Failures that are about the request rather
/// than the user's login (a bad client secret, an unknown or expired token, a malformed
/// assertion) have no text there, and are not recorded.
pub fn failure_status(error: OAuthError, frozen: bool) -> Option<&'static str> {
    // A frozen user is refused with the same wire error as a wrong password (docs/emulator.md);
    // the history tells them apart, as Salesforce's does.
    const TABLE: &[(OAuthError, &str)] = &[
        (errors::AUTHENTICATION_FAILURE, "Invalid password"),
        (errors::INACTIVE_USER, "User is inactive"),
        (errors::IP_RESTRICTED, "Restricted IP"),
        (errors::RATE_LIMIT_EXCEEDED, "Login rate exceeded"),
        (
            errors::NOT_ADMIN_APPROVED,
            "Failed: Not approved for access",
        ),
        (errors::INACTIVE_ORG, "Organization is inactive"),
        (errors::INACTIVE_ORGANIZATION, "Organization is inactive"),
    ];
    if error == errors::AUTHENTICATION_FAILURE && frozen {
        return Some("User is frozen");
    }
    TABLE
        .iter()
        .find(|(known, _)| *known == error)
        .map(|(_, status)| *status)
}

impl World {
    /// Records the outcome of a token request whose user and app are known; a success also
    /// becomes the user's last login.
    pub fn record_login(
        &mut self,
        req: &TokenRequest,
        result: &Result<TokenSuccess, OAuthError>,
        now: i64,
    ) {
        let Some((username, client_id)) = self.login_subject(req) else {
            return;
        };
        let user = self.users.get_mut(&username).expect("login_subject checks");
        let status = match result {
            Ok(_) => {
                user.last_login = Some(now);
                "Success"
            }
            Err(error) => match failure_status(*error, user.spec.frozen) {
                Some(status) => status,
                None => return,
            },
        };
        let event = LoginEvent {
            id: super::ids::new_id("0Ya"),
            user_id: user.id.clone(),
            client_id,
            at_ms: now,
            status,
            source_ip: req.peer,
        };
        if self.login_history.len() >= LOGIN_HISTORY_CAP {
            self.login_history.pop_front();
        }
        self.login_history.push_back(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_users_authentication_failure_reads_user_is_frozen() {
        assert_eq!(
            failure_status(errors::AUTHENTICATION_FAILURE, true),
            Some("User is frozen")
        );
        assert_eq!(
            failure_status(errors::AUTHENTICATION_FAILURE, false),
            Some("Invalid password")
        );
    }

    #[test]
    fn request_errors_are_not_login_attempts() {
        assert_eq!(failure_status(errors::EXPIRED_REFRESH_TOKEN, false), None);
        assert_eq!(
            failure_status(errors::INVALID_CLIENT_CREDENTIALS, false),
            None
        );
    }
}
