//! Argument types the subcommands share, each validated when parsed so that
//! no odd value reaches the library: durations in seconds (finite, in
//! range, never NaN), secrets from a flag, the environment or a file, JSON
//! objects. An invalid value is a clap error that names the flag, what was
//! given and what is allowed, before anything starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest duration any flag takes: a year is more than any grace,
/// timeout or wait needs, and far from `Duration`'s limits.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// Seconds as a [`Duration`], for flags where 0 is allowed (`--grace 0`:
/// no grace; `--wait 0`: one attempt).
pub(crate) fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds (e.g. 2.5)"))?;
    if !v.is_finite() || !(0.0..=MAX_SECONDS).contains(&v) {
        return Err(format!(
            "`{s}` is out of range: give seconds from 0 to {MAX_SECONDS} (a year)"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Seconds as a [`Duration`], more than zero (`--timeout`: a run needs time).
pub(crate) fn positive_seconds(s: &str) -> Result<Duration, String> {
    let d = seconds(s)?;
    if d.is_zero() {
        return Err(format!(
            "`{s}` is no time at all: give more than 0 seconds (or leave the flag out for no limit)"
        ));
    }
    Ok(d)
}

/// A JSON object (`--vars`): ReasonChip's variables are always an object.
pub(crate) fn json_object(s: &str) -> Result<serde_json::Value, String> {
    let v: serde_json::Value = serde_json::from_str(s)
        .map_err(|e| format!("not JSON ({e}); give an object, e.g. '{{\"a\": 1}}'"))?;
    if !v.is_object() {
        return Err(format!(
            "`{s}` is JSON but not an object; give an object, e.g. '{{\"a\": 1}}'"
        ));
    }
    Ok(v)
}

/// A label, `key=value` (`--label gpu=1`): a non-empty key without `=`.
pub(crate) fn label(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((k, _)) if !k.trim().is_empty() => Ok(s.to_owned()),
        _ => Err(format!(
            "`{s}` is not a label: write key=value, e.g. host=build-3"
        )),
    }
}

/// A shared-secret token as the user gave it: on the command line (visible
/// to every local user in the process list, so also from the environment)
/// or in a file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Secret {
    pub(crate) value: Option<String>,
    pub(crate) file: Option<PathBuf>,
}

impl Secret {
    /// The token, if any: the file's first line (surrounding whitespace
    /// trimmed) or the value. `what` names it in errors (`--worker-token`).
    pub(crate) fn resolve(&self, what: &str) -> Result<Option<String>, String> {
        let token = match (&self.value, &self.file) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "give {what} or {what}-file, not both (the environment counts as {what})"
                ))
            }
            (Some(v), None) => v.trim().to_owned(),
            (None, Some(path)) => read_token(path, what)?,
            (None, None) => return Ok(None),
        };
        if token.is_empty() {
            return Err(format!(
                "{what} is empty: give a non-empty token, or leave it out for no check"
            ));
        }
        Ok(Some(token))
    }
}

fn read_token(path: &Path, what: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{what}-file {}: {e}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_take_finite_values_in_range() {
        assert_eq!(seconds("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(seconds("0"), Ok(Duration::ZERO));
        for bad in ["inf", "-inf", "nan", "NaN", "-1", "1e30", "x", ""] {
            let e = seconds(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
        assert!(positive_seconds("0").is_err());
        assert_eq!(positive_seconds("0.5"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn labels_are_key_value() {
        assert_eq!(label("gpu=1"), Ok("gpu=1".to_owned()));
        assert_eq!(label("host="), Ok("host=".to_owned()));
        for bad in ["gpu", "=1", ""] {
            assert!(label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vars_must_be_an_object() {
        assert!(json_object(r#"{"a": 1}"#).is_ok());
        for bad in ["[1]", "3", "\"x\"", "null", "{"] {
            assert!(json_object(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_secret_comes_from_one_place_and_is_never_empty() {
        let none = Secret::default();
        assert_eq!(none.resolve("--token"), Ok(None));
        let value = Secret {
            value: Some(" s3cret\n".into()),
            file: None,
        };
        assert_eq!(value.resolve("--token"), Ok(Some("s3cret".into())));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\nsecond line ignored\n").unwrap();
        let file = Secret {
            value: None,
            file: Some(path.clone()),
        };
        assert_eq!(file.resolve("--token"), Ok(Some("from-file".into())));
        let both = Secret {
            value: Some("a".into()),
            file: Some(path),
        };
        assert!(both.resolve("--token").unwrap_err().contains("not both"));
        let empty = Secret {
            value: Some("  ".into()),
            file: None,
        };
        assert!(empty.resolve("--token").unwrap_err().contains("empty"));
        let missing = Secret {
            value: None,
            file: Some(dir.path().join("nope")),
        };
        assert!(missing.resolve("--token").unwrap_err().contains("nope"));
    }
}
