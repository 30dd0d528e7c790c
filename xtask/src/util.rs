//! Progress lines, running commands, and reading their results.

use std::ffi::OsStr;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// Numbered progress lines for the steps of one task:
/// `[setup 3/9] python packages … done in 4.2 s`.
pub struct Steps {
    label: &'static str,
    total: usize,
    n: usize,
}

impl Steps {
    pub fn new(label: &'static str, total: usize) -> Self {
        Steps { label, total, n: 0 }
    }

    fn tag(&self) -> String {
        format!("[{} {}/{}]", self.label, self.n, self.total)
    }

    /// Runs a step that is always done; `run` returns a note for the end line.
    pub fn step(&mut self, title: &str, run: impl FnOnce() -> Result<String>) -> Result<()> {
        self.cached_step(title, || Ok(None), run)
    }

    /// A step that this run does not need, said with the reason.
    pub fn skipped_step(&mut self, title: &str, why: &str) {
        self.n += 1;
        println!("{} {title} … skipped: {why}", self.tag());
        flush();
    }

    /// Runs a step unless `check` says it is already done (`Some(note)`).
    pub fn cached_step(
        &mut self,
        title: &str,
        check: impl FnOnce() -> Result<Option<String>>,
        run: impl FnOnce() -> Result<String>,
    ) -> Result<()> {
        self.n += 1;
        let tag = self.tag();
        if let Some(note) = check().with_context(|| format!("{tag} {title}: check failed"))? {
            println!("{tag} {title} … done (cached){}", with_sep(&note));
            flush();
            return Ok(());
        }
        println!("{tag} {title} …");
        flush();
        let start = Instant::now();
        let note = run().with_context(|| format!("{tag} {title} failed"))?;
        println!("{tag} {title} … done in {:.1} s{}", start.elapsed().as_secs_f64(), with_sep(&note));
        flush();
        Ok(())
    }
}

fn with_sep(note: &str) -> String {
    if note.is_empty() {
        String::new()
    } else {
        format!(": {note}")
    }
}

fn flush() {
    let _ = std::io::stdout().flush();
}

/// The cargo that runs this task (so that nested builds use the same toolchain).
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

pub fn cmd(program: impl AsRef<OsStr>) -> Command {
    Command::new(program)
}

pub fn describe(command: &Command) -> String {
    let mut parts = vec![command.get_program().to_string_lossy().into_owned()];
    parts.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs a command with its output shown; fails unless it exits with status 0.
pub fn run(command: &mut Command) -> Result<()> {
    let line = describe(command);
    println!("  $ {line}");
    flush();
    let status = command.status().with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs a command quietly and returns its standard output; `None` when it cannot
/// start or fails (used by the checks).
pub fn output(command: &mut Command) -> Option<String> {
    let out = command.stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs a command quietly and returns its standard output, or an error with its
/// standard error.
pub fn output_checked(command: &mut Command) -> Result<String> {
    let line = describe(command);
    let out = command.output().with_context(|| format!("cannot start `{line}`"))?;
    if !out.status.success() {
        bail!("`{line}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The totals of the `test result:` lines of a `cargo test` run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TestSummary {
    pub suites: usize,
    pub passed: usize,
    pub failed: usize,
    pub ignored: usize,
}

impl TestSummary {
    /// Adds one `test result: ok. 3 passed; 0 failed; 1 ignored; …` line; other lines are ignored.
    pub fn add_line(&mut self, line: &str) -> bool {
        let Some(rest) = line.trim().strip_prefix("test result: ") else { return false };
        self.suites += 1;
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            // "ok. 3 passed" or "3 failed"
            if let [.., count, what] = words.as_slice() {
                let Ok(count) = count.parse::<usize>() else { continue };
                match *what {
                    "passed" => self.passed += count,
                    "failed" => self.failed += count,
                    "ignored" => self.ignored += count,
                    _ => {}
                }
            }
        }
        true
    }
}

impl fmt::Display for TestSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} test suites, {} passed, {} failed, {} ignored", self.suites, self.passed, self.failed, self.ignored)
    }
}

/// Runs `cargo test …`, showing its output, and sums its `test result:` lines.
pub fn cargo_test(command: &mut Command) -> Result<TestSummary> {
    let line = describe(command);
    println!("  $ {line}");
    flush();
    let mut child = command.stdout(Stdio::piped()).spawn().with_context(|| format!("cannot start `{line}`"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut summary = TestSummary::default();
    let mut result_lines = Vec::new();
    for text in BufReader::new(stdout).lines() {
        let text = text.context("reading cargo test output")?;
        println!("{text}");
        if summary.add_line(&text) {
            result_lines.push(text);
        }
    }
    let status = child.wait()?;
    println!("  cargo test summary ({} suites):", summary.suites);
    for r in &result_lines {
        println!("    {}", r.trim());
    }
    flush();
    if !status.success() {
        bail!("`{line}` failed ({status}): {summary}");
    }
    if summary.failed > 0 {
        bail!("{summary}");
    }
    Ok(summary)
}

pub fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

pub fn size_note(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) => format!("{} ({})", path.display(), bytes(m.len())),
        Err(_) => format!("{} (missing)", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_test_result_lines() {
        let mut s = TestSummary::default();
        assert!(s.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"));
        assert!(s.add_line("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out"));
        assert!(!s.add_line("running 5 tests"));
        assert_eq!(s, TestSummary { suites: 2, passed: 15, failed: 2, ignored: 1 });
        assert_eq!(s.to_string(), "2 test suites, 15 passed, 2 failed, 1 ignored");
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }
}
