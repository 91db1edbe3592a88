//! `componentize IN.wasm OUT.wasm`: turns the core module that
//! `cargo build --target wasm32-unknown-unknown` produces for a wit-bindgen
//! guest into a WebAssembly component that `spoa-host` loads.
//!
//! wit-bindgen embeds the world's type information in a custom section of the
//! core module; wit-component reads it and wraps the module. No WASI adapter is
//! involved: guests built this way import exactly what the WIT world names.

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        bail!("usage: componentize IN.wasm OUT.wasm");
    };
    let module = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .with_context(|| format!("{input}: not a wit-bindgen core module"))?
        .validate(true)
        .encode()
        .with_context(|| format!("{input}: encoding the component"))?;
    std::fs::write(output, &component).with_context(|| format!("writing {output}"))?;
    eprintln!(
        "componentize: {input} -> {output} ({} bytes)",
        component.len()
    );
    Ok(())
}
