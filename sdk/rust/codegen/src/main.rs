//! `plantd-client-codegen [--check] [--proxy-bin PATH] [--identity-bin PATH]`
//!
//! Asks `plantd-proxy --print-openapi` and `plantd-identity
//! --print-openapi` for their documents (the bytes `/openapi.json` and
//! `/v1/identity/openapi.json` serve; default binaries:
//! `target/debug/plantd-proxy` and `target/debug/plantd-identity`, or
//! `$PLANTD_PROXY_BIN` / `$PLANTD_IDENTITY_BIN`) and writes
//! `sdk/rust/src/generated/{proxy,identity}.rs`. With `--check` it writes
//! nothing and fails when a committed file differs from what it would
//! write (scripts/test runs this).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// The workspace root (this crate is `sdk/rust/codegen`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

/// The document a binary prints with `--print-openapi`.
fn document(bin: &Path) -> Result<serde_json::Value> {
    let out = Command::new(bin)
        .arg("--print-openapi")
        .output()
        .with_context(|| {
            format!(
                "cannot run {} (build it: cargo build -p plantd-proxy -p plantd-identity)",
                bin.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "{} --print-openapi failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{} printed no JSON document", bin.display()))
}

fn main() -> Result<()> {
    let mut check = false;
    let target = root().join("target/debug");
    let mut proxy = std::env::var_os("PLANTD_PROXY_BIN")
        .map_or_else(|| target.join("plantd-proxy"), PathBuf::from);
    let mut identity = std::env::var_os("PLANTD_IDENTITY_BIN")
        .map_or_else(|| target.join("plantd-identity"), PathBuf::from);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--check" => check = true,
            "--proxy-bin" => proxy = args.next().context("--proxy-bin needs a path")?.into(),
            "--identity-bin" => {
                identity = args.next().context("--identity-bin needs a path")?.into();
            }
            other => bail!(
                "unknown argument {other:?}; usage: plantd-client-codegen [--check] [--proxy-bin PATH] [--identity-bin PATH]"
            ),
        }
    }
    let out_dir = root().join("sdk/rust/src/generated");
    let mut stale = Vec::new();
    let proxy_doc = document(&proxy)?;
    // Both modules implement calls on the one `Rest` type: a path both
    // documents have (`/healthz`, served by each process) is the proxy's
    // call only.
    let mut identity_doc = document(&identity)?;
    if let (Some(ids), Some(proxy_paths)) = (
        identity_doc["paths"].as_object_mut(),
        proxy_doc["paths"].as_object(),
    ) {
        ids.retain(|path, _| !proxy_paths.contains_key(path));
    }
    for (file, doc, source) in [
        ("proxy.rs", &proxy_doc, "the proxy's `/openapi.json`"),
        (
            "identity.rs",
            &identity_doc,
            "identity's `/v1/identity/openapi.json`",
        ),
    ] {
        let code = plantd_client_codegen::format(&plantd_client_codegen::generate(doc, source)?)?;
        let path = out_dir.join(file);
        if check {
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            if have != code {
                stale.push(format!("sdk/rust/src/generated/{file}"));
            }
        } else {
            std::fs::write(&path, code)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("wrote sdk/rust/src/generated/{file}");
        }
    }
    if !stale.is_empty() {
        bail!(
            "the Rust SDK's REST layer is out of date: {} differ from the OpenAPI documents; run `cargo run -p plantd-client-codegen` (after building plantd-proxy and plantd-identity) and commit the result",
            stale.join(", ")
        );
    }
    if check {
        println!("the Rust SDK's REST layer matches the OpenAPI documents");
    }
    Ok(())
}
