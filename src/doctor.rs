//! `grantdoctor doctor`: reads each configured org and says what will break before it does —
//! users at the approval limit per app, approvals idle past the app's validity period (or the
//! 30-day cap), inactive, frozen or locked integration users, apps that expire refresh tokens
//! at once, recent failed OAuth logins by status. Finding ids reuse cause and warning ids where they mean the same thing.
//!
//! Must never: select or print a token value; change anything in the org (reads only).

use crate::diagnose::catalogue::{id, warn};
use std::collections::BTreeMap;

use serde::Serialize;

use crate::diagnose::info;
use crate::ledger::fmt_ms;
use crate::org::records::{self, UserKey};
use crate::org::{OrgConnection, OrgError, Orgs};

const DAY_MS: i64 = 86_400_000;
/// Salesforce's cap on an unused refresh token when idle limits apply.
const IDLE_CAP_MS: i64 = 30 * DAY_MS;
/// Users holding approvals whose state is read, at most.
const MAX_USERS_READ: usize = 50;
/// How far back failed logins are read.
const LOGINS_SINCE_MS: i64 = DAY_MS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Warning,
    Error,
}

/// One thing that will break (or already has).
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub level: Level,
    pub org: String,
    pub app: Option<String>,
    pub user: Option<String>,
    pub evidence: Vec<String>,
    pub fix: Vec<String>,
}

fn fix_of(id: &'static str) -> Vec<String> {
    match id {
        "doctor.failed_logins" => vec![
            "Read each status against the cause catalogue (`grantdoctor explain`) and fix the client that sends those logins.".into(),
        ],
        "doctor.org_unreadable" => vec![
            "Give the integration user API Enabled, View Setup and Configuration, and Customize Application or Manage Users (OauthToken), Manage Users or Monitor Login History (LoginHistory).".into(),
        ],
        // The warning announces the eviction its cause describes: the same fix.
        warn::APPROVAL_LIMIT_REACHED => fix_of(id::REFRESH_APPROVAL_LIMIT_EVICTED),
        _ => info(id).fix.iter().map(|s| (*s).to_owned()).collect(),
    }
}

struct Report<'a> {
    org: &'a str,
    findings: Vec<Finding>,
}

impl Report<'_> {
    fn add(
        &mut self,
        id: &'static str,
        level: Level,
        app: Option<&str>,
        user: Option<&str>,
        evidence: Vec<String>,
    ) {
        self.findings.push(Finding {
            id,
            level,
            org: self.org.to_owned(),
            app: app.map(str::to_owned),
            user: user.map(str::to_owned),
            evidence,
            fix: fix_of(id),
        });
    }

    fn unreadable(&mut self, what: &str, e: &OrgError) {
        let id = match e {
            OrgError::Login { cause, .. } => *cause,
            _ => "doctor.org_unreadable",
        };
        self.add(id, Level::Error, None, None, vec![format!("{what}: {e}")]);
    }
}

/// Every finding of every org, errors first.
pub async fn examine(orgs: &Orgs, limit: usize, now: i64) -> Vec<Finding> {
    let mut all = Vec::new();
    for conn in orgs.all() {
        all.extend(examine_org(conn, limit, now).await);
    }
    all.sort_by_key(|f| std::cmp::Reverse(f.level));
    all
}

async fn examine_org(conn: &OrgConnection, limit: usize, now: i64) -> Vec<Finding> {
    let mut report = Report {
        org: &conn.config.host,
        findings: Vec::new(),
    };
    match records::user(conn, UserKey::Username(&conn.config.username)).await {
        Ok(Some(user)) => integration_user(&mut report, &user),
        Ok(None) => report.add(
            id::USER_INACTIVE,
            Level::Error,
            None,
            Some(&conn.config.username),
            vec![format!("no User {} in the org", conn.config.username)],
        ),
        Err(e) => {
            // Without a login nothing else can be read.
            report.unreadable("the integration user", &e);
            return report.findings;
        }
    }
    let apps: Vec<&str> = conn.config.apps.values().map(String::as_str).collect();
    let policy_rows = match records::app_policies(conn, &apps).await {
        Ok(rows) => rows,
        Err(e) => {
            report.unreadable("ConnectedApplication", &e);
            Vec::new()
        }
    };
    policies(&mut report, &policy_rows);
    let idle_limits = idle_limits(&policy_rows);
    match records::approvals_of_apps(conn, &apps).await {
        Ok(rows) => {
            approvals(&mut report, &rows, limit, &idle_limits, now);
            approving_users(&mut report, conn, &rows).await;
        }
        Err(e) => report.unreadable("OauthToken", &e),
    }
    match records::logins(conn, now - LOGINS_SINCE_MS).await {
        Ok(rows) => failed_logins(&mut report, &rows),
        Err(e) => report.unreadable("LoginHistory", &e),
    }
    report.findings
}

fn integration_user(report: &mut Report<'_>, user: &crate::org::UserRecord) {
    let evidence = user.problems();
    if !evidence.is_empty() {
        report.add(
            id::USER_INACTIVE,
            Level::Error,
            None,
            Some(&user.username),
            evidence,
        );
    }
}

/// Per app name, how long an approval may go unused: the app's timed validity period when it
/// has one, else the 30-day cap.
fn idle_limits(policies: &[serde_json::Value]) -> BTreeMap<String, i64> {
    policies
        .iter()
        .filter(|app| app["OptionsRefreshTokenValidityMetric"].as_bool() == Some(true))
        .filter_map(|app| {
            let hours = app["RefreshTokenValidityPeriod"]
                .as_i64()
                .filter(|h| *h > 0)?;
            Some((
                app["Name"].as_str()?.to_owned(),
                (hours * 3_600_000).min(IDLE_CAP_MS),
            ))
        })
        .collect()
}

fn approvals(
    report: &mut Report<'_>,
    rows: &[crate::org::Approval],
    limit: usize,
    idle_limits: &BTreeMap<String, i64>,
    now: i64,
) {
    let mut by_user: BTreeMap<(&str, &str), Vec<&crate::org::Approval>> = BTreeMap::new();
    for row in rows {
        by_user
            .entry((row.app.as_str(), row.user_id.as_str()))
            .or_default()
            .push(row);
    }
    for ((app, user), mut live) in by_user {
        live.sort_by_key(|a| a.created);
        if live.len() >= limit {
            report.add(
                warn::APPROVAL_LIMIT_REACHED,
                Level::Warning,
                Some(app),
                Some(user),
                vec![format!(
                    "{} live approvals (limit {limit}); the next authorization evicts the oldest, created {} (OauthToken {})",
                    live.len(),
                    fmt_ms(live[0].created),
                    live[0].id
                )],
            );
        }
        let allowed = idle_limits.get(app).copied().unwrap_or(IDLE_CAP_MS);
        for idle in live
            .iter()
            .filter(|a| now - a.last_used.unwrap_or(a.created) >= allowed)
        {
            let last = idle.last_used.unwrap_or(idle.created);
            report.add(
                id::REFRESH_POLICY_IDLE_EXPIRY,
                Level::Warning,
                Some(app),
                Some(user),
                vec![format!(
                    "OauthToken {} last used {} ({} days ago): past what the app allows ({} h), its refresh token fails on next use",
                    idle.id,
                    fmt_ms(last),
                    (now - last) / DAY_MS,
                    allowed / 3_600_000
                )],
            );
        }
    }
}

/// Users holding approvals who can no longer log in: their integrations fail on next use.
async fn approving_users(
    report: &mut Report<'_>,
    conn: &OrgConnection,
    rows: &[crate::org::Approval],
) {
    let mut users: Vec<(&str, &str)> = rows
        .iter()
        .map(|a| (a.user_id.as_str(), a.app.as_str()))
        .collect();
    users.sort_unstable();
    users.dedup_by_key(|(user, _)| *user);
    // Bounded: each user is one query against the org's daily API limit.
    for (user_id, app) in users.into_iter().take(MAX_USERS_READ) {
        match records::user(conn, UserKey::Id(user_id)).await {
            Ok(Some(user)) if !user.problems().is_empty() => {
                let mut evidence = user.problems();
                evidence.push(format!(
                    "it holds approvals of {app}: its refreshes will fail"
                ));
                report.add(
                    id::USER_INACTIVE,
                    Level::Error,
                    Some(app),
                    Some(&user.username),
                    evidence,
                );
            }
            Ok(_) => {}
            Err(e) => {
                report.unreadable("User", &e);
                return;
            }
        }
    }
}

fn policies(report: &mut Report<'_>, rows: &[serde_json::Value]) {
    for app in rows {
        let timed = app["OptionsRefreshTokenValidityMetric"].as_bool() == Some(true);
        if timed && app["RefreshTokenValidityPeriod"].as_i64() == Some(0) {
            let name = app["Name"].as_str().unwrap_or("");
            report.add(
                id::REFRESH_POLICY_IMMEDIATE_EXPIRY,
                Level::Error,
                Some(name),
                None,
                vec![format!(
                    "ConnectedApplication {} ({name}): refresh token validity period 0: every refresh token fails on its first use",
                    app["Id"].as_str().unwrap_or("")
                )],
            );
        }
    }
}

fn failed_logins(report: &mut Report<'_>, rows: &[crate::org::LoginRow]) {
    let mut by_status: BTreeMap<(&str, &str), (usize, i64)> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.status != "Success") {
        let entry = by_status
            .entry((row.application.as_str(), row.status.as_str()))
            .or_insert((0, row.at));
        entry.0 += 1;
        entry.1 = entry.1.max(row.at);
    }
    for ((app, status), (count, last)) in by_status {
        report.add(
            "doctor.failed_logins",
            Level::Warning,
            (!app.is_empty()).then_some(app),
            None,
            vec![format!(
                "{count} failed logins in the last 24 hours with status `{status}`, last at {}",
                fmt_ms(last)
            )],
        );
    }
}

/// The human rendering.
pub fn render(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "No findings: nothing configured is about to break.\n".into();
    }
    let mut out = String::new();
    for f in findings {
        let level = match f.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        out.push_str(&format!("{level}: {}  [{}]", f.id, f.org));
        if let Some(app) = &f.app {
            out.push_str(&format!("  app: {app}"));
        }
        if let Some(user) = &f.user {
            out.push_str(&format!("  user: {user}"));
        }
        out.push('\n');
        for line in &f.evidence {
            out.push_str(&format!("   evidence: {line}\n"));
        }
        for step in &f.fix {
            out.push_str(&format!("   fix: {step}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_764_000_000_000;

    fn approval(created: i64, last_used: Option<i64>) -> crate::org::Approval {
        crate::org::Approval {
            id: "0CQ000000000001AAA".into(),
            user_id: "005000000000001AAA".into(),
            app: "Acme Sync".into(),
            created,
            last_used,
            use_count: 1,
        }
    }

    fn findings(
        rows: &[crate::org::Approval],
        policies: &[serde_json::Value],
        now: i64,
    ) -> Vec<&'static str> {
        let mut report = Report {
            org: "acme.my.salesforce.com",
            findings: Vec::new(),
        };
        approvals(&mut report, rows, 5, &idle_limits(policies), now);
        report.findings.iter().map(|f| f.id).collect()
    }

    #[test]
    fn an_approval_idle_past_the_apps_validity_period_is_found() {
        let policy = serde_json::json!({"Name": "Acme Sync", "OptionsRefreshTokenValidityMetric": true, "RefreshTokenValidityPeriod": 1});
        let rows = [approval(T, Some(T))];
        assert_eq!(
            findings(&rows, std::slice::from_ref(&policy), T + 2 * 3_600_000),
            ["sf.refresh.policy_idle_expiry"]
        );
        assert!(findings(&rows, &[policy], T + 1_800_000).is_empty());
        // Without a timed policy only the 30-day cap applies.
        assert!(findings(&rows, &[], T + 2 * 3_600_000).is_empty());
        assert_eq!(
            findings(&rows, &[], T + 31 * DAY_MS),
            ["sf.refresh.policy_idle_expiry"]
        );
    }

    #[test]
    fn a_full_approval_list_is_found_once_per_user_and_app() {
        let rows: Vec<_> = (0..5).map(|i| approval(T + i, Some(T + i))).collect();
        assert_eq!(
            findings(&rows, &[], T + 10),
            ["warn.approval_limit_reached"]
        );
    }

    fn report() -> Report<'static> {
        Report {
            org: "acme.my.salesforce.com",
            findings: Vec::new(),
        }
    }

    #[test]
    fn failed_logins_are_one_finding_per_app_and_status_with_their_count_and_last_time() {
        let login = |status: &str, app: &str, at: i64| crate::org::LoginRow {
            user_id: "005000000000001AAA".into(),
            at,
            status: status.into(),
            application: app.into(),
        };
        let rows = [
            login("Invalid password", "Acme Sync", T),
            login("Success", "Acme Sync", T + 1),
            login("Invalid password", "Acme Sync", T + 2_000),
            login("User is frozen", "Acme Sync", T + 3_000),
            login("Invalid password", "", T + 4_000),
        ];
        let mut report = report();
        failed_logins(&mut report, &rows);
        let got: Vec<(Option<&str>, &str)> = report
            .findings
            .iter()
            .map(|f| (f.app.as_deref(), f.evidence[0].as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    None,
                    format!("1 failed logins in the last 24 hours with status `Invalid password`, last at {}", fmt_ms(T + 4_000)).as_str()
                ),
                (
                    Some("Acme Sync"),
                    format!("2 failed logins in the last 24 hours with status `Invalid password`, last at {}", fmt_ms(T + 2_000)).as_str()
                ),
                (
                    Some("Acme Sync"),
                    format!("1 failed logins in the last 24 hours with status `User is frozen`, last at {}", fmt_ms(T + 3_000)).as_str()
                ),
            ]
        );
        assert!(
            report
                .findings
                .iter()
                .all(|f| f.id == "doctor.failed_logins" && f.level == Level::Warning)
        );
    }

    #[test]
    fn a_frozen_or_locked_integration_user_is_an_error_and_an_active_one_is_nothing() {
        let user = |frozen, password_locked| crate::org::UserRecord {
            id: "005000000000001AAA".into(),
            username: "grantdoctor@acme.com".into(),
            active: true,
            frozen,
            password_locked,
        };
        let mut report = report();
        integration_user(&mut report, &user(false, false));
        assert!(report.findings.is_empty());
        integration_user(&mut report, &user(true, false));
        integration_user(&mut report, &user(false, true));
        let got: Vec<(&str, Level, &str)> = report
            .findings
            .iter()
            .map(|f| (f.id, f.level, f.evidence[0].as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "sf.user.inactive",
                    Level::Error,
                    "UserLogin of 005000000000001AAA has IsFrozen = true"
                ),
                (
                    "sf.user.inactive",
                    Level::Error,
                    "UserLogin of 005000000000001AAA has IsPasswordLocked = true"
                ),
            ]
        );
    }

    #[test]
    fn a_json_finding_has_exactly_the_documented_members() {
        let mut report = report();
        report.add(
            warn::APPROVAL_LIMIT_REACHED,
            Level::Warning,
            Some("Acme Sync"),
            Some("005000000000001AAA"),
            vec!["5 live approvals".into()],
        );
        let value = serde_json::to_value(&report.findings[0]).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["app", "evidence", "fix", "id", "level", "org", "user"]
        );
        assert_eq!(value["level"], "warning");
        assert!(!value["fix"].as_array().unwrap().is_empty());
    }
}
