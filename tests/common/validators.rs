//! The standards' official validators, run on what real nodes export:
//! the OASIS `stix2-validator` and `stix2` library for STIX 2.1 bundles,
//! the `xarf` package (the official X-ARF v4 schemas) for notices.
//! `.ci/run` installs them into a Python virtual environment (`.ci/venv`)
//! and names it in `ALERTRELAY_VALIDATORS`; `tests/validators/check.py`
//! runs them on a batch of documents.
//!
//! With `ALERTRELAY_VALIDATORS` set, a validator that cannot run fails the
//! test. Without it, `.ci/venv` is used when it is there; when it is not,
//! the test prints one `SKIPPED <test>: ...` line and skips the check
//! (as `pg` does for PostgreSQL).

use std::path::PathBuf;

/// What the validators said about one document.
#[derive(Debug)]
pub struct Verdict {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Verdict {
    /// No error and no warning.
    pub fn clean(&self) -> bool {
        self.errors.is_empty() && self.warnings.is_empty()
    }
}

/// The virtual environment's Python, and whether it is required.
fn python() -> (PathBuf, bool) {
    match std::env::var_os("ALERTRELAY_VALIDATORS") {
        Some(dir) if !dir.is_empty() => (PathBuf::from(dir).join("bin/python"), true),
        _ => (
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/python"),
            false,
        ),
    }
}

/// Runs the validators of each `(kind, doc)` (`stix` or `xarf`), all in
/// one run (they take seconds to load); None when they are not installed
/// and not required (the test then skips the checks).
pub async fn validate_all(test: &str, docs: &[(&str, &serde_json::Value)]) -> Option<Vec<Verdict>> {
    use std::io::Write;
    use tokio::io::AsyncWriteExt;
    let (python, required) = python();
    if !python.exists() {
        assert!(
            !required,
            "{test}: ALERTRELAY_VALIDATORS is set, but {} does not exist",
            python.display()
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: the official validators are not installed (.ci/run installs them into .ci/venv)"
        );
        return None;
    }
    let batch: Vec<serde_json::Value> = docs
        .iter()
        .map(|(kind, doc)| serde_json::json!({"kind": kind, "doc": doc}))
        .collect();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/validators/check.py");
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg("batch")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{test}: cannot run {}: {e}", python.display()));
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(serde_json::Value::from(batch).to_string().as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{test}: the validators did not run ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<serde_json::Value> = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{test}: the validators printed {stdout:?}: {e}"));
    assert_eq!(answers.len(), docs.len(), "{test}: {stdout}");
    let list = |v: &serde_json::Value, k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(
        answers
            .iter()
            .map(|v| Verdict {
                errors: list(v, "errors"),
                warnings: list(v, "warnings"),
            })
            .collect(),
    )
}
