//! The import rules written at the top of `src/lib.rs`, kept true: every `crate::<module>` path
//! in a module's source must name a module of its own layer or a layer above it, and the
//! vocabulary imports nothing of the agent. Reads the sources as text; needs nothing else.

use std::collections::BTreeMap;
use std::path::Path;

/// The layer of each top-level module (lib.rs's numbering).
fn layers() -> BTreeMap<&'static str, u8> {
    let mut l = BTreeMap::new();
    for m in ["vocab", "error", "secret", "config", "wait", "failpoint"] {
        l.insert(m, 1);
    }
    l.insert("effects", 2);
    for m in ["token", "election", "recovery", "render"] {
        l.insert(m, 3);
    }
    for m in ["state", "discover"] {
        l.insert(m, 4);
    }
    for m in ["api_record", "membership", "kubeconfigs", "nodes", "datastore", "live"] {
        l.insert(m, 5);
    }
    for m in ["join", "leave", "converge", "guard", "heal"] {
        l.insert(m, 6);
    }
    for m in ["run", "status", "cli"] {
        l.insert(m, 7);
    }
    l
}

/// Every `.rs` file under `dir`, with the top-level module it belongs to.
fn sources(dir: &Path, top: Option<&str>, out: &mut Vec<(String, String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            sources(&path, Some(top.unwrap_or(&name)), out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let module = top.map(str::to_string).unwrap_or(name);
            out.push((module, path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// The top-level modules a source names through `crate::` (in `use` lines and in paths).
fn crate_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !name.is_empty() {
            found.push(name);
        }
    }
    found
}

#[test]
fn every_module_uses_only_its_layer_and_those_above() {
    let layers = layers();
    let mut files = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), None, &mut files);
    let mut broken = Vec::new();
    for (module, path, text) in &files {
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&own) = layers.get(module.as_str()) else {
            broken.push(format!("{path}: module {module} has no layer in lib.rs's rules (add it there and here)"));
            continue;
        };
        for used in crate_paths(text) {
            match layers.get(used.as_str()) {
                Some(&l) if l > own => broken.push(format!("{path}: {module} (layer {own}) uses crate::{used} (layer {l})")),
                Some(&6) if own == 6 && used != *module => broken.push(format!("{path}: verb {module} uses verb crate::{used}")),
                _ => {}
            }
        }
        if module == "vocab" && !crate_paths(text).is_empty() {
            broken.push(format!("{path}: vocab imports {:?}; it imports nothing of the agent", crate_paths(text)));
        }
    }
    assert!(broken.is_empty(), "import rules of src/lib.rs broken:\n{}", broken.join("\n"));
}

#[test]
fn the_rules_catch_a_break() {
    assert_eq!(crate_paths("use crate::join::join;\nlet x = crate::state::State::load(fs);"), vec!["join", "state"]);
}
