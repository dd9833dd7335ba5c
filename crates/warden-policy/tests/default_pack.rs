//! Runs the default policy pack's own test files (`policies/default/tests/*.toml`) against the pack,
//! and checks the pack compiles in strict mode: the pack is shipped, so its tests are this crate's.

use std::path::PathBuf;

use warden_policy::{compile, load_dir, run_tests};

fn pack_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/default")
}

#[test]
fn default_pack_passes_its_tests() {
    let source = load_dir(&pack_dir()).expect("the pack reads");
    let compiled = match compile(&source) {
        Ok(c) => c,
        Err(errors) => {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!("the default pack does not compile:\n{}", text.join("\n"));
        }
    };
    assert!(compiled.warnings().is_empty(), "{:?}", compiled.warnings());
    let mut files: Vec<PathBuf> = std::fs::read_dir(pack_dir().join("tests"))
        .expect("tests dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    let mut failures = Vec::new();
    let mut total = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        let report = run_tests(&compiled, &text);
        total += report.cases.len();
        if !report.ok() {
            failures.push(format!("{}:\n{report}", f.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(total >= 30, "only {total} cases");
}
