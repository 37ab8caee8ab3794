//! Sets `GRANTDOCTOR_GIT_COMMIT` for `src/build_info.rs`: the checkout's commit, else the
//! variable of the same name given to the build (image builds have no `.git`), else `unknown`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=GRANTDOCTOR_GIT_COMMIT");
    let commit = git(&["rev-parse", "--short=12", "HEAD"])
        .or_else(|| {
            std::env::var("GRANTDOCTOR_GIT_COMMIT")
                .ok()
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=GRANTDOCTOR_GIT_COMMIT={commit}");
    for path in watched() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// `HEAD` and the ref it points to (in a linked worktree they live in different directories;
/// a packed ref lives in `packed-refs`). Only existing files: cargo reruns the script on every
/// build for a path that does not exist.
fn watched() -> Vec<PathBuf> {
    let (Some(git_dir), Some(common)) = (
        git(&["rev-parse", "--git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ) else {
        return Vec::new();
    };
    let (git_dir, common) = (PathBuf::from(git_dir), PathBuf::from(common));
    let mut paths = vec![git_dir.join("HEAD")];
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        paths.push(git_dir.join(&reference));
        paths.push(common.join(&reference));
    }
    paths.push(common.join("packed-refs"));
    paths.retain(|p: &PathBuf| Path::exists(p));
    paths.dedup();
    paths
}
