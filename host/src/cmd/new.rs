//! `spoa-host new NAME --lang rust|python|javascript|c`: writes a directory
//! NAME holding the IP-reputation guest in that language, a `./build.sh`
//! that writes `NAME.wasm`, a `cases.json` that
//! `spoa-host call NAME.wasm --cases cases.json` passes, a block list for
//! the IP table `blocklist`, and a short README. The templates are compiled
//! into the binary, and so is the WIT the Python, JavaScript and C guests
//! build against, so the scaffold matches the host that wrote it; the SDKs
//! are referred to where they are (`--sdk`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::settings::cli::{GuestLanguage, NewArgs};

/// A file of a scaffold: its path inside NAME, its text, whether it runs.
struct Template {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

const fn file(path: &'static str, text: &'static str) -> Template {
    Template {
        path,
        text,
        executable: false,
    }
}

const fn script(path: &'static str, text: &'static str) -> Template {
    Template {
        path,
        text,
        executable: true,
    }
}

macro_rules! template {
    ($path:literal) => {
        include_str!(concat!("../../templates/", $path))
    };
}

/// The example guests are the Python, JavaScript and C templates: one
/// source for both, so a scaffold is always what the tests build.
macro_rules! example {
    ($path:literal) => {
        include_str!(concat!("../../../examples/guests/", $path))
    };
}

const COMMON: &[Template] = &[
    file("cases.json", template!("cases.json")),
    file("blocklist.txt", template!("blocklist.txt")),
];

const RUST: &[Template] = &[
    file("Cargo.toml", template!("rust/Cargo.toml")),
    file("src/lib.rs", template!("rust/src/lib.rs")),
    script("build.sh", template!("rust/build.sh")),
    file("README.md", template!("rust/README.md")),
];

const PYTHON: &[Template] = &[
    file("app.py", example!("python/app.py")),
    script("build.sh", template!("python/build.sh")),
    file("README.md", template!("python/README.md")),
];

const JAVASCRIPT: &[Template] = &[
    file("app.js", example!("javascript/app.js")),
    file("package.json", template!("javascript/package.json")),
    script("build.sh", template!("javascript/build.sh")),
    file("README.md", template!("javascript/README.md")),
    file("wit/world.wit", template!("javascript/world.wit")),
];

const C: &[Template] = &[
    file("app.c", example!("c/app.c")),
    script("build.sh", template!("c/build.sh")),
    file("README.md", template!("c/README.md")),
];

/// spoa-host's WIT, as this binary speaks it: under `wit/` for Python and
/// C (the package itself), under `wit/deps/` for JavaScript (whose own
/// world includes it).
const WIT: &[(&str, &str)] = &[
    ("spoa.wit", include_str!("../../../wit/spoa.wit")),
    (
        "deps/config/store.wit",
        include_str!("../../../wit/deps/config/store.wit"),
    ),
    (
        "deps/config/world.wit",
        include_str!("../../../wit/deps/config/world.wit"),
    ),
    (
        "deps/keyvalue/atomic.wit",
        include_str!("../../../wit/deps/keyvalue/atomic.wit"),
    ),
    (
        "deps/keyvalue/batch.wit",
        include_str!("../../../wit/deps/keyvalue/batch.wit"),
    ),
    (
        "deps/keyvalue/store.wit",
        include_str!("../../../wit/deps/keyvalue/store.wit"),
    ),
    (
        "deps/keyvalue/world.wit",
        include_str!("../../../wit/deps/keyvalue/world.wit"),
    ),
];

/// Where the WIT files go for a language, if it needs them.
fn wit_path(language: GuestLanguage, file: &str) -> Option<String> {
    match language {
        // The Rust SDK carries the WIT.
        GuestLanguage::Rust => None,
        GuestLanguage::Python | GuestLanguage::C => Some(format!("wit/{file}")),
        GuestLanguage::Javascript => Some(match file.strip_prefix("deps/") {
            Some(dep) => format!("wit/deps/{dep}"),
            None => format!("wit/deps/spoa-agent/{file}"),
        }),
    }
}

pub fn run(args: &NewArgs) -> Result<()> {
    check_name(&args.name)?;
    let sdk = find_sdk(args.sdk.as_deref())?;
    let dir = PathBuf::from(&args.name);
    if dir.exists() {
        bail!("{} exists already: pick another NAME", dir.display());
    }
    let templates = match args.lang {
        GuestLanguage::Rust => RUST,
        GuestLanguage::Python => PYTHON,
        GuestLanguage::Javascript => JAVASCRIPT,
        GuestLanguage::C => C,
    };
    let crate_name = args.name.replace('-', "_");
    let sdk_text = sdk.display().to_string();
    // The path is written into TOML, JSON and shell scripts as it is.
    if sdk_text.contains(['"', '\\', '\n', '$', '`']) {
        bail!(
            "the SDK path {sdk_text} holds a quote, backslash, `$`, backtick or newline: move it"
        );
    }
    let fill = |text: &str| {
        text.replace("@NAME@", &args.name)
            .replace("@CRATE@", &crate_name)
            .replace("@SDK@", &sdk_text)
    };
    let mut written = Vec::new();
    for template in COMMON.iter().chain(templates) {
        write(
            &dir,
            template.path,
            &fill(template.text),
            template.executable,
        )?;
        written.push(template.path.to_owned());
    }
    for (file, text) in WIT {
        if let Some(path) = wit_path(args.lang, file) {
            write(&dir, &path, text, false)?;
        }
    }
    println!(
        "wrote {}/ ({} guest, SDK from {}): {}",
        dir.display(),
        args.lang.name(),
        sdk.display(),
        written.join(", ")
    );
    println!(
        "next: cd {name} && ./build.sh && spoa-host call {name}.wasm --cases cases.json",
        name = args.name
    );
    Ok(())
}

fn write(dir: &Path, path: &str, text: &str, executable: bool) -> Result<()> {
    let path = dir.join(path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", path.display()))?;
    }
    Ok(())
}

/// NAME is a directory, a crate and a file name, and a WIT-free identifier.
fn check_name(name: &str) -> Result<()> {
    let plain = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !plain {
        bail!("NAME `{name}`: use 1 to 64 of a-z, 0-9, - and _, starting with a letter");
    }
    // Cargo refuses these as package names (the Rust scaffold's crate).
    const RESERVED: &[&str] = &[
        "test",
        "core",
        "std",
        "alloc",
        "proc_macro",
        "proc-macro",
        "self",
        "super",
        "crate",
        "fn",
        "mod",
        "use",
        "impl",
        "trait",
        "struct",
        "enum",
        "type",
        "let",
        "match",
        "loop",
        "while",
        "for",
        "if",
        "else",
        "return",
        "async",
        "await",
        "dyn",
        "move",
        "ref",
        "static",
        "const",
        "unsafe",
        "where",
        "pub",
        "extern",
        "true",
        "false",
        "break",
        "continue",
        "in",
        "as",
        "mut",
    ];
    if RESERVED.contains(&name) {
        bail!("NAME `{name}` is reserved in Rust and Cargo: pick another");
    }
    Ok(())
}

/// The SDKs: `--sdk`, else `SPOA_SDK`, else the source tree this binary was
/// built from. A binary installed elsewhere (the Debian package) ships no
/// SDK: pass a spoa-host source checkout.
fn find_sdk(given: Option<&Path>) -> Result<PathBuf> {
    let is_sdk =
        |dir: &Path| dir.join("spoa-guest/Cargo.toml").is_file() && dir.join("sdk").is_dir();
    let candidates: Vec<PathBuf> = match given {
        Some(dir) => vec![dir.to_path_buf()],
        None => std::env::var_os("SPOA_SDK")
            .map(PathBuf::from)
            .into_iter()
            .chain([Path::new(env!("CARGO_MANIFEST_DIR")).join("..")])
            .collect(),
    };
    for dir in &candidates {
        if is_sdk(dir) {
            return dir
                .canonicalize()
                .with_context(|| format!("resolving {}", dir.display()));
        }
    }
    bail!(
        "no SDK found (looked in {}): pass --sdk DIR, a spoa-host source tree (it holds \
         spoa-guest/ and sdk/)",
        candidates
            .iter()
            .map(|dir| dir.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain() {
        assert!(check_name("my-guest_2").is_ok());
        for bad in [
            "",
            "My",
            "1x",
            "a/b",
            "..",
            "a b",
            "test",
            "core",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_javascript_world_takes_spoa_host_as_a_dependency() {
        assert_eq!(
            wit_path(GuestLanguage::Javascript, "spoa.wit").as_deref(),
            Some("wit/deps/spoa-agent/spoa.wit")
        );
        assert_eq!(
            wit_path(GuestLanguage::Javascript, "deps/config/store.wit").as_deref(),
            Some("wit/deps/config/store.wit")
        );
        assert_eq!(wit_path(GuestLanguage::Rust, "spoa.wit"), None);
    }
}
