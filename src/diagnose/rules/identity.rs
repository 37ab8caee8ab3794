//! The user, org and app settings that refuse a login: an IP range, a deactivated user or
//! org, an app for admin-approved users only, the hourly login rate.

use crate::diagnose::Findings;
use crate::diagnose::catalogue::id;

use super::Case;
use super::evidence::user_line;

pub(super) fn ip_restricted(c: &Case, f: &mut Findings) {
    f.add(
        id::USER_IP_RESTRICTED,
        0.95,
        vec![format!(
            "Salesforce refused the login from this network (`{}`)",
            c.resp.error_description.as_deref().unwrap_or("")
        )],
    );
}

pub(super) fn inactive_user(c: &Case, f: &mut Findings) {
    f.add(id::USER_INACTIVE, 0.95, vec![user_line(c.req)]);
}

pub(super) fn inactive_organization(c: &Case, f: &mut Findings) {
    f.add(
        id::ORG_INACTIVE,
        0.95,
        vec![format!(
            "Salesforce answered `inactive organization` at {}: the org is locked, suspended or expired",
            c.req.host
        )],
    );
}

pub(super) fn inactive_org(c: &Case, f: &mut Findings) {
    f.add(
        id::ORG_INACTIVE,
        0.95,
        vec![format!(
            "Salesforce answered inactive_org at {}",
            c.req.host
        )],
    );
}

pub(super) fn app_access(c: &Case, f: &mut Findings) {
    f.add(
        id::APP_USER_NOT_APPROVED,
        0.95,
        vec![format!(
            "{}: the app admits only admin-approved users",
            user_line(c.req)
        )],
    );
}

pub(super) fn login_rate_exceeded(c: &Case, f: &mut Findings) {
    f.add(id::USER_LOGIN_RATE_EXCEEDED, 0.95, vec![user_line(c.req)]);
}

#[cfg(test)]
mod tests {
    use crate::diagnose::catalogue::id;
    use crate::diagnose::testing::{Wire, ids};

    #[test]
    fn inactive_user_is_named_whether_as_an_error_or_a_description() {
        let wire = Wire::new();
        let body = "grant_type=password&username=ann@example.com";
        let by_error = wire.diagnose(body, 400, "inactive_user", "User is inactive");
        let by_description = wire.diagnose(body, 400, "invalid_grant", "inactive user");
        assert_eq!(ids(&by_error), [id::USER_INACTIVE]);
        assert_eq!(ids(&by_description), [id::USER_INACTIVE]);
        assert_eq!(by_error.causes[0].evidence, ["user ann@example.com"]);
    }

    #[test]
    fn an_ip_restriction_quotes_salesforce() {
        let wire = Wire::new();
        let d = wire.diagnose(
            "grant_type=password&username=u",
            400,
            "invalid_grant",
            "ip restricted",
        );
        assert_eq!(ids(&d), [id::USER_IP_RESTRICTED]);
        assert!(d.causes[0].evidence[0].contains("`ip restricted`"));
    }
}
