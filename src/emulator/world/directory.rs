//! The orgs, users and connected apps of the world, as the control API and scenario files
//! create and patch them, and the lookups between them (an org by name or id, a user's org).
//! Must never: touch tokens or approvals — revoking is [`super::revocation`]'s, and a patch
//! that makes a token die does so because the grant checks read the new spec.

use std::collections::VecDeque;

use super::{ControlError, World, control};
use crate::emulator::ids;
use crate::emulator::model::{AppPatch, AppSpec, OrgKind, OrgPatch, OrgSpec, UserPatch, UserSpec};
use crate::net::parse_cidr;

#[derive(Debug)]
pub struct Org {
    pub spec: OrgSpec,
    pub id: String,
}

impl Org {
    pub fn my_domain_host(&self) -> String {
        let name = self.spec.my_domain.as_deref().unwrap_or(&self.spec.name);
        match self.spec.kind {
            OrgKind::Production => format!("{name}.my.salesforce.com"),
            OrgKind::Sandbox => format!(
                "{name}--{}.sandbox.my.salesforce.com",
                self.spec.sandbox.as_deref().unwrap_or("sandbox")
            ),
        }
    }
}

#[derive(Debug)]
pub struct User {
    pub spec: UserSpec,
    pub id: String,
    /// The id of the user's `UserLogin` record (key prefix `060`).
    pub login_id: String,
    /// The last successful login of any grant, for `User.LastLoginDate`.
    pub last_login: Option<i64>,
    pub(super) failures: u32,
    pub(super) logins: VecDeque<i64>,
}

impl User {
    /// Consecutive failed password logins; at the org's lockout threshold the user is locked.
    pub fn password_failures(&self) -> u32 {
        self.failures
    }
}

#[derive(Debug)]
pub struct App {
    pub spec: AppSpec,
    pub client_id: String,
    pub secret: String,
    /// The id of the app's `ConnectedApplication` record (key prefix `0H4`).
    pub record_id: String,
}

impl World {
    pub fn add_org(&mut self, spec: OrgSpec) -> Result<&Org, ControlError> {
        if spec.name.is_empty()
            || !spec
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return control(format!(
                "org name `{}`: letters, digits and dashes only",
                spec.name
            ));
        }
        if self.orgs.iter().any(|o| o.spec.name == spec.name) {
            return control(format!("org `{}` exists", spec.name));
        }
        let org = Org {
            spec,
            id: ids::new_id("00D"),
        };
        if self
            .orgs
            .iter()
            .any(|o| o.my_domain_host() == org.my_domain_host())
        {
            return control(format!("My Domain {} is taken", org.my_domain_host()));
        }
        self.orgs.push(org);
        Ok(self.orgs.last().expect("just pushed"))
    }

    pub fn add_user(&mut self, spec: UserSpec) -> Result<&User, ControlError> {
        if self.org_by_name(&spec.org).is_none() {
            return control(format!("user {}: no org `{}`", spec.username, spec.org));
        }
        for range in &spec.ip_ranges {
            parse_cidr(range).ok_or_else(|| {
                ControlError(format!(
                    "ip range `{range}`: expected CIDR, e.g. 10.0.0.0/8"
                ))
            })?;
        }
        let key = spec.username.to_ascii_lowercase();
        if self.users.contains_key(&key) {
            return control(format!("user {} exists", spec.username));
        }
        self.users.insert(
            key.clone(),
            User {
                spec,
                id: ids::new_id("005"),
                login_id: ids::new_id("060"),
                last_login: None,
                failures: 0,
                logins: VecDeque::new(),
            },
        );
        Ok(&self.users[&key])
    }

    pub fn add_app(&mut self, spec: AppSpec) -> Result<&App, ControlError> {
        if self.org_by_name(&spec.org).is_none() {
            return control(format!("app: no org `{}`", spec.org));
        }
        let client_id = spec.client_id.clone().unwrap_or_else(ids::consumer_key);
        if self.apps.contains_key(&client_id) {
            return control("an app with this client_id exists");
        }
        let secret = spec
            .client_secret
            .clone()
            .unwrap_or_else(ids::consumer_secret);
        self.apps.insert(
            client_id.clone(),
            App {
                spec,
                client_id: client_id.clone(),
                secret,
                record_id: ids::new_id("0H4"),
            },
        );
        Ok(&self.apps[&client_id])
    }

    pub fn patch_app(&mut self, client_id: &str, patch: AppPatch) -> Result<(), ControlError> {
        let Some(app) = self.apps.get_mut(client_id) else {
            return control(format!("no app {client_id}"));
        };
        let s = &mut app.spec;
        if let Some(v) = patch.client_secret {
            app.secret = v;
        }
        if let Some(v) = patch.refresh_policy {
            s.refresh_policy = v;
        }
        if let Some(v) = patch.limit_idle_ttl {
            s.limit_idle_ttl = v;
        }
        if let Some(v) = patch.rotation {
            s.rotation = v;
        }
        if let Some(v) = patch.permitted_users {
            s.permitted_users = v;
        }
        if let Some(v) = patch.assigned_users {
            s.assigned_users = v;
        }
        if let Some(v) = patch.jwt_certificate {
            s.jwt_certificate = Some(v);
        }
        if let Some(v) = patch.client_credentials_enabled {
            s.client_credentials_enabled = v;
        }
        if let Some(v) = patch.run_as {
            s.run_as = Some(v);
        }
        if let Some(v) = patch.external_client_app {
            s.external_client_app = v;
        }
        if let Some(v) = patch.require_secret_for_refresh {
            s.require_secret_for_refresh = v;
        }
        if let Some(v) = patch.scopes {
            s.scopes = v;
        }
        Ok(())
    }

    pub fn patch_user(&mut self, username: &str, patch: UserPatch) -> Result<(), ControlError> {
        let Some(user) = self.users.get_mut(&username.to_ascii_lowercase()) else {
            return control(format!("no user {username}"));
        };
        if let Some(v) = patch.active {
            user.spec.active = v;
        }
        if let Some(v) = patch.frozen {
            user.spec.frozen = v;
        }
        if let Some(v) = patch.password {
            user.spec.password = v;
            user.failures = 0;
        }
        if let Some(v) = patch.security_token {
            user.spec.security_token = v;
        }
        if let Some(v) = patch.ip_ranges {
            user.spec.ip_ranges = v;
        }
        if let Some(v) = patch.propagating_logins {
            user.spec.propagating_logins = v;
        }
        if let Some(v) = patch.permissions {
            user.spec.permissions = v;
        }
        if let Some(v) = patch.assigned_apps {
            user.spec.assigned_apps = v;
        }
        Ok(())
    }

    pub fn patch_org(&mut self, name: &str, patch: OrgPatch) -> Result<(), ControlError> {
        let Some(org) = self.orgs.iter_mut().find(|o| o.spec.name == name) else {
            return control(format!("no org {name}"));
        };
        if let Some(v) = patch.active {
            org.spec.active = v;
        }
        if let Some(v) = patch.password_flow {
            org.spec.password_flow = v;
        }
        if let Some(v) = patch.lockout_after {
            org.spec.lockout_after = v;
        }
        if let Some(v) = patch.login_rate_per_hour {
            org.spec.login_rate_per_hour = v;
        }
        Ok(())
    }

    pub(crate) fn org_by_name(&self, name: &str) -> Option<&Org> {
        self.orgs.iter().find(|o| o.spec.name == name)
    }

    pub(super) fn org_of_user(&self, user: &User) -> &Org {
        self.org_by_name(&user.spec.org)
            .expect("users belong to existing orgs")
    }

    pub(super) fn org_by_id(&self, id: &str) -> Option<&Org> {
        self.orgs.iter().find(|o| o.id == id)
    }
}
