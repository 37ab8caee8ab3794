//! Who is behind a credential: the user of a live access token for the REST surface (with the
//! sliding session timeout), and the (username, client id) a token request logs in as, for the
//! login history. Must never: issue or revoke anything; the only write is a session's last use.

use super::{TokenRequest, World};
use crate::emulator::jwt;

impl World {
    /// The user behind a live access token (sliding session timeout), for the REST surface.
    pub fn session(&mut self, token: &str, now: i64) -> Option<(String, String, String)> {
        let timeout = self.settings.session_timeout_secs as i64 * 1000;
        let record = self.access.get(token)?;
        let user = self.users.get(&record.username)?;
        let org = self.org_of_user(user);
        let family_ok = record
            .family
            .is_none_or(|f| self.families.get(&f).is_some_and(|f| !f.revoked));
        if now - record.last_used > timeout
            || !user.spec.active
            || !org.spec.active
            || org.id != record.org_id
            || !family_ok
        {
            return None;
        }
        let found = (org.id.clone(), user.id.clone(), user.spec.username.clone());
        self.access.get_mut(token)?.last_used = now;
        Some(found)
    }

    /// The (username, client id) a token request logs in as, when both are known: from the
    /// code, the refresh token, the username, the assertion or the Run As user.
    pub fn login_subject(&self, req: &TokenRequest) -> Option<(String, String)> {
        let (username, client_id) = match req.param("grant_type")? {
            "authorization_code" => {
                let code = self.codes.get(req.param("code")?)?;
                (code.username.clone(), code.client_id.clone())
            }
            "refresh_token" => {
                let record = self.refresh.get(req.param("refresh_token")?)?;
                let family = self.families.get(&record.family)?;
                (family.username.clone(), family.client_id.clone())
            }
            "password" => (
                req.param("username")?.to_owned(),
                req.client_id()?.to_owned(),
            ),
            "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
                let assertion = jwt::decode(req.param("assertion")?).ok()?;
                (assertion.sub?, assertion.iss?)
            }
            "client_credentials" => {
                let app = self.apps.get(req.client_id()?)?;
                (app.spec.run_as.clone()?, app.client_id.clone())
            }
            _ => return None,
        };
        let username = username.to_ascii_lowercase();
        (self.users.contains_key(&username) && self.apps.contains_key(&client_id))
            .then_some((username, client_id))
    }
}
