//! Which scopes a grant gets: the requested ones the app allows, or all of the app's, and the
//! app's scopes without the refresh scopes for grants that never issue a refresh token. Must
//! never: look at users or tokens; scopes are a function of the app and the request only.

pub(super) fn granted_scope(allowed: &[String], requested: Option<&str>) -> String {
    match requested {
        Some(req) if !req.trim().is_empty() => req
            .split_whitespace()
            .filter(|s| allowed.iter().any(|a| a == s))
            .collect::<Vec<_>>()
            .join(" "),
        _ => allowed.join(" "),
    }
}

pub(super) fn app_scopes_without_refresh(scopes: &[String]) -> Vec<String> {
    scopes
        .iter()
        .filter(|s| *s != "refresh_token" && *s != "offline_access")
        .cloned()
        .collect()
}
