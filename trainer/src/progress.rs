//! Progress bars of long work (indicatif), one style for every stage.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `what`.
pub fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_prefix(what.to_string());
    bar.set_style(ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} eta {eta} {msg}").expect("valid template"));
    bar
}
