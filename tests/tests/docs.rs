//! The tables of keys in the README and in the attribute's documentation are the key table's.

const BEGIN: &str = "<!-- keys: generated from the key table (uninterruptible-grammar); tests/tests/docs.rs checks it -->";
const END: &str = "<!-- /keys -->";

/// The lines between the markers, with `prefix` taken off each.
fn block(path: &str, prefix: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.strip_prefix(prefix).unwrap_or(l))
        .collect();
    let begin = lines
        .iter()
        .position(|l| *l == BEGIN)
        .expect("the begin marker");
    let end = lines
        .iter()
        .position(|l| *l == END)
        .expect("the end marker");
    lines[begin + 1..end]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect()
}

fn check(file: &str, prefix: &str) {
    let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
    let expected = uninterruptible_grammar::markdown_table();
    assert!(
        block(&path, prefix) == expected,
        "the table of keys in {file} is not the key table's; it should read:\n{}",
        expected
            .lines()
            .map(|l| format!("{prefix}{l}\n"))
            .collect::<String>()
    );
}

#[test]
fn the_readme_lists_every_key() {
    check("README.md", "");
}

#[test]
fn the_attribute_documents_every_key() {
    check("uninterruptible-macros/src/lib.rs", "/// ");
}

#[test]
fn the_readme_deploy_script_is_the_one_the_tests_run() {
    let root = format!("{}/..", env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let script = std::fs::read_to_string(format!("{root}/examples/deploy.sh")).unwrap();
    let begin = "<!-- deploy: examples/deploy.sh; tests/tests/docs.rs checks it -->\n```sh\n";
    let start = readme.find(begin).expect("the deploy block") + begin.len();
    let end = start
        + readme[start..]
            .find("```\n<!-- /deploy -->")
            .expect("its end");
    assert_eq!(
        &readme[start..end],
        script,
        "README.md's deploy script differs from examples/deploy.sh"
    );
}

/// Every public item has one path, at the crate root, as the README and the crate's
/// documentation say: the runtime's modules are private, and the one public module is the
/// generated code's `__private`, hidden from the documentation.
#[test]
fn every_public_item_has_one_path() {
    let path = format!(
        "{}/../uninterruptible/src/lib.rs",
        env!("CARGO_MANIFEST_DIR")
    );
    let lib = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = lib.lines().map(str::trim).collect();
    let public_modules: Vec<(usize, &str)> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.starts_with("pub mod "))
        .map(|(i, line)| (i, *line))
        .collect();
    assert_eq!(
        public_modules.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
        ["pub mod __private {"],
        "uninterruptible/src/lib.rs: a public module gives its items a second path; keep the module private and re-export what is public at the crate root"
    );
    let (at, _) = public_modules[0];
    assert_eq!(
        lines[at - 1],
        "#[doc(hidden)]",
        "__private must stay hidden"
    );
    for line in lines.iter().filter(|l| l.starts_with("pub use ")) {
        assert!(
            !line.contains(" as "),
            "uninterruptible/src/lib.rs: `{line}` gives an item a second name"
        );
    }
}
