//! The project's documents stay true to the code: every cause and warning id of the catalogue
//! is documented in `docs/causes.md`, and the page names no id the catalogue lacks.

use std::collections::BTreeSet;

use grantdoctor::diagnose::{CAUSES, WARNINGS};

fn documented_ids(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            ["sf.", "gd.", "warn."].iter().any(|p| s.starts_with(p))
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
                && s.matches('.').count() >= 1
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_causes_page_lists_exactly_the_catalogue() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/causes.md"),
    )
    .unwrap();
    let documented = documented_ids(&text);
    let catalogue: BTreeSet<String> = CAUSES
        .iter()
        .map(|c| c.id.to_owned())
        .chain(WARNINGS.iter().map(|w| w.to_string()))
        .collect();
    let missing: Vec<_> = catalogue.difference(&documented).collect();
    assert!(missing.is_empty(), "not in docs/causes.md: {missing:?}");
    let unknown: Vec<_> = documented
        .difference(&catalogue)
        .filter(|id| id.split('.').count() >= 3 || id.starts_with("warn."))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/causes.md names ids the catalogue lacks: {unknown:?}"
    );
}
