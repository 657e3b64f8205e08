//! What the command line reads besides its arguments: the password of
//! `plantd login` and the payload file of `plantd pub`.

/// The password from a file, `$PLANTD_PASSWORD`, or standard input.
pub(crate) fn read_password(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    if let Some(f) = file {
        return Ok(std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?
            .trim()
            .to_owned());
    }
    if let Ok(p) = std::env::var("PLANTD_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| anyhow::anyhow!("cannot read the password from standard input: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// The bytes of `--file` (`-` is standard input).
pub(crate) fn read_payload(file: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    if file == std::path::Path::new("-") {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .map_err(|e| anyhow::anyhow!("cannot read the payload from standard input: {e}"))?;
        return Ok(b);
    }
    std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))
}
