//! The three rings of `src/`, as data, and the test that holds every import
//! to them. Files are read with a Rust parser (`syn`): every `use`, every
//! path in code (types, expressions, patterns) and every path inside a macro
//! call is resolved to the top module or the crate it names, and an edge
//! across a forbidden ring boundary fails the test with its file and path.
//! Test code (`#[cfg(test)]`) is not held to the rings.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// Domain: no I/O, no driver. Imports only other domain modules.
pub const DOMAIN: [&str; 9] = [
    "contract", "mask", "record", "outcome", "privacy", "keyring", "error", "backoff", "seed",
];

/// Adapters: one outside system each, with the crates that speak to it.
/// An adapter may use `aws` (credentials and SigV4 are shared by every AWS
/// service), and the domain.
pub const ADAPTERS: [(&str, &[&str]); 4] = [
    (
        "aws",
        &[
            "aws_config",
            "aws_credential_types",
            "aws_sdk_kms",
            "aws_sdk_secretsmanager",
            "aws_sigv4",
            "aws_smithy_runtime_api",
            "aws_smithy_types",
            "lambda_runtime",
            "aws_lambda_events",
            "reqwest",
        ],
    ),
    ("sqs", &["reqwest", "roxmltree", "aws_lambda_events"]),
    (
        "postgres",
        &[
            "tokio_postgres",
            "tokio_postgres_rustls",
            "rustls",
            "rustls_native_certs",
            "x509_cert",
            "aws_lc_rs",
        ],
    ),
    ("ops", &["hyper", "hyper_util", "http_body_util"]),
];

/// Application: wires the adapters and the domain; names no driver crate,
/// and takes the Postgres driver's trait (`GenericClient`), never its
/// handles (`Client`, `Transaction`), in its signatures.
pub const APPLICATION: [&str; 8] = [
    "pipeline",
    "commands",
    "config",
    "cli",
    "metrics",
    "report",
    "telemetry",
    "main",
];

/// The one exception, and why: `error` prints every error of every layer
/// and downcasts to the Postgres driver's `DbError` to drop a server's
/// DETAIL (it quotes row data, so PII); it cannot import `postgres`, which
/// imports it.
pub const EXCEPTIONS: [(&str, &str); 1] = [("src/error.rs", "tokio_postgres")];

/// Which ring a top module is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ring {
    Domain,
    Adapter,
    Application,
}

fn ring_of(module: &str) -> Option<Ring> {
    if DOMAIN.contains(&module) {
        Some(Ring::Domain)
    } else if ADAPTERS.iter().any(|(name, _)| *name == module) {
        Some(Ring::Adapter)
    } else if APPLICATION.contains(&module) {
        Some(Ring::Application)
    } else {
        None
    }
}

/// The adapters whose outside system a crate speaks to (an HTTP client
/// may serve two).
fn crate_owners(name: &str) -> Vec<&'static str> {
    ADAPTERS
        .iter()
        .filter(|(_, crates)| crates.contains(&name))
        .map(|(adapter, _)| *adapter)
        .collect()
}

/// What one path names: a top module of this crate, or another crate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Module(String),
    Crate(String),
}

/// The paths a file names, by what they resolve to, with the path as
/// written (for the message).
struct Collector<'a> {
    /// The file's module path below the crate (`["pipeline", "recorder"]`).
    module: &'a [String],
    found: BTreeSet<(Target, String)>,
    /// Application only: driver handles its signatures take.
    handles: BTreeSet<String>,
    in_signature: bool,
}

impl Collector<'_> {
    fn resolve(&self, segments: &[String]) -> Option<Target> {
        let first = segments.first()?;
        match first.as_str() {
            "crate" | "veil" => segments.get(1).map(|m| Target::Module(m.clone())),
            "self" => self.module.first().map(|m| Target::Module(m.clone())),
            "super" => {
                let ups = segments.iter().take_while(|s| *s == "super").count();
                let base = self.module.len().checked_sub(ups)?;
                match base {
                    // `super` of a top module: the crate root, then the next name.
                    0 => segments.get(ups).map(|m| Target::Module(m.clone())),
                    _ => Some(Target::Module(self.module[0].clone())),
                }
            }
            name if !crate_owners(name).is_empty() => Some(Target::Crate(name.to_string())),
            _ => None,
        }
    }

    fn record(&mut self, segments: Vec<String>) {
        if let Some(target) = self.resolve(&segments) {
            let written = segments.join("::");
            if self.in_signature && is_driver_handle(&target, &segments) {
                self.handles.insert(written.clone());
            }
            self.found.insert((target, written));
        }
    }

    fn tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut index = 0;
        while index < trees.len() {
            match &trees[index] {
                TokenTree::Group(group) => self.tokens(group.stream()),
                TokenTree::Ident(ident) => {
                    let mut segments = vec![ident.to_string()];
                    let mut next = index + 1;
                    // `a::b::c`: an ident, then `:` `:` and an ident, repeated
                    while let (
                        Some(TokenTree::Punct(a)),
                        Some(TokenTree::Punct(b)),
                        Some(TokenTree::Ident(i)),
                    ) = (trees.get(next), trees.get(next + 1), trees.get(next + 2))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        segments.push(i.to_string());
                        next += 3;
                    }
                    if segments.len() > 1 {
                        self.record(segments);
                        index = next;
                        continue;
                    }
                }
                _ => {}
            }
            index += 1;
        }
    }
}

/// `postgres::Client` / `Transaction` (the driver's handles the adapter
/// re-exports) or anything of `tokio_postgres`.
fn is_driver_handle(target: &Target, segments: &[String]) -> bool {
    match target {
        Target::Crate(name) => name == "tokio_postgres",
        Target::Module(module) => {
            module == "postgres"
                && segments
                    .last()
                    .is_some_and(|last| last == "Client" || last == "Transaction")
        }
    }
}

fn is_test_only(attributes: &[syn::Attribute]) -> bool {
    attributes.iter().any(|attribute| {
        attribute.path().is_ident("cfg")
            && attribute
                .meta
                .require_list()
                .is_ok_and(|list| list.tokens.to_string().contains("test"))
    })
}

fn use_paths(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree {
        syn::UseTree::Path(path) => {
            prefix.push(path.ident.to_string());
            use_paths(&path.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(name) => {
            let mut full = prefix.clone();
            full.push(name.ident.to_string());
            out.push(full);
        }
        syn::UseTree::Rename(rename) => {
            let mut full = prefix.clone();
            full.push(rename.ident.to_string());
            out.push(full);
        }
        syn::UseTree::Glob(_) => {
            let mut full = prefix.clone();
            full.push("*".into());
            out.push(full);
        }
        syn::UseTree::Group(group) => {
            for item in &group.items {
                use_paths(item, prefix, out);
            }
        }
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attributes = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Struct(s) => &s.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !is_test_only(attributes) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let mut paths = Vec::new();
        use_paths(&item.tree, &mut Vec::new(), &mut paths);
        for path in paths {
            self.record(path);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments.len() > 1 {
            self.record(segments);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        self.tokens(mac.tokens.clone());
    }

    fn visit_signature(&mut self, signature: &'ast syn::Signature) {
        let before = self.in_signature;
        self.in_signature = true;
        for input in &signature.inputs {
            self.visit_fn_arg(input);
        }
        self.in_signature = before;
        self.visit_return_type(&signature.output);
        self.visit_generics(&signature.generics);
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        if !is_test_only(&item.attrs) {
            syn::visit::visit_impl_item_fn(self, item);
        }
    }
}

/// Every edge of one file's source that crosses a ring boundary, as a
/// message; `module` is its module path below the crate.
pub fn violations(file: &str, module: &[String], source: &str) -> Result<Vec<String>, syn::Error> {
    let parsed = syn::parse_file(source)?;
    let mut collector = Collector {
        module,
        found: BTreeSet::new(),
        handles: BTreeSet::new(),
        in_signature: false,
    };
    collector.visit_file(&parsed);
    let Some(top) = module.first() else {
        return Ok(Vec::new());
    };
    let Some(ring) = ring_of(top) else {
        return Ok(vec![format!(
            "{file}: module {top} is in no ring; add it to DOMAIN, ADAPTERS or APPLICATION in src/layout.rs"
        )]);
    };
    let mut problems = Vec::new();
    for (target, written) in &collector.found {
        let problem = match (ring, target) {
            (_, Target::Crate(name)) if EXCEPTIONS.contains(&(file, name.as_str())) => None,
            (Ring::Domain, Target::Module(to)) => match ring_of(to) {
                Some(Ring::Domain) | None => None,
                Some(other) => Some(format!("the domain imports the {other:?} module {to}")),
            },
            (Ring::Domain | Ring::Application, Target::Crate(name)) => Some(format!(
                "{ring:?} code uses the driver crate {name} (it belongs to the {} adapter)",
                crate_owners(name).join(" or ")
            )),
            (Ring::Adapter, Target::Module(to)) => match ring_of(to) {
                Some(Ring::Application) => {
                    Some(format!("an adapter imports the application's {to}"))
                }
                Some(Ring::Adapter) if to != top && to != "aws" => {
                    Some(format!("adapter {top} imports adapter {to}"))
                }
                _ => None,
            },
            (Ring::Adapter, Target::Crate(name)) => {
                let owners = crate_owners(name);
                (!owners.contains(&top.as_str())).then(|| {
                    format!(
                        "adapter {top} uses {name}, the {} adapter's crate",
                        owners.join(" or ")
                    )
                })
            }
            (Ring::Application, Target::Module(_)) => None,
        };
        if let Some(problem) = problem {
            problems.push(format!("{file}: {problem} ({written})"));
        }
    }
    if ring == Ring::Application {
        for handle in &collector.handles {
            problems.push(format!(
                "{file}: an application signature takes the driver handle {handle}; take `impl GenericClient`"
            ));
        }
    }
    Ok(problems)
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file below `src/` (`pipeline/mod.rs` is `pipeline`).
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts
        .last()
        .is_some_and(|last| last == "mod" || last == "lib")
    {
        parts.pop();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(module: &str, source: &str) -> Vec<String> {
        let module: Vec<String> = module.split("::").map(String::from).collect();
        violations("test.rs", &module, source).unwrap()
    }

    #[test]
    fn every_import_in_src_stays_in_its_ring() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root, &mut files);
        files.sort();
        let mut problems = Vec::new();
        for path in &files {
            let relative = path.strip_prefix(&root).unwrap();
            let file = format!("src/{}", relative.to_string_lossy().replace('\\', "/"));
            let source = std::fs::read_to_string(path).unwrap();
            let module = module_of(relative);
            if module == ["layout"] {
                continue; // this test
            }
            problems.extend(violations(&file, &module, &source).unwrap());
        }
        assert!(files.len() > 50, "read {} files", files.len());
        assert_eq!(problems, Vec::<String>::new(), "\n{}", problems.join("\n"));
    }

    #[test]
    fn a_forbidden_import_fails_wherever_it_is_written() {
        assert_eq!(
            check("keyring::source", "use crate::aws::kms;"),
            ["test.rs: the domain imports the Adapter module aws (crate::aws::kms)"]
        );
        assert_eq!(
            check("mask", "fn f() { let x = crate::postgres::Client::x(); }").len(),
            1
        );
        assert_eq!(
            check(
                "privacy",
                "fn f() { tracing::info!(\"{}\", crate::sqs::X); }"
            )
            .len(),
            1
        );
        assert_eq!(check("record", "use tokio_postgres::Client;").len(), 1);
        assert_eq!(
            check("postgres::batch", "use crate::pipeline::Item;").len(),
            1
        );
        assert_eq!(
            check("postgres::login", "use aws_config::SdkConfig;").len(),
            1
        );
        assert_eq!(
            check("sqs::client", "use super::super::postgres::X;").len(),
            1
        );
        assert_eq!(
            check("commands::lambda", "fn f() { reqwest::get(1); }").len(),
            1
        );
        assert_eq!(
            check("pipeline::write", "fn f(c: &mut crate::postgres::Client) {}"),
            ["test.rs: an application signature takes the driver handle crate::postgres::Client; take `impl GenericClient`"]
        );
        assert_eq!(
            check("nowhere", "fn f() {}"),
            ["test.rs: module nowhere is in no ring; add it to DOMAIN, ADAPTERS or APPLICATION in src/layout.rs"]
        );
    }

    #[test]
    fn allowed_edges_pass() {
        for (module, source) in [
            ("pipeline::write", "use crate::postgres::WriteError; fn f(c: &mut impl crate::postgres::GenericClient) {}"),
            ("postgres::login", "use crate::aws::sigv4;"),
            ("contract::plan", "use super::format::X; use crate::keyring::MAX;"),
            ("mask", "#[cfg(test)] mod tests { use crate::postgres::X; }"),
            ("sqs::client", "use reqwest::Client;"),
        ] {
            assert_eq!(check(module, source), Vec::<String>::new(), "{source}");
        }
    }
}
