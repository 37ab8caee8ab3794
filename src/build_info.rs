//! What this binary was built from, for `--version`, bug reports and anything that wants to
//! say which build it is. `build.rs` sets the commit: from git when the source is a checkout,
//! else from `GRANTDOCTOR_GIT_COMMIT` given to the build (image builds copy no `.git`), else
//! `unknown`.

/// The short (12-digit) commit hash of the source, or `unknown`.
pub const GIT_COMMIT: &str = env!("GRANTDOCTOR_GIT_COMMIT");

/// `--version`: the package version and the commit.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("GRANTDOCTOR_GIT_COMMIT"),
    ")"
);
