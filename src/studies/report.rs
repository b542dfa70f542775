//! Writing results: JSON and Markdown, atomically, never with NaN or null (a non-finite number
//! in a result is an error, not a silent `null`), and the summary statistics of the tables.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::{Result, StudyError};

/// The first `null` in `v` (what `serde_json` writes for NaN or infinity), as a dotted path.
pub fn find_null(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::Null => Some(if path.is_empty() {
            "<root>".into()
        } else {
            path.into()
        }),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| find_null(x, &format!("{path}[{i}]"))),
        Value::Object(o) => o.iter().find_map(|(k, x)| {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            find_null(x, &p)
        }),
        _ => None,
    }
}

/// Serialises `value` as pretty JSON to `path` atomically, refusing a non-finite number.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let v = serde_json::to_value(value).map_err(|e| StudyError::Output {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    if let Some(at) = find_null(&v, "") {
        return Err(StudyError::Output {
            path: path.display().to_string(),
            reason: format!(
                "`{at}` is not a finite number (NaN or infinity): refusing to write it"
            ),
        });
    }
    mask_train::run::write_json(path, &v)?;
    Ok(())
}

/// `value` as a reader of its JSON file sees it: serialised to text and parsed back. serde_json's
/// float parsing may differ from the written value in the last bit, so a study computes its
/// summaries (contrasts, bootstraps) from results as written, and a rerun that reuses finished
/// runs' files gives the same summaries as the run that wrote them.
pub fn as_written<T: Serialize + serde::de::DeserializeOwned>(value: T) -> Result<T> {
    let err = |e: serde_json::Error| StudyError::Output {
        path: "<result>".into(),
        reason: e.to_string(),
    };
    serde_json::from_str(&serde_json::to_string(&value).map_err(err)?).map_err(err)
}

/// Writes `text` to `path` atomically.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    mask_core::io::write_atomic(path, text.as_bytes()).map_err(|e| StudyError::Output {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// `mean ± std` (or the value alone for one seed), scaled by `k` (100 for percentages).
pub fn fmt_mean_std(v: &[f64], k: f64, digits: usize) -> String {
    let (m, s) = mean_std(v);
    if v.len() > 1 {
        format!("{:.*} ± {:.*}", digits, m * k, digits, s * k)
    } else {
        format!("{:.*}", digits, m * k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert!((m - 2.5).abs() < 1e-12 && (s - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[7.0]), (7.0, 0.0));
        assert_eq!(fmt_mean_std(&[0.5, 0.7], 100.0, 1), "60.0 ± 14.1");
    }

    /// Regression (run-state issue, finding 4): NaN was saved as `null`, and `dynmask plot`
    /// then rejected the `results.json` that `compare` wrote.
    #[test]
    fn nan_is_refused_not_written_as_null() {
        let dir = std::env::temp_dir().join(format!("dynmask-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.json");
        let err = write_json(
            &path,
            &serde_json::json!({"runs": [{"loss": 1.0}, {"loss": f64::NAN}]}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`runs[1].loss` is not a finite number"),
            "{err}"
        );
        assert!(!path.exists());
        write_json(&path, &serde_json::json!({"loss": 1.5})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\n  \"loss\": 1.5\n}"
        );
    }
}
