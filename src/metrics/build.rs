//! The `build_info` family: which build is running, as labels on a constant 1.
//!
//! Must never: take a label from the environment at run time; the values are fixed when
//! the binary is built.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::register::Described;
use super::{Labels, Metrics};

/// The crate version this binary was built from.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The source commit, when the build script could tell it.
const COMMIT: &str = match option_env!("GRANTDOCTOR_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

pub(super) const BUILD_INFO: Described<Family<Labels, Gauge>> = Described {
    name: "build_info",
    help: "Always 1; the labels say which build is running",
    of: |m| &m.build_info,
};

/// Sets the one series, so a dashboard can join any metric to the build that produced it.
pub(super) fn stamp(metrics: &Metrics) {
    metrics
        .build_info
        .get_or_create(&vec![("version", VERSION), ("commit", COMMIT)])
        .set(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_names_the_version_and_a_commit() {
        let text = Metrics::default().render();
        let line = text
            .lines()
            .find(|l| l.starts_with("grantdoctor_build_info{"))
            .expect("build_info exported");
        assert!(line.contains(&format!("version=\"{VERSION}\"")), "{line}");
        assert!(line.contains("commit=\""), "{line}");
        assert!(line.ends_with(" 1"), "{line}");
    }
}
