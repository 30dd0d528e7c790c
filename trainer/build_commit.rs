// Shared by the trainer's and the CLI's build scripts (`include!`d).

/// The commit the package is built from, as `VITRINE_COMMIT` (`unknown`
/// outside git), so that results and audit records name the code that made
/// them. Reruns when HEAD or a branch moves; git resolves where those files
/// are, which in a linked worktree is not `../.git`.
fn record_commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    for name in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", name]).filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=VITRINE_COMMIT={commit}");
}
