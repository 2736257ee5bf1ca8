//! Secrets of the dev profile. When the dev profile runs without a configured token pepper
//! or control-plane token, generated ones are kept in `data/dev-secrets.json` (readable by
//! its owner only), so tokens survive restarts and `d2ctl` and `d2-api` agree.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::random_bytes;

#[derive(Serialize, Deserialize)]
struct DevSecrets {
    token_pepper: String,
    control_plane_token: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot use the dev secrets file {path}: {reason}")]
pub struct DevSecretsError {
    path: PathBuf,
    reason: String,
}

/// Where the dev profile keeps its generated state (`D2_DATA_DIR`, default `./data`).
pub fn data_dir() -> PathBuf {
    std::env::var_os("D2_DATA_DIR").map_or_else(|| PathBuf::from("data"), PathBuf::from)
}

fn generate() -> Result<DevSecrets, String> {
    let pepper = random_bytes(32).map_err(|e| e.to_string())?;
    let control_plane = random_bytes(32).map_err(|e| e.to_string())?;
    Ok(DevSecrets {
        token_pepper: URL_SAFE_NO_PAD.encode(pepper),
        control_plane_token: URL_SAFE_NO_PAD.encode(control_plane),
    })
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

/// The dev secrets, created on first use. Returns `(token_pepper, control_plane_token)`.
pub fn load_or_create(dir: &Path) -> Result<(SecretString, SecretString), DevSecretsError> {
    let path = dir.join("dev-secrets.json");
    let error = |reason: String| DevSecretsError {
        path: path.clone(),
        reason,
    };
    if !path.exists() {
        std::fs::create_dir_all(dir).map_err(|e| error(e.to_string()))?;
        let fresh = generate().map_err(error)?;
        let text = serde_json::to_string_pretty(&fresh).map_err(|e| error(e.to_string()))?;
        match write_private(&path, &text) {
            Ok(()) => {
                tracing::warn!(path = %path.display(), "dev profile: generated dev secrets (never use them in production)");
            }
            // Another process created it first: read theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(error(e.to_string())),
        }
    }
    let text = std::fs::read_to_string(&path).map_err(|e| error(e.to_string()))?;
    let secrets: DevSecrets = serde_json::from_str(&text).map_err(|e| error(e.to_string()))?;
    Ok((
        secrets.token_pepper.into(),
        secrets.control_plane_token.into(),
    ))
}
