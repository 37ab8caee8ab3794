//! The setup objects the REST query endpoint shows — `OauthToken`, `User`, `UserLogin`,
//! `LoginHistory`, `ConnectedApplication` — as tables: their fields with types, the permissions
//! that make them visible, and their rows computed from the live [`World`] of one org. Data, not
//! branches: a new object is one more entry in [`OBJECTS`] and one row function. Must never:
//! return a token value; `OauthToken`'s token fields are listed as withheld, not as fields.

use super::model::{PermittedUsers, RefreshPolicy};
use super::world::World;

/// A field's type, which decides the literals it may be compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Id,
    Text,
    Bool,
    Int,
    DateTime,
}

/// A field's value in one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Bool(bool),
    Int(i64),
    /// Milliseconds since the epoch.
    DateTime(i64),
    Null,
}

#[derive(Debug)]
pub struct Field {
    /// As Salesforce spells it; queries match it case-insensitively.
    pub name: &'static str,
    pub kind: Kind,
}

/// One row; `values` follow the object's `fields`, and the first field is always `Id`.
#[derive(Debug, Clone)]
pub struct Row {
    pub values: Vec<Value>,
}

impl Row {
    pub fn id(&self) -> &str {
        match &self.values[0] {
            Value::Text(id) => id,
            _ => "",
        }
    }
}

pub struct Object {
    pub name: &'static str,
    pub fields: &'static [Field],
    /// Fields Salesforce returns that the emulator refuses to: they hold token values.
    pub withheld: &'static [&'static str],
    /// Any one of these system permissions makes the object visible; empty: every user.
    pub permissions: &'static [&'static str],
    /// The rows of one org (by its `name`), in a stable order.
    pub rows: fn(&World, &str) -> Vec<Row>,
}

const fn field(name: &'static str, kind: Kind) -> Field {
    Field { name, kind }
}

/// `LoginHistory.LoginType` of every token-endpoint login (`docs/emulator.md`).
const OAUTH_LOGIN_TYPE: &str = "Remote Access 2.0";

/// The objects, with the permissions Salesforce documents for each (`docs/emulator.md`).
pub static OBJECTS: &[Object] = &[
    Object {
        name: "OauthToken",
        fields: &[
            field("Id", Kind::Id),
            field("UserId", Kind::Id),
            field("AppName", Kind::Text),
            field("CreatedDate", Kind::DateTime),
            field("LastUsedDate", Kind::DateTime),
            field("UseCount", Kind::Int),
        ],
        withheld: &["AccessToken", "DeleteToken", "RequestToken"],
        permissions: &["CustomizeApplication", "ManageUsers"],
        rows: oauth_tokens,
    },
    Object {
        name: "User",
        fields: &[
            field("Id", Kind::Id),
            field("Username", Kind::Text),
            field("IsActive", Kind::Bool),
            field("LastLoginDate", Kind::DateTime),
        ],
        withheld: &[],
        permissions: &[],
        rows: users,
    },
    Object {
        name: "UserLogin",
        fields: &[
            field("Id", Kind::Id),
            field("UserId", Kind::Id),
            field("IsFrozen", Kind::Bool),
            field("IsPasswordLocked", Kind::Bool),
        ],
        withheld: &[],
        permissions: &["ManageUsers"],
        rows: user_logins,
    },
    Object {
        name: "LoginHistory",
        fields: &[
            field("Id", Kind::Id),
            field("UserId", Kind::Id),
            field("LoginTime", Kind::DateTime),
            field("LoginType", Kind::Text),
            field("Status", Kind::Text),
            field("Application", Kind::Text),
            field("SourceIp", Kind::Text),
        ],
        withheld: &[],
        permissions: &["ManageUsers", "MonitorLoginHistory"],
        rows: login_history,
    },
    Object {
        name: "ConnectedApplication",
        fields: &[
            field("Id", Kind::Id),
            field("Name", Kind::Text),
            field("OptionsAllowAdminApprovedUsersOnly", Kind::Bool),
            field("OptionsRefreshTokenValidityMetric", Kind::Bool),
            field("RefreshTokenValidityPeriod", Kind::Int),
        ],
        withheld: &[],
        permissions: &["CustomizeApplication", "ManageUsers"],
        rows: connected_applications,
    },
];

/// The object named `name`, matched case-insensitively as Salesforce does.
pub fn object(name: &str) -> Option<&'static Object> {
    OBJECTS.iter().find(|o| o.name.eq_ignore_ascii_case(name))
}

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

/// The org (by name) of the user with this id, if any.
fn org_of_user_id<'w>(world: &'w World, user_id: &str) -> Option<&'w str> {
    world
        .users
        .values()
        .find(|u| u.id == user_id)
        .map(|u| u.spec.org.as_str())
}

fn app_name(world: &World, client_id: &str) -> String {
    world
        .apps
        .get(client_id)
        .map(|a| a.spec.name.clone())
        .unwrap_or_default()
}

fn oauth_tokens(world: &World, org: &str) -> Vec<Row> {
    world
        .live_approvals()
        .into_iter()
        .filter(|a| org_of_user_id(world, &a.user_id) == Some(org))
        .map(|a| Row {
            values: vec![
                text(a.id),
                text(a.user_id),
                text(app_name(world, &a.client_id)),
                Value::DateTime(a.created),
                Value::DateTime(a.last_used),
                Value::Int(i64::try_from(a.use_count).unwrap_or(i64::MAX)),
            ],
        })
        .collect()
}

/// The org's users, by username so that answers without ORDER BY are stable.
fn org_users<'w>(world: &'w World, org: &str) -> Vec<&'w super::world::User> {
    let mut users: Vec<_> = world.users.values().filter(|u| u.spec.org == org).collect();
    users.sort_by(|a, b| a.spec.username.cmp(&b.spec.username));
    users
}

fn users(world: &World, org: &str) -> Vec<Row> {
    org_users(world, org)
        .into_iter()
        .map(|u| Row {
            values: vec![
                text(&u.id),
                text(&u.spec.username),
                Value::Bool(u.spec.active),
                u.last_login.map_or(Value::Null, Value::DateTime),
            ],
        })
        .collect()
}

fn user_logins(world: &World, org: &str) -> Vec<Row> {
    let lockout = world
        .org_by_name(org)
        .map_or(u32::MAX, |o| o.spec.lockout_after);
    org_users(world, org)
        .into_iter()
        .map(|u| Row {
            values: vec![
                text(&u.login_id),
                text(&u.id),
                Value::Bool(u.spec.frozen),
                Value::Bool(u.password_failures() >= lockout),
            ],
        })
        .collect()
}

fn login_history(world: &World, org: &str) -> Vec<Row> {
    world
        .login_history
        .iter()
        .filter(|e| org_of_user_id(world, &e.user_id) == Some(org))
        .map(|e| Row {
            values: vec![
                text(&e.id),
                text(&e.user_id),
                Value::DateTime(e.at_ms),
                text(OAUTH_LOGIN_TYPE),
                text(e.status),
                text(app_name(world, &e.client_id)),
                text(e.source_ip.to_string()),
            ],
        })
        .collect()
}

fn connected_applications(world: &World, org: &str) -> Vec<Row> {
    let mut apps: Vec<_> = world.apps.values().filter(|a| a.spec.org == org).collect();
    apps.sort_by(|a, b| {
        a.spec
            .name
            .cmp(&b.spec.name)
            .then(a.record_id.cmp(&b.record_id))
    });
    apps.into_iter()
        .map(|a| {
            let (metric, period) = refresh_validity(a.spec.refresh_policy, a.spec.limit_idle_ttl);
            Row {
                values: vec![
                    text(&a.record_id),
                    text(&a.spec.name),
                    Value::Bool(
                        a.spec.permitted_users == PermittedUsers::AdminApprovedPreAuthorized,
                    ),
                    Value::Bool(metric),
                    period.map_or(Value::Null, Value::Int),
                ],
            }
        })
        .collect()
}

/// `OptionsRefreshTokenValidityMetric` and `RefreshTokenValidityPeriod` of a refresh policy:
/// whether tokens expire by time (or at once), and after how many hours, rounded up (0: at
/// once). The two fields cannot say whether the expiry is idle or absolute; docs/emulator.md
/// gives the mapping.
pub fn refresh_validity(policy: RefreshPolicy, limit_idle_ttl: bool) -> (bool, Option<i64>) {
    let hours = |seconds: u64| i64::try_from(seconds.div_ceil(3600)).unwrap_or(i64::MAX);
    match policy {
        RefreshPolicy::ValidUntilRevoked if limit_idle_ttl => (true, Some(30 * 24)),
        RefreshPolicy::ValidUntilRevoked => (false, None),
        RefreshPolicy::ImmediatelyExpire => (true, Some(0)),
        RefreshPolicy::IdleExpire { seconds } | RefreshPolicy::AbsoluteExpire { seconds } => {
            (true, Some(hours(seconds)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_policies_map_to_the_two_validity_fields() {
        use RefreshPolicy::*;
        assert_eq!(refresh_validity(ValidUntilRevoked, false), (false, None));
        assert_eq!(refresh_validity(ValidUntilRevoked, true), (true, Some(720)));
        assert_eq!(refresh_validity(ImmediatelyExpire, false), (true, Some(0)));
        assert_eq!(
            refresh_validity(IdleExpire { seconds: 3601 }, false),
            (true, Some(2))
        );
        assert_eq!(
            refresh_validity(AbsoluteExpire { seconds: 7200 }, false),
            (true, Some(2))
        );
    }

    #[test]
    fn every_object_starts_with_id_and_no_token_field_is_a_field() {
        for object in OBJECTS {
            assert_eq!(object.fields[0].name, "Id", "{}", object.name);
            for withheld in object.withheld {
                assert!(object.fields.iter().all(|f| f.name != *withheld));
            }
        }
        assert_eq!(object("oauthtoken").unwrap().name, "OauthToken");
        assert!(object("Account").is_none());
    }
}
