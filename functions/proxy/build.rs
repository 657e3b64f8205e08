//! With the `embed-app` feature, embeds the built web app (`app/dist`, or
//! `$PLANTD_APP_DIST`) in the binary: writes `$OUT_DIR/app_files.rs`, a
//! table of `(relative path, include_bytes!(…))` that
//! `plantd_proxy::static_files::embedded` serves. Without the feature the
//! table is empty and nothing is read. A release build runs
//! `npm ci && npm run build` in `app/` first (docs/app.md).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn files(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("embed-app: cannot read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            let rel = rel.to_string_lossy().replace('\\', "/");
            out.push((rel, path));
        }
    }
}

/// Feature `lambda-link` (the Lambda bootstrap, whose panics abort; decision
/// 0047), on Linux:
/// * a linker script inserted into the default one discards `.eh_frame`,
///   and no `.eh_frame_hdr` index is made: nothing unwinds when panics
///   abort (a panic still prints its message and location, without a
///   backtrace). `-C force-unwind-tables=no` cannot do it under fat LTO:
///   the standard library's bitcode keeps its tables (decision 0044).
///
/// (Identical code folding, lld's `--icf=all`, would be next; `zig cc`,
/// which `cargo lambda` links with, refuses the flag.)
fn lambda_link(out: &Path) {
    if std::env::var_os("CARGO_FEATURE_LAMBDA_LINK").is_none()
        || std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux")
    {
        return;
    }
    let script = out.join("discard-unwind-tables.ld");
    std::fs::write(
        &script,
        "SECTIONS { /DISCARD/ : { *(.eh_frame) } } INSERT AFTER .text;\n",
    )
    .expect("write discard-unwind-tables.ld");
    println!("cargo:rustc-link-arg-bins=-Wl,--no-eh-frame-hdr");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
}

fn main() {
    println!("cargo:rerun-if-env-changed=PLANTD_APP_DIST");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    lambda_link(&out);
    let mut table = String::from("/// The embedded app: (path under the app directory, bytes).\n");
    table.push_str("pub static FILES: &[(&str, &[u8])] = &[\n");
    if std::env::var_os("CARGO_FEATURE_EMBED_APP").is_some() {
        let manifest =
            PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
        let dist = std::env::var_os("PLANTD_APP_DIST")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest.join("../../app/dist"));
        println!("cargo:rerun-if-changed={}", dist.display());
        let dist = dist.canonicalize().unwrap_or_else(|e| {
            panic!(
                "embed-app: {} ({e}); build the app first: cd app && npm ci && npm run build",
                dist.display()
            )
        });
        assert!(
            dist.join("index.html").is_file(),
            "embed-app: {} has no index.html; build the app first: cd app && npm ci && npm run build",
            dist.display()
        );
        let mut list = Vec::new();
        files(&dist, &dist, &mut list);
        for (rel, path) in list {
            println!("cargo:rerun-if-changed={}", path.display());
            let _ = writeln!(
                table,
                "    ({rel:?}, include_bytes!({:?})),",
                path.display().to_string()
            );
        }
    }
    table.push_str("];\n");
    std::fs::write(out.join("app_files.rs"), table).expect("write app_files.rs");
}
