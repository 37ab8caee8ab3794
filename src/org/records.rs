//! The records an org connection reads, the SOQL that reads them, and their parsing.
//! Only ids, names, dates, counts and flags are selected: never a token column.

use serde_json::Value;

use super::{OrgConnection, OrgError};

/// One live approval of a user for an app (an `OauthToken` row).
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub id: String,
    pub user_id: String,
    pub app: String,
    /// Milliseconds since the epoch.
    pub created: i64,
    pub last_used: Option<i64>,
    pub use_count: u64,
}

/// A `User` row with its `UserLogin` flags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    pub active: bool,
    pub frozen: bool,
    pub password_locked: bool,
}

impl UserRecord {
    /// Why this user can no longer log in, one evidence line per flag; empty when it can.
    /// Lines name the user by id only: a confirmed diagnosis is kept by the dead-token
    /// breaker in the ledger, which holds no username.
    pub fn problems(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.active {
            lines.push(format!("User {} has IsActive = false", self.id));
        }
        if self.frozen {
            lines.push(format!("UserLogin of {} has IsFrozen = true", self.id));
        }
        if self.password_locked {
            lines.push(format!(
                "UserLogin of {} has IsPasswordLocked = true",
                self.id
            ));
        }
        lines
    }
}

/// A `LoginHistory` row.
#[derive(Debug, Clone, PartialEq)]
pub struct LoginRow {
    pub user_id: String,
    pub at: i64,
    pub status: String,
    pub application: String,
}

/// SOQL string literal: quotes and backslashes escaped, as Salesforce requires.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `2026-11-25T09:12:03.000+0000` → milliseconds since the epoch.
pub fn parse_date(text: &str) -> Option<i64> {
    let rfc3339 = match text.strip_suffix("+0000") {
        Some(head) => format!("{head}Z"),
        None => text.to_owned(),
    };
    let t = humantime::parse_rfc3339(&rfc3339).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as i64)
}

/// The exact text of each query an org connection sends, as pure functions: the emulator's
/// table test runs these very strings, and none of them selects or filters on a token column.
pub mod soql {
    use super::{UserKey, literal};

    const APPROVAL_FIELDS: &str = "Id, UserId, AppName, CreatedDate, LastUsedDate, UseCount";

    fn names(apps: &[&str]) -> String {
        apps.iter()
            .map(|a| literal(a))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One user's live approvals of one app, newest first.
    pub fn approvals(user_id: &str, app: &str) -> String {
        format!(
            "SELECT {APPROVAL_FIELDS} FROM OauthToken WHERE UserId = {} AND AppName = {} ORDER BY CreatedDate DESC LIMIT 200",
            literal(user_id),
            literal(app)
        )
    }

    /// Every live approval of these apps (not empty), newest first.
    pub fn approvals_of_apps(apps: &[&str]) -> String {
        format!(
            "SELECT {APPROVAL_FIELDS} FROM OauthToken WHERE AppName IN ({}) ORDER BY CreatedDate DESC LIMIT 500",
            names(apps)
        )
    }

    pub fn user(by: UserKey<'_>) -> String {
        let filter = match by {
            UserKey::Id(id) => format!("Id = {}", literal(id)),
            UserKey::Username(name) => format!("Username = {}", literal(name)),
        };
        format!("SELECT Id, Username, IsActive, LastLoginDate FROM User WHERE {filter}")
    }

    pub fn user_login(user_id: &str) -> String {
        format!(
            "SELECT Id, UserId, IsFrozen, IsPasswordLocked FROM UserLogin WHERE UserId = {}",
            literal(user_id)
        )
    }

    /// Logins after `since_ms`, newest first.
    pub fn logins(since_ms: i64) -> String {
        format!(
            "SELECT Id, UserId, LoginTime, LoginType, Status, Application FROM LoginHistory WHERE LoginTime > {} ORDER BY LoginTime DESC LIMIT 200",
            crate::ledger::fmt_ms(since_ms)
        )
    }

    /// The policy fields of these apps (not empty), by name.
    pub fn app_policies(apps: &[&str]) -> String {
        format!(
            "SELECT Id, Name, OptionsAllowAdminApprovedUsersOnly, OptionsRefreshTokenValidityMetric, RefreshTokenValidityPeriod FROM ConnectedApplication WHERE Name IN ({})",
            names(apps)
        )
    }
}

fn text(record: &Value, field: &str) -> String {
    record[field].as_str().unwrap_or("").to_owned()
}

fn malformed(conn: &OrgConnection, reason: String) -> OrgError {
    OrgError::Malformed {
        host: conn.config.host.clone(),
        reason,
    }
}

/// The user's live approvals for one app, newest first.
pub async fn approvals(
    conn: &OrgConnection,
    user_id: &str,
    app: &str,
) -> Result<Vec<Approval>, OrgError> {
    conn.query("OauthToken", &soql::approvals(user_id, app))
        .await?
        .iter()
        .map(|r| approval(conn, r))
        .collect()
}

/// Every live approval of these apps, newest first (for `doctor`).
pub async fn approvals_of_apps(
    conn: &OrgConnection,
    apps: &[&str],
) -> Result<Vec<Approval>, OrgError> {
    if apps.is_empty() {
        return Ok(Vec::new());
    }
    conn.query("OauthToken", &soql::approvals_of_apps(apps))
        .await?
        .iter()
        .map(|r| approval(conn, r))
        .collect()
}

fn approval(conn: &OrgConnection, r: &Value) -> Result<Approval, OrgError> {
    let created = parse_date(r["CreatedDate"].as_str().unwrap_or(""))
        .ok_or_else(|| malformed(conn, format!("OauthToken without a CreatedDate: {r}")))?;
    Ok(Approval {
        id: text(r, "Id"),
        user_id: text(r, "UserId"),
        app: text(r, "AppName"),
        created,
        last_used: r["LastUsedDate"].as_str().and_then(parse_date),
        use_count: r["UseCount"].as_u64().unwrap_or(0),
    })
}

/// The user by id (or by username), with its login flags.
pub async fn user(conn: &OrgConnection, by: UserKey<'_>) -> Result<Option<UserRecord>, OrgError> {
    let Some(row) = conn
        .query("User", &soql::user(by))
        .await?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let mut user = UserRecord {
        id: text(&row, "Id"),
        username: text(&row, "Username"),
        active: row["IsActive"].as_bool().unwrap_or(true),
        ..UserRecord::default()
    };
    // Frozen and locked need Manage Users; without it the user's activity still counts.
    match conn.query("UserLogin", &soql::user_login(&user.id)).await {
        Ok(rows) => {
            if let Some(login) = rows.first() {
                user.frozen = login["IsFrozen"].as_bool().unwrap_or(false);
                user.password_locked = login["IsPasswordLocked"].as_bool().unwrap_or(false);
            }
        }
        Err(e) => conn.tell_once(
            "user_login",
            &e.to_string(),
            "grant the integration user Manage Users to read UserLogin (frozen, locked)",
        ),
    }
    Ok(Some(user))
}

#[derive(Debug, Clone, Copy)]
pub enum UserKey<'a> {
    Id(&'a str),
    Username(&'a str),
}

/// OAuth logins since `since_ms`, newest first.
pub async fn logins(conn: &OrgConnection, since_ms: i64) -> Result<Vec<LoginRow>, OrgError> {
    Ok(conn
        .query("LoginHistory", &soql::logins(since_ms))
        .await?
        .iter()
        .filter_map(|r| {
            Some(LoginRow {
                user_id: text(r, "UserId"),
                at: parse_date(r["LoginTime"].as_str()?)?,
                status: text(r, "Status"),
                application: text(r, "Application"),
            })
        })
        .collect())
}

/// The policy fields of these apps, by name.
pub async fn app_policies(conn: &OrgConnection, apps: &[&str]) -> Result<Vec<Value>, OrgError> {
    if apps.is_empty() {
        return Ok(Vec::new());
    }
    conn.query("ConnectedApplication", &soql::app_policies(apps))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salesforce_dates_parse_to_milliseconds() {
        assert_eq!(
            parse_date("2026-11-25T09:12:03.000+0000"),
            Some(1_795_597_923_000)
        );
        assert_eq!(parse_date("2026-11-25T09:12:03Z"), Some(1_795_597_923_000));
        assert_eq!(parse_date("yesterday"), None);
    }

    /// Every query, pinned: a field added to one must be added to the emulator's table test.
    #[test]
    fn the_queries_select_ids_names_dates_counts_and_flags_and_never_a_token_column() {
        let all = [
            soql::approvals("005000000000001AAA", "Acme Sync"),
            soql::approvals_of_apps(&["Acme Sync", "web"]),
            soql::user(UserKey::Id("005000000000001AAA")),
            soql::user(UserKey::Username("grantdoctor@acme.com")),
            soql::user_login("005000000000001AAA"),
            soql::logins(1_795_597_923_000),
            soql::app_policies(&["Acme Sync"]),
        ];
        assert_eq!(
            all,
            [
                "SELECT Id, UserId, AppName, CreatedDate, LastUsedDate, UseCount FROM OauthToken WHERE UserId = '005000000000001AAA' AND AppName = 'Acme Sync' ORDER BY CreatedDate DESC LIMIT 200",
                "SELECT Id, UserId, AppName, CreatedDate, LastUsedDate, UseCount FROM OauthToken WHERE AppName IN ('Acme Sync', 'web') ORDER BY CreatedDate DESC LIMIT 500",
                "SELECT Id, Username, IsActive, LastLoginDate FROM User WHERE Id = '005000000000001AAA'",
                "SELECT Id, Username, IsActive, LastLoginDate FROM User WHERE Username = 'grantdoctor@acme.com'",
                "SELECT Id, UserId, IsFrozen, IsPasswordLocked FROM UserLogin WHERE UserId = '005000000000001AAA'",
                "SELECT Id, UserId, LoginTime, LoginType, Status, Application FROM LoginHistory WHERE LoginTime > 2026-11-25T09:12:03Z ORDER BY LoginTime DESC LIMIT 200",
                "SELECT Id, Name, OptionsAllowAdminApprovedUsersOnly, OptionsRefreshTokenValidityMetric, RefreshTokenValidityPeriod FROM ConnectedApplication WHERE Name IN ('Acme Sync')",
            ]
        );
        for text in &all {
            for column in ["AccessToken", "DeleteToken", "RequestToken"] {
                assert!(!text.contains(column), "{text}");
            }
        }
    }

    #[test]
    fn literals_cannot_break_out_of_the_query() {
        assert_eq!(literal("Acme Sync"), "'Acme Sync'");
        assert_eq!(literal("x' OR Name != '"), "'x\\' OR Name != \\''");
        assert_eq!(literal("a\\b"), "'a\\\\b'");
    }
}
