//! The rules, in decision order: mechanics first (certain from the request or the proxy's
//! own failure), then a table from what Salesforce answered (`error`, and a prefix of
//! `error_description`) to the rule of one cause family.
//!
//! A new cause takes its id and wording in [`super::catalogue`], a rule in the family module
//! it belongs to (with unit tests there), a row of [`TABLE`] when Salesforce answers it with
//! an error or description of its own, and a fixture under `tests/fixtures/salesforce/`.

mod client;
mod code;
mod evidence;
mod identity;
mod jwt;
mod mechanics;
mod password;
mod refresh;
mod refresh_known;

use crate::ledger::LedgerView;
use crate::oauth::{RequestFacts, ResponseFacts};

use super::{Findings, Policies};

/// Everything a rule may read: the exchange, the ledger's view and the declared policies, at
/// the (upstream) time of the answer.
#[derive(Clone, Copy)]
pub(super) struct Case<'a> {
    pub req: &'a RequestFacts,
    pub resp: &'a ResponseFacts,
    pub view: &'a LedgerView,
    pub policies: &'a Policies,
    pub now: i64,
}

type RuleFn = fn(&Case, &mut Findings);

/// One row of the table: Salesforce's `error`, the `error_description` prefixes it applies
/// to (none: any description), and the rule.
struct Row {
    error: &'static str,
    descriptions: &'static [&'static str],
    rule: RuleFn,
}

const fn row(error: &'static str, descriptions: &'static [&'static str], rule: RuleFn) -> Row {
    Row {
        error,
        descriptions,
        rule,
    }
}

/// The first row that matches decides; rows of one error go from the most specific
/// description to the catch-all.
const TABLE: &[Row] = &[
    row(
        "invalid_grant",
        &["expired access/refresh token"],
        refresh::expired,
    ),
    row(
        "invalid_grant",
        &["expired authorization code"],
        code::expired_by_grant,
    ),
    row(
        "invalid_grant",
        &["invalid code verifier"],
        code::pkce_mismatch,
    ),
    row(
        "invalid_grant",
        &["authentication failure", "invalid user credentials"],
        password::authentication_failure,
    ),
    row("invalid_grant", &["ip restricted"], identity::ip_restricted),
    row("invalid_grant", &["inactive user"], identity::inactive_user),
    row("inactive_user", &[], identity::inactive_user),
    row(
        "invalid_grant",
        &["user hasn't approved this consumer"],
        jwt::not_approved,
    ),
    row(
        "invalid_grant",
        &["inactive organization"],
        identity::inactive_organization,
    ),
    row(
        "invalid_grant",
        &["no valid scopes defined"],
        client::cc_no_valid_scopes,
    ),
    row(
        "invalid_request",
        &["refresh_token scope is required"],
        jwt::refresh_scope_missing,
    ),
    row(
        "invalid_grant",
        &["invalid assertion"],
        jwt::invalid_assertion,
    ),
    row(
        "invalid_grant",
        &["audience is invalid", "audience validation failed"],
        jwt::audience,
    ),
    row(
        "invalid_grant",
        &["request not supported on this domain"],
        client::cc_wrong_domain,
    ),
    row(
        "invalid_grant",
        &["no client credentials user enabled"],
        client::cc_no_run_as_user,
    ),
    row(
        "invalid_grant",
        &["token validity expired"],
        refresh::validity_expired,
    ),
    row("inactive_org", &[], identity::inactive_org),
    row("invalid_app_access", &[], identity::app_access),
    row("app_not_found", &[], jwt::app_not_found),
    row("invalid_client", &[], client::invalid_client),
    row("invalid_client_credentials", &[], client::invalid_client),
    row("invalid_client_id", &[], client::unknown_client_id),
    row("unsupported_grant_type", &[], mechanics::malformed),
    row("invalid_request", &[], mechanics::malformed),
    row("redirect_uri_mismatch", &[], code::redirect_uri_mismatch),
    row("rate_limit_exceeded", &[], identity::login_rate_exceeded),
];

pub(super) fn apply(
    req: &RequestFacts,
    resp: &ResponseFacts,
    view: &LedgerView,
    policies: &Policies,
    now: i64,
    f: &mut Findings,
) {
    let case = Case {
        req,
        resp,
        view,
        policies,
        now,
    };
    if mechanics::decided(&case, f) {
        return;
    }
    let Some(error) = resp.error.as_deref() else {
        return;
    };
    let matching = TABLE.iter().find(|row| {
        row.error == error
            && (row.descriptions.is_empty()
                || row.descriptions.iter().any(|d| resp.description_is(d)))
    });
    if let Some(row) = matching {
        (row.rule)(&case, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::catalogue::{CAUSES, id};
    use crate::diagnose::testing::Wire;

    #[test]
    fn every_row_names_an_error_and_rows_of_one_error_end_with_their_catch_all() {
        for (i, row) in TABLE.iter().enumerate() {
            assert!(!row.error.is_empty());
            let later_specific = TABLE[i + 1..]
                .iter()
                .any(|r| r.error == row.error && !r.descriptions.is_empty());
            assert!(
                !(row.descriptions.is_empty() && later_specific),
                "row {i} ({}) catches all before a more specific row",
                row.error
            );
        }
    }

    #[test]
    fn an_error_no_row_knows_falls_to_the_unknown_prior() {
        let wire = Wire::new();
        let diagnosis = wire.diagnose("grant_type=password&username=u", 400, "weird_error", "");
        assert_eq!(
            wire.top(&diagnosis),
            (id::UNKNOWN, crate::diagnose::Basis::Prior)
        );
        assert!(CAUSES.iter().any(|c| c.id == id::UNKNOWN));
    }
}
