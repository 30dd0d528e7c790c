//! The publish folder's two small files, reader and writer side by side:
//!
//! `current.json`, the pointer the widget reads (switched last, in one rename):
//!
//! ```json
//! {
//!   "format": "vitrine-published",
//!   "format_version": 1,
//!   "version": 7,
//!   "manifest": "bundle/manifest.0123456789abcdef.json",
//!   "published_at": "2025-11-27T03:12:09Z"
//! }
//! ```
//!
//! `history.json`, the kept versions, oldest first:
//!
//! ```json
//! {
//!   "format": "vitrine-publish-history",
//!   "format_version": 1,
//!   "versions": [
//!     {"version": 7, "manifest": "bundle/manifest.0123456789abcdef.json", "published_at": "…", "details": {…}}
//!   ]
//! }
//! ```
//!
//! A reader refuses another format by name and a newer `format_version` with
//! a request to update vitrine; fields it does not know are ignored, so a
//! version may add fields without a new `format_version`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The pointer's format name and the newest version this code reads and writes.
pub const POINTER_FORMAT: &str = "vitrine-published";
/// The history's format name.
pub const HISTORY_FORMAT: &str = "vitrine-publish-history";
pub const FORMAT_VERSION: u32 = 1;

/// What a reader found wrong in `current.json` or `history.json`.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not valid JSON of this file's format: {0}")]
    Json(serde_json::Error),
    #[error("its format is {found:?}, not {expected:?}: this is not a vitrine publish folder's file")]
    WrongFormat { found: String, expected: &'static str },
    #[error("it is {format} format version {found}; this vitrine reads up to {supported}: update vitrine")]
    NewerVersion { format: &'static str, found: u32, supported: u32 },
    #[error("it claims format version 0, which no vitrine writes: the file is damaged")]
    UnknownVersion,
    #[error("field `{field}` is {found}: {expected}")]
    BadField { field: String, found: String, expected: &'static str },
}

/// `current.json`: which version the widget loads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// [`POINTER_FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    pub version: u64,
    /// The version's manifest, relative to the publish folder: `bundle/manifest.<sha256 prefix>.json`.
    pub manifest: String,
    /// When the version was published, RFC 3339 in UTC.
    pub published_at: String,
}

/// One kept version in `history.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u64,
    /// As [`Pointer::manifest`].
    pub manifest: String,
    pub published_at: String,
    /// What the publisher said about the version (training run, metrics, …); opaque here.
    #[serde(default)]
    pub details: serde_json::Value,
}

/// `history.json`: the kept versions, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub versions: Vec<VersionRecord>,
}

/// The two fields read first, so that another format or a newer version is
/// reported as such even when the rest of the file looks different.
#[derive(Deserialize)]
struct FormatProbe {
    format: String,
    format_version: u32,
}

fn probe(bytes: &[u8], expected: &'static str) -> Result<(), FormatError> {
    let probe: FormatProbe = serde_json::from_slice(bytes).map_err(FormatError::Json)?;
    if probe.format != expected {
        return Err(FormatError::WrongFormat { found: probe.format, expected });
    }
    match probe.format_version {
        0 => Err(FormatError::UnknownVersion),
        v if v > FORMAT_VERSION => Err(FormatError::NewerVersion { format: expected, found: v, supported: FORMAT_VERSION }),
        _ => Ok(()),
    }
}

/// The path of a version's manifest in the publish folder: it must name a
/// content-addressed manifest in `bundle/`, which also keeps readers inside the folder.
fn check_manifest_field(field: String, manifest: &str) -> Result<(), FormatError> {
    let hash = manifest.strip_prefix("bundle/manifest.").and_then(|rest| rest.strip_suffix(".json"));
    match hash {
        Some(hash) if hash.len() == 16 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => Ok(()),
        _ => Err(FormatError::BadField {
            field,
            found: format!("{manifest:?}"),
            expected: "it must be \"bundle/manifest.<16 lowercase hex digits>.json\"",
        }),
    }
}

fn check_version_field(field: String, version: u64) -> Result<(), FormatError> {
    if version == 0 {
        return Err(FormatError::BadField { field, found: "0".into(), expected: "versions start at 1" });
    }
    Ok(())
}

impl Pointer {
    pub fn new(version: u64, manifest: String, published_at: String) -> Self {
        Pointer { format: POINTER_FORMAT.to_string(), format_version: FORMAT_VERSION, version, manifest, published_at }
    }

    /// Reads and checks `current.json`.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        probe(bytes, POINTER_FORMAT)?;
        let pointer: Pointer = serde_json::from_slice(bytes).map_err(FormatError::Json)?;
        check_version_field("version".into(), pointer.version)?;
        check_manifest_field("manifest".into(), &pointer.manifest)?;
        Ok(pointer)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a pointer serialises to memory");
        bytes.push(b'\n');
        bytes
    }
}

/// `history.json` as written: the format fields, then the history's own.
#[derive(Serialize)]
struct HistoryFile<'a> {
    format: &'static str,
    format_version: u32,
    #[serde(flatten)]
    history: &'a History,
}

impl History {
    /// Reads and checks `history.json`: versions rise strictly, every manifest path is well-formed.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        probe(bytes, HISTORY_FORMAT)?;
        // The format fields are not History's and are ignored here.
        let history: History = serde_json::from_slice(bytes).map_err(FormatError::Json)?;
        for (i, record) in history.versions.iter().enumerate() {
            check_version_field(format!("versions[{i}].version"), record.version)?;
            check_manifest_field(format!("versions[{i}].manifest"), &record.manifest)?;
            if i > 0 && record.version <= history.versions[i - 1].version {
                return Err(FormatError::BadField {
                    field: format!("versions[{i}].version"),
                    found: record.version.to_string(),
                    expected: "versions must rise, oldest first",
                });
            }
        }
        Ok(history)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let file = HistoryFile { format: HISTORY_FORMAT, format_version: FORMAT_VERSION, history: self };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("a history serialises to memory");
        bytes.push(b'\n');
        bytes
    }

    pub fn get(&self, version: u64) -> Option<&VersionRecord> {
        self.versions.iter().find(|r| r.version == version)
    }

    /// The kept version numbers, oldest first.
    pub fn version_numbers(&self) -> Vec<u64> {
        self.versions.iter().map(|r| r.version).collect()
    }
}

/// Now, as RFC 3339 in UTC with whole seconds (`2025-11-27T03:12:09Z`).
pub fn now_rfc3339() -> String {
    rfc3339_utc(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

fn rfc3339_utc(unix_seconds: u64) -> String {
    let (days, rest) = (unix_seconds / 86_400, unix_seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`): no date crate for one timestamp.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::rfc3339_utc;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_utc(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
