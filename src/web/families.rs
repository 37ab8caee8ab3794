//! The page's "Token families" section: per (org, user, app), live approvals against the
//! limit as a bar, rotation chains, last use, predicted evictions, idle tokens, the breaker's
//! entries, and a timeline in a `<details>` (which opens without JavaScript).

use std::fmt::Write;

use super::esc;
use crate::ledger::families::FamilyView;
use crate::ledger::fmt_ms;

pub fn render(out: &mut String, families: &[FamilyView]) {
    out.push_str("<section id=\"families\"><h2>Token families</h2>");
    if families.is_empty() {
        out.push_str("<p class=\"note\">No refresh tokens known yet.</p></section>");
        return;
    }
    out.push_str("<table id=\"family-table\"><thead><tr><th>org / user</th><th>client id</th><th>live approvals</th><th>rotation chains</th><th>last use</th><th>predicted evictions</th><th>idle &gt; 30 days</th><th>breaker</th><th>timeline</th></tr></thead><tbody>");
    for family in families {
        row(out, family);
    }
    out.push_str("</tbody></table></section>");
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        return "—".to_owned();
    }
    items
        .iter()
        .map(|i| format!("<code>{}</code>", esc(i)))
        .collect::<Vec<_>>()
        .join("<br>")
}

fn row(out: &mut String, f: &FamilyView) {
    let percent = (f.live_approvals * 100 / f.approval_limit.max(1)).min(100);
    let full = if f.live_approvals >= f.approval_limit {
        " full"
    } else {
        ""
    };
    let chains: Vec<String> = f
        .chains
        .iter()
        .filter(|c| c.len() > 1)
        .map(|c| c.join(" → "))
        .collect();
    let mut evictions = f.predicted_evictions.clone();
    if let Some(next) = &f.next_eviction {
        evictions.push(format!("next: {next}"));
    }
    let breaker: Vec<String> = f
        .breaker
        .iter()
        .map(|b| {
            format!(
                "{} dead {} ({}, {} retries answered)",
                b.fp,
                fmt_ms(b.died_at),
                b.cause.as_deref().unwrap_or("?"),
                b.absorbed
            )
        })
        .collect();
    let _ = write!(
        out,
        "<tr data-org=\"{org}\" data-user=\"{user}\" data-client=\"{client}\"><td>{org}<br>{user}</td><td>{client}<br><small>{host}</small></td>\
         <td><div class=\"bar{full}\" role=\"img\" aria-label=\"{live} of {limit} approvals live\"><span style=\"width:{percent}%\"></span></div>\
         <b class=\"approvals\">{live}/{limit}</b> <small>{tokens} tokens, {failures} failures</small></td>\
         <td>{chains}</td><td>{last_use}</td><td class=\"evictions\">{evictions}</td><td>{idle}</td><td>{breaker}</td><td>",
        org = esc(&f.org_id),
        user = esc(&f.user_id),
        client = esc(&f.client_id),
        host = esc(&f.host),
        live = f.live_approvals,
        limit = f.approval_limit,
        tokens = f.tokens.len(),
        failures = f.failures,
        chains = list(&chains),
        last_use = f.last_use.map_or("never".to_owned(), fmt_ms),
        evictions = list(&evictions),
        idle = list(&f.idle),
        breaker = list(&breaker),
    );
    timeline(out, f);
    out.push_str("</td></tr>");
}

fn timeline(out: &mut String, f: &FamilyView) {
    let _ = write!(
        out,
        "<details><summary>{} steps</summary><ol class=\"timeline\">",
        f.timeline.len()
    );
    for step in &f.timeline {
        let _ = write!(
            out,
            "<li class=\"{what}\"><time>{at}</time> {what} <code>{fp}</code></li>",
            what = step.what,
            at = esc(&fmt_ms(step.at)),
            fp = esc(&step.fp),
        );
    }
    out.push_str("</ol><table class=\"tokens\"><tr><th>token</th><th>state</th><th>issued</th><th>first seen</th><th>uses</th><th>last success</th><th>rotated into</th></tr>");
    for t in &f.tokens {
        let _ = write!(
            out,
            "<tr class=\"{state}\"><td><code>{fp}</code></td><td>{state}</td><td>{issued} <small>{by}</small></td><td>{seen}</td><td>{uses}</td><td>{last}</td><td>{into}</td></tr>",
            fp = esc(&t.fp),
            state = t.state,
            issued = t.issued_at.map_or("not seen".to_owned(), fmt_ms),
            by = esc(&t.issued_by),
            seen = fmt_ms(t.first_seen),
            uses = t.uses,
            last = t.last_success.map_or("—".to_owned(), fmt_ms),
            into = esc(t.rotated_into.as_deref().unwrap_or("—")),
        );
    }
    out.push_str("</table></details>");
}
