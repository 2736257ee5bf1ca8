//! A real SMTP server for a test (`scripts/smtp.sh`, aiosmtpd), and the messages it got.

use std::path::{Path, PathBuf};
use std::process::Command;

/// An SMTP server of the test's own, stopped and removed when dropped.
pub struct OwnSmtp {
    dir: PathBuf,
    pub url: String,
}

impl OwnSmtp {
    fn script(dir: &Path, command: &str) -> std::process::Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/smtp.sh");
        Command::new(script)
            .arg(command)
            .env("SMTP_DIR", dir)
            .output()
            .expect("scripts/smtp.sh runs")
    }

    pub fn start() -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/smtp-e2e")
            .join(uuid::Uuid::new_v4().to_string());
        let output = Self::script(&dir, "start");
        assert!(
            output.status.success(),
            "scripts/smtp.sh start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let url = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        Self { dir, url }
    }

    /// The messages received so far, oldest first, with quoted-printable undone.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("messages")) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| unquote(&std::fs::read_to_string(path).unwrap()))
            .collect()
    }

    /// Makes the server answer 451 to every message until [`Self::accept`].
    pub fn refuse(&self) {
        std::fs::write(self.dir.join("refuse"), "").unwrap();
    }

    pub fn accept(&self) {
        let _ = std::fs::remove_file(self.dir.join("refuse"));
    }
}

impl Drop for OwnSmtp {
    fn drop(&mut self) {
        Self::script(&self.dir, "stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Quoted-printable undone: soft line breaks joined, `=XX` decoded.
fn unquote(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let mut out = Vec::new();
    let bytes = joined.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
