//! The commands the README and `docs/` show: every `spoa-host` command line
//! in their code blocks parses with the agent's own command-line parser
//! (a renamed flag or subcommand fails here), and the ones that need no
//! running agent (`call`, `check`, `haproxy-config`) run as written, from
//! the workspace root, and succeed.

mod support;

use std::path::{Path, PathBuf};

use clap::Parser;
use spoa_host::settings::cli::{Cli, Command};
use support::workspace_root;

/// The Markdown files a reader is sent to.
fn documents() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("docs/").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files
}

/// A command line a document shows, and what it says the command prints
/// when it shows that (`spoa-host call`'s JSON: `"ok":true` or false).
#[derive(Debug, PartialEq)]
struct Shown {
    command: String,
    says_ok: Option<bool>,
}

/// The command lines in code blocks: `spoa-host ...` (or with a path to the
/// binary), their comments cut, continued lines joined. In a block with `$ `
/// prompts only the prompted lines are commands (the rest is output).
/// Synopsis lines (`[OPTIONAL]`, `A|B`, `…`) are grammar, not commands.
fn commands(text: &str) -> Vec<Shown> {
    let mut found: Vec<Shown> = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.trim().starts_with("```") {
            if in_block {
                found.extend(commands_of_block(&block));
                block.clear();
            }
            in_block = !in_block;
        } else if in_block {
            block.push(line.trim());
        }
    }
    found
}

fn commands_of_block(block: &[&str]) -> Vec<Shown> {
    let prompted = block.iter().any(|line| line.starts_with("$ "));
    let mut found: Vec<Shown> = Vec::new();
    let mut pending = String::new();
    for line in block {
        let command_line = if prompted {
            match line.strip_prefix("$ ") {
                Some(rest) => rest,
                None => {
                    // Output: what the last command printed.
                    if let Some(last) = found.last_mut()
                        && last.says_ok.is_none()
                    {
                        if line.starts_with("{\"ok\":true") {
                            last.says_ok = Some(true);
                        } else if line.starts_with("{\"ok\":false") {
                            last.says_ok = Some(false);
                        }
                    }
                    continue;
                }
            }
        } else {
            line
        };
        let command_line = match command_line.find(" #") {
            Some(at) => &command_line[..at],
            None => command_line,
        }
        .trim();
        if !pending.is_empty() {
            pending.push(' ');
            pending.push_str(command_line.trim_end_matches('\\').trim());
            if !command_line.ends_with('\\') {
                found.push(Shown {
                    command: std::mem::take(&mut pending),
                    says_ok: None,
                });
            }
            continue;
        }
        let Some(start) = command_line.find("spoa-host ") else {
            continue;
        };
        let before = &command_line[..start];
        if !(before.is_empty() || before.ends_with("release/") || before.ends_with("bin/")) {
            continue;
        }
        let command = &command_line[start..];
        if command.contains(['[', '|', '…', '<']) {
            continue;
        }
        if command.ends_with('\\') {
            pending = command.trim_end_matches('\\').trim().to_owned();
        } else {
            found.push(Shown {
                command: command.to_owned(),
                says_ok: None,
            });
        }
    }
    found
}

#[test]
fn every_command_the_docs_show_parses_and_the_offline_ones_run() {
    let root = workspace_root();
    let mut parsed = 0;
    let mut ran = 0;
    let mut failures = Vec::new();
    for file in documents() {
        let text = std::fs::read_to_string(&file).expect("a document");
        let name = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for Shown { command, says_ok } in commands(&text) {
            let words: Vec<&str> = command.split_whitespace().collect();
            let cli = match Cli::try_parse_from(&words) {
                Ok(cli) => cli,
                Err(err) => {
                    failures.push(format!("{name}: `{command}` does not parse:\n{err}"));
                    continue;
                }
            };
            parsed += 1;
            let offline = matches!(
                cli.command,
                Some(Command::Call(_) | Command::Check { .. } | Command::HaproxyConfig(_))
            );
            // Examples that name the reader's own files are parsed only.
            let files_exist = words[1..]
                .iter()
                .filter(|w| w.ends_with(".wasm") || w.ends_with(".toml") || w.ends_with(".json"))
                .all(|w| Path::new(&root).join(w).exists());
            if offline && files_exist {
                let output = std::process::Command::new(support::agent::host_binary())
                    .args(&words[1..])
                    .current_dir(&root)
                    .output()
                    .expect("running spoa-host");
                let expected = says_ok.unwrap_or(true);
                if output.status.success() != expected {
                    failures.push(format!(
                        "{name}: `{command}` should {} but: {output:?}",
                        if expected {
                            "succeed"
                        } else {
                            "fail, as shown"
                        }
                    ));
                }
                if let Some(ok) = says_ok {
                    let shown = format!("\"ok\":{ok}");
                    if !String::from_utf8_lossy(&output.stdout).contains(&shown) {
                        failures.push(format!(
                            "{name}: `{command}` did not print {shown}: {output:?}"
                        ));
                    }
                }
                ran += 1;
            }
        }
    }
    eprintln!("{parsed} command lines parsed, {ran} run");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        parsed >= 10,
        "only {parsed} commands found: the extraction broke"
    );
    assert!(ran >= 3, "only {ran} commands ran");
}

#[test]
fn the_extraction_finds_commands_and_skips_synopses() {
    let text = "```sh\n./target/release/spoa-host call \\\n    a.wasm --message m\nspoa-host --module g.wasm [-p PORT]\n```\nspoa-host outside a block\n\
                ```\n$ spoa-host call b.wasm --message m\n{\"ok\":false}\nspoa-host 0.1.0, up 3 s\n```\n";
    let shown = |command: &str, says_ok| Shown {
        command: command.into(),
        says_ok,
    };
    assert_eq!(
        commands(text),
        [
            shown("spoa-host call a.wasm --message m", None),
            shown("spoa-host call b.wasm --message m", Some(false)),
        ]
    );
}
