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
    let soql = format!(
        "SELECT Id, UserId, AppName, CreatedDate, LastUsedDate, UseCount FROM OauthToken WHERE UserId = {} AND AppName = {} ORDER BY CreatedDate DESC LIMIT 200",
        literal(user_id),
        literal(app)
    );
    conn.query("OauthToken", &soql)
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
    let names: Vec<String> = apps.iter().map(|a| literal(a)).collect();
    let soql = format!(
        "SELECT Id, UserId, AppName, CreatedDate, LastUsedDate, UseCount FROM OauthToken WHERE AppName IN ({}) ORDER BY CreatedDate DESC LIMIT 500",
        names.join(", ")
    );
    conn.query("OauthToken", &soql)
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
    let filter = match by {
        UserKey::Id(id) => format!("Id = {}", literal(id)),
        UserKey::Username(name) => format!("Username = {}", literal(name)),
    };
    let soql = format!("SELECT Id, Username, IsActive, LastLoginDate FROM User WHERE {filter}");
    let Some(row) = conn.query("User", &soql).await?.into_iter().next() else {
        return Ok(None);
    };
    let mut user = UserRecord {
        id: text(&row, "Id"),
        username: text(&row, "Username"),
        active: row["IsActive"].as_bool().unwrap_or(true),
        ..UserRecord::default()
    };
    let soql = format!(
        "SELECT Id, UserId, IsFrozen, IsPasswordLocked FROM UserLogin WHERE UserId = {}",
        literal(&user.id)
    );
    // Frozen and locked need Manage Users; without it the user's activity still counts.
    match conn.query("UserLogin", &soql).await {
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
    let since = crate::ledger::fmt_ms(since_ms);
    let soql = format!(
        "SELECT Id, UserId, LoginTime, LoginType, Status, Application FROM LoginHistory WHERE LoginTime > {since} ORDER BY LoginTime DESC LIMIT 200"
    );
    Ok(conn
        .query("LoginHistory", &soql)
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
    let names: Vec<String> = apps.iter().map(|a| literal(a)).collect();
    let soql = format!(
        "SELECT Id, Name, OptionsAllowAdminApprovedUsersOnly, OptionsRefreshTokenValidityMetric, RefreshTokenValidityPeriod FROM ConnectedApplication WHERE Name IN ({})",
        names.join(", ")
    );
    conn.query("ConnectedApplication", &soql).await
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

    #[test]
    fn literals_cannot_break_out_of_the_query() {
        assert_eq!(literal("Acme Sync"), "'Acme Sync'");
        assert_eq!(literal("x' OR Name != '"), "'x\\' OR Name != \\''");
        assert_eq!(literal("a\\b"), "'a\\\\b'");
    }
}
