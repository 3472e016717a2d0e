//! Words that are true: every file path the README and docs/ name exists,
//! and every flag they name is one veil has (or one of the other tools they
//! show, listed below), so the docs cannot keep a path or a flag the code
//! dropped.

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;

/// Flags of the other tools the docs show commands of (cargo, the AWS
/// CLI, kubectl, docker, valgrind, the validators), never veil's.
const OTHER_TOOLS_FLAGS: [&str; 21] = [
    "--arm64",               // cargo lambda build
    "--bench",               // cargo
    "--bin",                 // cargo
    "--capabilities",        // aws cloudformation deploy
    "--inclusive",           // callgrind_annotate
    "--locked",              // cargo
    "--name",                // aws eks describe-cluster
    "--open",                // cargo doc
    "--output",              // aws
    "--parameter-overrides", // aws cloudformation deploy
    "--path",                // cargo install
    "--previous",            // kubectl logs
    "--query",               // aws
    "--release",             // cargo
    "--rm",                  // docker run
    "--secret-id",           // aws secretsmanager
    "--self-test",           // scripts/check-k8s.py
    "--stack-name",          // aws cloudformation
    "--strict",              // kubernetes-validate
    "--template-file",       // aws cloudformation deploy
    "--callgrind-out-file",  // valgrind
];

fn documents() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.strip_prefix(root).unwrap().display().to_string();
            (name, std::fs::read_to_string(path).unwrap())
        })
        .collect()
}

/// Every long flag of veil, its subcommands and theirs.
fn veil_flags() -> BTreeSet<String> {
    fn walk(command: &clap::Command, out: &mut BTreeSet<String>) {
        for argument in command.get_arguments() {
            if let Some(long) = argument.get_long() {
                out.insert(format!("--{long}"));
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut flags = BTreeSet::from(["--help".to_string(), "--version".to_string()]);
    walk(&veil::cli::Cli::command(), &mut flags);
    flags
}

/// The words of `text` that match `pattern` (ASCII: letters, digits and
/// `allowed` after the prefix), each with its line.
fn words<'a>(text: &'a str, prefix: &str, allowed: &str) -> Vec<(usize, &'a str)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().next_back();
            let tail = &rest[at + prefix.len()..];
            let length = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || allowed.contains(c)))
                .unwrap_or(tail.len());
            let word = &rest[at..at + prefix.len() + length];
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || "-/_".contains(c)) {
                found.push((number + 1, word));
            }
            rest = &rest[at + prefix.len() + length..];
        }
    }
    found
}

#[test]
fn every_path_the_docs_name_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    for (name, text) in documents() {
        for top in [
            "src/",
            "scripts/",
            "deploy/",
            "docs/",
            "examples/",
            "tests/",
            "sql/",
            "benches/",
        ] {
            for (line, word) in words(&text, top, "_-./") {
                let path = word.trim_end_matches(['.', ',']);
                // a glob or a placeholder is not a path
                if path.contains("...") || path.ends_with('-') || path == top {
                    continue;
                }
                if !root.join(path).exists() {
                    missing.push(format!("{name}:{line}: {path}"));
                }
            }
        }
    }
    assert_eq!(missing, Vec::<String>::new(), "\n{}", missing.join("\n"));
}

#[test]
fn every_flag_the_docs_name_is_one_veil_has() {
    let flags = veil_flags();
    assert!(flags.contains("--until-empty") && flags.contains("--json-schema"));
    let mut unknown = Vec::new();
    for (name, text) in documents() {
        for (line, flag) in words(&text, "--", "-") {
            let flag = flag.trim_end_matches('-');
            if flag.len() <= 3 || flags.contains(flag) || OTHER_TOOLS_FLAGS.contains(&flag) {
                continue;
            }
            unknown.push(format!("{name}:{line}: {flag}"));
        }
    }
    assert_eq!(unknown, Vec::<String>::new(), "\n{}", unknown.join("\n"));
}
