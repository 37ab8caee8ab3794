//! `check-config`'s TOML: the arguments as they serialize (`cli::RunArgs`, secrets masked by
//! `config::shown`), then the tables that have no flag.

use std::path::Path;

use crate::cli::RunArgs;

/// The effective configuration as TOML, secrets masked (`check-config`).
pub fn render(args: &RunArgs) -> String {
    // RunArgs holds no value TOML cannot write: every field is a string, number, switch or
    // list of them, or is skipped.
    let mut out = toml::to_string(args).expect("the run arguments serialize as TOML");
    out.push_str(&tables(args));
    out
}

/// `[refresh_policies]`, `[[orgs]]`, `[[webhooks]]` and `[[recovery.jwt_bearer]]`.
fn tables(args: &RunArgs) -> String {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let path = |p: &Path| quote(&p.display().to_string());
    let mut out = String::new();
    if !args.refresh_policies.is_empty() {
        out.push_str("\n[refresh_policies]\n");
        for (client, policy) in &args.refresh_policies {
            out.push_str(&format!(
                "{} = {}\n",
                quote(client),
                quote(&policy.to_string())
            ));
        }
    }
    for org in &args.orgs {
        out.push_str("\n[[orgs]]\n");
        out.push_str(&format!("host = {}\n", quote(&org.host)));
        out.push_str(&format!("client_id = {}\n", quote(&org.client_id)));
        out.push_str(&format!("private_key = {}\n", path(&org.private_key)));
        out.push_str(&format!("username = {}\n", quote(&org.username)));
        if let Some(audience) = &org.audience {
            out.push_str(&format!("audience = {}\n", quote(audience)));
        }
        if !org.apps.is_empty() {
            let mut apps: Vec<_> = org.apps.iter().collect();
            apps.sort();
            let pairs: Vec<String> = apps
                .iter()
                .map(|(id, name)| format!("{} = {}", quote(id), quote(name)))
                .collect();
            out.push_str(&format!("apps = {{ {} }}\n", pairs.join(", ")));
        }
    }
    out.push_str(&crate::webhook::render_tables(&args.webhooks));
    for app in &args.jwt_bearer {
        out.push_str("\n[[recovery.jwt_bearer]]\n");
        out.push_str(&format!("client_id = {}\n", quote(&app.client_id)));
        out.push_str(&format!("private_key = {}\n", path(&app.private_key)));
        if let Some(subject) = &app.subject {
            out.push_str(&format!("subject = {}\n", quote(subject)));
        }
        if !app.subjects.is_empty() {
            let pairs: Vec<String> = app
                .subjects
                .iter()
                .map(|(id, name)| format!("{} = {}", quote(id), quote(name)))
                .collect();
            out.push_str(&format!("subjects = {{ {} }}\n", pairs.join(", ")));
        }
        if let Some(audience) = &app.audience {
            out.push_str(&format!("audience = {}\n", quote(audience)));
        }
    }
    out
}
