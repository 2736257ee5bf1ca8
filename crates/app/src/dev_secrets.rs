//! Secrets of the dev profile. When the dev profile runs without a configured token pepper,
//! control-plane token or signing-key AES key, generated ones are kept in
//! `data/dev-secrets.json` (readable by its owner only), so tokens and keys survive restarts
//! and `d2ctl` and `d2-api` agree.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::random_bytes;

#[derive(Serialize, Deserialize)]
struct Stored {
    token_pepper: String,
    control_plane_token: String,
    /// Added after the first version of the file; filled in when missing.
    #[serde(default)]
    jwk_aes_key: Option<String>,
}

/// The dev profile's secrets.
#[derive(Debug)]
pub struct DevSecrets {
    pub token_pepper: SecretString,
    pub control_plane_token: SecretString,
    pub jwk_aes_key: SecretString,
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

fn secret() -> Result<String, String> {
    random_bytes(32)
        .map(|b| URL_SAFE_NO_PAD.encode(b))
        .map_err(|e| e.to_string())
}

/// Writes `text` to `path` readable by its owner only, replacing the file atomically.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(&temporary)?.write_all(text.as_bytes())?;
    std::fs::rename(&temporary, path)
}

/// The dev secrets, created (or completed) on first use.
pub fn load_or_create(dir: &Path) -> Result<DevSecrets, DevSecretsError> {
    let path = dir.join("dev-secrets.json");
    let error = |reason: String| DevSecretsError {
        path: path.clone(),
        reason,
    };
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_json::from_str::<Stored>(&text).map_err(|e| error(e.to_string()))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(error(e.to_string())),
    };
    let complete = existing.as_ref().is_some_and(|s| s.jwk_aes_key.is_some());
    let stored = match existing {
        Some(stored) if complete => stored,
        partial => {
            let stored = Stored {
                token_pepper: partial
                    .as_ref()
                    .map(|s| s.token_pepper.clone())
                    .map_or_else(secret, Ok)
                    .map_err(error)?,
                control_plane_token: partial
                    .as_ref()
                    .map(|s| s.control_plane_token.clone())
                    .map_or_else(secret, Ok)
                    .map_err(error)?,
                jwk_aes_key: Some(secret().map_err(error)?),
            };
            std::fs::create_dir_all(dir).map_err(|e| error(e.to_string()))?;
            let text = serde_json::to_string_pretty(&stored).map_err(|e| error(e.to_string()))?;
            write_private(&path, &text).map_err(|e| error(e.to_string()))?;
            tracing::warn!(path = %path.display(), "dev profile: generated dev secrets (never use them in production)");
            stored
        }
    };
    Ok(DevSecrets {
        token_pepper: stored.token_pepper.into(),
        control_plane_token: stored.control_plane_token.into(),
        jwk_aes_key: stored.jwk_aes_key.unwrap_or_default().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn secrets_are_created_once_completed_when_old_and_kept_private() {
        let dir = std::env::temp_dir().join(format!("d2-dev-secrets-{}", uuid_like()));
        let first = load_or_create(&dir).unwrap();
        let second = load_or_create(&dir).unwrap();
        assert_eq!(
            first.token_pepper.expose_secret(),
            second.token_pepper.expose_secret()
        );
        assert_eq!(
            first.jwk_aes_key.expose_secret(),
            second.jwk_aes_key.expose_secret()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join("dev-secrets.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A file from before signing keys existed keeps its pepper and gains an AES key.
        std::fs::write(
            dir.join("dev-secrets.json"),
            r#"{"token_pepper":"p","control_plane_token":"c"}"#,
        )
        .unwrap();
        let upgraded = load_or_create(&dir).unwrap();
        assert_eq!(upgraded.token_pepper.expose_secret(), "p");
        assert_eq!(upgraded.control_plane_token.expose_secret(), "c");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(upgraded.jwk_aes_key.expose_secret())
                .unwrap()
                .len(),
            32
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn uuid_like() -> String {
        URL_SAFE_NO_PAD.encode(random_bytes(8).unwrap())
    }
}
