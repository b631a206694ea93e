//! docs/configuration.md's tables are the code's: every setting of
//! `origin --help` (flag, variable, TOML key, default, range, meaning) and
//! every protocol limit with its default. `UPDATE_DOCS=1` rewrites them.

use origin::config::reference::{limits_table, settings_table, END, LIMITS_BEGIN, SETTINGS_BEGIN};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// `doc` with the part between `begin` and the next END replaced by `table`.
fn with_table(doc: &str, begin: &str, table: &str) -> String {
    let (head, rest) = doc
        .split_once(begin)
        .unwrap_or_else(|| panic!("docs/configuration.md lacks the line {begin}"));
    let (_, tail) = rest.split_once(END).expect("an end marker after the table");
    format!("{head}{begin}\n{table}{END}{tail}")
}

#[test]
fn configuration_reference_matches_the_code() {
    let path = root().join("docs/configuration.md");
    let doc = std::fs::read_to_string(&path).expect("docs/configuration.md");
    let limits_source = std::fs::read_to_string(root().join("shared/src/limits.rs")).unwrap();
    let want = with_table(&doc, SETTINGS_BEGIN, &settings_table());
    let want = with_table(&want, LIMITS_BEGIN, &limits_table(&limits_source));
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    assert!(
        doc == want,
        "docs/configuration.md is not the code's: run UPDATE_DOCS=1 cargo test -p origin --test config_reference"
    );
}

#[test]
fn every_flag_of_the_binary_is_in_the_reference() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_origin"))
        .arg("--help")
        .output()
        .expect("origin --help");
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let mut flags = 0;
    for word in help.split_whitespace() {
        let flag = word.trim_end_matches(',');
        if flag.starts_with("--") && !matches!(flag, "--help" | "--version") {
            flags += 1;
            assert!(
                doc.contains(&format!("`{flag}`")),
                "{flag} is not in docs/configuration.md"
            );
        }
    }
    assert!(flags > 30, "origin --help named {flags} flags");
}
