//! Shared by the CCXT cross-check tests: runs a script under `testing/ccxt/` with the
//! project's venv Python and returns the JSON it printed.
//!
//! `scripts/test` sets `KEYGATE_TEST_PYTHON` to the venv's interpreter (with `ccxt`
//! installed). Without it, under `CI=true` the test fails loudly; elsewhere it says so on
//! stderr and passes, so a bare `cargo test` on a laptop without the venv still runs.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Runs `testing/ccxt/<script>` and parses its stdout as a JSON array of vectors.
/// `None` means "no Python with ccxt here and not in CI".
pub fn ccxt_vectors(script: &str) -> Option<Vec<serde_json::Value>> {
    let python = match std::env::var("KEYGATE_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("KEYGATE_TEST_PYTHON is not set under CI=true: run the suite through scripts/test");
            }
            eprintln!("NOT RUN: {script} needs KEYGATE_TEST_PYTHON (a venv with ccxt); scripts/test sets it");
            return None;
        }
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("testing/ccxt").join(script);
    let out = Command::new(&python)
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON array: {e}"));
    Some(v.as_array().expect("a JSON array").clone())
}
