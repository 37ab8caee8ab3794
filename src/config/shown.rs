//! How `run`'s arguments read in `check-config`'s output (`serialize_with` of `RunArgs`):
//! each value as its flag takes it, so the output is a configuration file again, except
//! secrets, which are masked.

use std::fmt::Display;

use serde::Serializer;

use crate::upstream::ResolveRule;

/// Items as their `Display` writes them, which is how their flag parses them.
pub fn each_displayed<T: Display, S: Serializer>(items: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(items.iter().map(ToString::to_string))
}

/// `HOST:PORT=ADDR:PORT`, as `--resolve` takes it.
pub fn resolve_rules<S: Serializer>(rules: &[ResolveRule], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        rules
            .iter()
            .map(|r| format!("{}:{}={}", r.host, r.port, r.addr)),
    )
}

/// `USER:********`: the user helps find which credentials are set; the password never shows.
pub fn masked_credentials<S: Serializer>(auth: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match auth {
        Some(auth) => {
            let user = auth.split(':').next().unwrap_or_default();
            s.serialize_str(&format!("{user}:********"))
        }
        None => s.serialize_none(),
    }
}

/// The store's URL with its password masked.
pub fn store<S: Serializer>(store: &crate::fleet::StoreUrl, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&store.shown())
}

/// Webhook URLs as `scheme://host/…`: their paths are often the credential.
pub fn secret_urls<S: Serializer>(
    urls: &[crate::webhook::SecretUrl],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(urls.iter().map(|u| u.shown()))
}

/// The name the flag takes (`on`, `write-behind`).
pub fn value_enum<T: clap::ValueEnum, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    let name = value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default();
    s.serialize_str(&name)
}

/// Whole seconds without a fraction (`1`, not `1.0`), as they have always been shown.
pub fn seconds<S: Serializer>(seconds: &f64, s: S) -> Result<S::Ok, S::Error> {
    if seconds.fract() == 0.0 && seconds.abs() < 1e15 {
        s.serialize_i64(*seconds as i64)
    } else {
        s.serialize_f64(*seconds)
    }
}
