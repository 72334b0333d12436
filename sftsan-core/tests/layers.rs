//! The layers of sftsan-core (ARCHITECTURE.md), checked: every module imports only what
//! the table below allows, and the table has no circle, so neither has the code. A new
//! import that crosses a layer upwards, or a backend family that reaches into another,
//! fails this test with the file and the import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each module of sftsan-core may import (besides itself and std or crates). Test
/// code (`tests.rs` files and `#[cfg(test)]` modules) is not checked.
const ALLOWED: &[(&str, &[&str])] = &[
    // Front doors: what the CLI, the C ABI and libvirt call.
    (
        "cluster",
        &[
            "backends::system",
            "engine",
            "error",
            "fsutil",
            "names",
            "plan",
            "resources",
            "spec",
        ],
    ),
    (
        "status",
        &[
            "backends::userspace",
            "error",
            "plan",
            "resources",
            "spec",
            "transport",
        ],
    ),
    ("verify", &["error", "plan", "resources", "transport"]),
    // Nodes joining and leaving a running cluster.
    (
        "membership",
        &[
            "backends::userspace",
            "cluster",
            "engine",
            "error",
            "fsutil",
            "plan",
            "spec",
        ],
    ),
    // A remote cluster's hosts over SSH: the controller's sessions, what hosts report.
    (
        "remote",
        &[
            "backends::kernel",
            "cluster",
            "engine",
            "error",
            "fsutil",
            "names",
            "plan",
            "resources",
            "spec",
            "status",
            "transport",
            "verify",
        ],
    ),
    // Applies a plan through a Backend; knows no backend.
    (
        "engine",
        &[
            "error",
            "fsutil",
            "names",
            "plan",
            "resources",
            "spec",
            "transport",
        ],
    ),
    // Builds the stacks: owns the enum of concrete resources.
    (
        "plan",
        &[
            "backends::kernel",
            "backends::tgt",
            "backends::userspace",
            "error",
            "hash",
            "local",
            "names",
            "resources",
            "spec",
            "topology",
            "transport",
        ],
    ),
    // The real host as a Backend: the one place that composes families.
    (
        "backends::system",
        &["backends::kernel", "backends::shared", "error", "resources"],
    ),
    (
        "backends",
        &[
            "backends::kernel",
            "backends::shared",
            "backends::sim",
            "backends::system",
            "backends::tgt",
            "backends::userspace",
        ],
    ),
    // Families: each imports the floor and `shared`, never another family.
    ("backends::userspace", FAMILY),
    ("backends::kernel", FAMILY),
    ("backends::tgt", FAMILY),
    ("backends::sim", &["error", "resources"]),
    (
        "backends::shared",
        &["error", "fsutil", "process", "resources", "transport"],
    ),
    (
        "local",
        &[
            "error",
            "fsutil",
            "names",
            "process",
            "resources",
            "transport",
        ],
    ),
    // The floor of the data path: traits, Ctx, Observed.
    ("resources", &["error", "transport"]),
    // Vocabulary.
    ("names", &["hash", "spec"]),
    ("topology", &[]),
    ("spec", &["error", "hash", "transport"]),
    // Where commands run, daemons, files, errors.
    ("transport", &["error", "process"]),
    ("process", &["error", "fsutil"]),
    ("fsutil", &["error"]),
    ("hash", &[]),
    ("stdio", &[]),
    ("error", &[]),
];

const FAMILY: &[&str] = &[
    "backends::shared",
    "error",
    "hash",
    "fsutil",
    "process",
    "resources",
    "transport",
];

fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    ALLOWED
        .iter()
        .map(|(unit, deps)| (*unit, deps.iter().copied().collect()))
        .collect()
}

/// The module a path of module names belongs to: `backends::<family>`, or its first name.
fn unit(path: &[&str]) -> String {
    match path {
        [] => "lib".into(),
        ["backends"] => "backends".into(),
        ["backends", family, ..] => format!("backends::{family}"),
        [first, ..] => first.to_string(),
    }
}

/// The module path of a source file: `backends/userspace/cache.rs` -> backends, userspace,
/// cache; `mod.rs` names its directory.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().map(String::as_str) == Some("mod") {
        parts.pop();
    }
    parts
}

/// The file's code without comments and without the items marked `#[cfg(test)]` (a test
/// module, inline or declared).
fn product_code(text: &str) -> String {
    let code: String = text
        .lines()
        .map(|l| l.split_once("//").map_or(l, |(before, _)| before))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        // The item ends at its first `;` or with the block its first `{` opens.
        let end = match (item.find(';'), item.find('{')) {
            (Some(semi), Some(brace)) if semi < brace => semi + 1,
            (_, Some(brace)) => {
                let mut depth = 0;
                let mut end = item.len();
                for (i, c) in item[brace..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = brace + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (Some(semi), None) => semi + 1,
            (None, None) => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// The modules `code` (of the module at `here`) refers to: `crate::a::b` paths, grouped
/// `use crate::{a, b::c}` imports and `super::` paths.
fn references(code: &str, here: &[String]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let names = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|p| {
                p.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .to_string()
            })
            .take_while(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect()
    };
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let path = names(item.trim());
                let refs: Vec<&str> = path.iter().map(String::as_str).collect();
                if !refs.is_empty() {
                    found.insert(unit(&refs));
                }
            }
        } else {
            let path = names(after);
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            if !refs.is_empty() {
                found.insert(unit(&refs));
            }
        }
        rest = after;
    }
    let mut from = 0;
    while let Some(at) = code[from..].find("super::") {
        let start = from + at;
        let mut end = start;
        let mut ups = 0;
        while code[end..].starts_with("super::") {
            ups += 1;
            end += "super::".len();
        }
        if !code[..start].ends_with("::") {
            let mut path: Vec<String> = here[..here.len().saturating_sub(ups)].to_vec();
            path.extend(names(&code[end..]).into_iter().take(1));
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            found.insert(unit(&refs));
        }
        from = end;
    }
    found
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_import_goes_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed = allowed();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut violations = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.iter().next().unwrap().to_string_lossy();
        if first == "bin" || rel == Path::new("lib.rs") || rel.ends_with("tests.rs") {
            continue;
        }
        let here = module_path(rel);
        let refs: Vec<&str> = here.iter().map(String::as_str).collect();
        let me = unit(&refs);
        let Some(ok) = allowed.get(me.as_str()) else {
            violations.push(format!(
                "{}: module {me} is not in the layer table",
                rel.display()
            ));
            continue;
        };
        let code = product_code(&std::fs::read_to_string(&file).unwrap());
        for target in references(&code, &here) {
            if target != me && !ok.contains(target.as_str()) {
                violations.push(format!("{}: {me} imports {target}", rel.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layers (ARCHITECTURE.md):\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_layer_table_has_no_circle() {
    let allowed = allowed();
    // Depth-first search for a back edge.
    fn visit<'a>(
        unit: &'a str,
        allowed: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(at) = path.iter().position(|u| *u == unit) {
            panic!("circle: {} -> {unit}", path[at..].join(" -> "));
        }
        if done.contains(unit) {
            return;
        }
        path.push(unit);
        for dep in allowed.get(unit).into_iter().flatten() {
            visit(dep, allowed, path, done);
        }
        path.pop();
        done.insert(unit);
    }
    let mut done = BTreeSet::new();
    for unit in allowed.keys() {
        visit(unit, &allowed, &mut Vec::new(), &mut done);
    }
    for deps in allowed.values() {
        for dep in deps {
            assert!(
                allowed.contains_key(dep),
                "{dep} is imported but has no row"
            );
        }
    }
}

#[test]
fn the_check_sees_a_violation() {
    let here = vec![
        "backends".to_string(),
        "userspace".to_string(),
        "x".to_string(),
    ];
    let refs = references(
        "use crate::plan::Plan;\nuse crate::{error::Error, backends::kernel::dm};\nuse super::super::tgt::T;",
        &here,
    );
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    assert_eq!(refs, ["backends::kernel", "backends::tgt", "error", "plan"]);
    assert!(!allowed()["backends::userspace"].contains("plan"));
    let code = product_code(
        "use crate::error::E;\n#[cfg(test)]\nmod tests {\n    use crate::plan::P; // {\n}\nfn f(_: &crate::engine::Engine) {}\n",
    );
    let refs = references(&code, &here);
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    assert_eq!(
        refs,
        ["engine", "error"],
        "test modules are skipped, code after them is not"
    );
}
