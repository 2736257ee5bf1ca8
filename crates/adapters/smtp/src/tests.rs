//! Against a real SMTP server: each test starts one of its own (`scripts/smtp.sh start`,
//! aiosmtpd from PyPI), reads back the messages it stored, and stops it at the end. With
//! `D2_TEST_KEEP_SMTP` set, the servers' directories stay under `target/smtp-tests`.
#![expect(clippy::panic, reason = "tests fail loudly")]

mod eml;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use d2_kernel::{Email, MailError, Mailer as _};

use crate::{SmtpMailer, SmtpSettings, StartError};
use eml::Part;

const FROM: &str = "D2 <no-reply@d2.example.com>";

/// An SMTP server of the test's own, in a directory of its own under `target/`; stopped and
/// removed when dropped (also when the test fails).
struct Server {
    dir: PathBuf,
    url: String,
}

impl Server {
    fn script(dir: &Path, command: &str) -> std::process::Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../scripts/smtp.sh");
        Command::new(script)
            .arg(command)
            .env("SMTP_DIR", dir)
            .output()
            .unwrap_or_else(|e| panic!("scripts/smtp.sh {command} does not run: {e}"))
    }

    fn start() -> Self {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../target/smtp-tests")
            .join(format!(
                "{}-{}",
                std::process::id(),
                STARTED.fetch_add(1, Ordering::Relaxed)
            ));
        let output = Self::script(&dir, "start");
        assert!(
            output.status.success(),
            "scripts/smtp.sh start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let url = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        assert!(url.starts_with("smtp://127.0.0.1:"), "{url:?}");
        Self { dir, url }
    }

    fn settings(&self) -> SmtpSettings {
        SmtpSettings::new(&self.url, FROM)
    }

    fn mailer(&self) -> SmtpMailer {
        SmtpMailer::new(self.settings()).unwrap()
    }

    /// The messages received so far, in order, as sent.
    fn raw_messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("messages"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| std::fs::read_to_string(path).unwrap())
            .collect()
    }

    fn messages(&self) -> Vec<Part> {
        self.raw_messages()
            .iter()
            .map(|raw| Part::parse(raw))
            .collect()
    }

    /// Makes the server answer DATA with 451, or 550 with `permanent`.
    fn refuse(&self, how: &str) {
        std::fs::write(self.dir.join("refuse"), how).unwrap();
    }

    fn accept(&self) {
        std::fs::remove_file(self.dir.join("refuse")).unwrap();
    }

    /// Makes the server answer DATA `seconds` late.
    fn stall(&self, seconds: u64) {
        std::fs::write(self.dir.join("stall"), seconds.to_string()).unwrap();
    }

    fn answer_at_once(&self) {
        std::fs::remove_file(self.dir.join("stall")).unwrap();
    }

    /// Makes AUTH succeed for these credentials only.
    fn require(&self, username: &str, password: &str) {
        std::fs::write(self.dir.join("auth"), format!("{username}:{password}")).unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let stopped = Self::script(&self.dir, "stop");
        if std::env::var_os("D2_TEST_KEEP_SMTP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        if !std::thread::panicking() {
            assert!(
                stopped.status.success(),
                "scripts/smtp.sh stop: {}",
                String::from_utf8_lossy(&stopped.stderr)
            );
        }
    }
}

const LINK: &str = "https://d2.example.com/invitations/accept?token=one-time-7f3a9c";

fn invitation(to: &str) -> Email {
    Email {
        to: to.to_owned(),
        subject: "Zoë invites you to “Café ☕” on D2".to_owned(),
        text: format!(
            "Hello,\n\nZoë invites you to the team “Café ☕”. Open this link within 7 days to \
             join (it works once, and the line is long enough to be wrapped):\n{LINK}\n\n-- \nD2\n"
        ),
        html: None,
    }
}

fn with_html(mut email: Email) -> Email {
    email.html = Some(format!(
        "<!doctype html>\n<p>Zoë invites you to the team <b>“Café ☕”</b>.</p>\n\
         <p><a href=\"{LINK}&amp;via=mail\">Join the team</a></p>\n"
    ));
    email
}

fn assert_unavailable(result: Result<(), MailError>, expected: &str) -> String {
    match result {
        Err(MailError::Unavailable(text)) => {
            assert!(text.contains(expected), "{text:?} lacks {expected:?}");
            text
        }
        other => panic!("expected Unavailable({expected}…), got {other:?}"),
    }
}

fn assert_refused(result: Result<(), MailError>, expected: &str) -> String {
    match result {
        Err(MailError::Refused(text)) => {
            assert!(text.contains(expected), "{text:?} lacks {expected:?}");
            text
        }
        other => panic!("expected Refused({expected}…), got {other:?}"),
    }
}

/// What no error text or `Debug` output may hold.
fn assert_discreet(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{text:?} shows {secret:?}");
    }
}

#[tokio::test]
async fn a_plain_text_message_arrives_whole() {
    let server = Server::start();
    let email = invitation("Ada Lovelace <ada@example.com>");
    server.mailer().send(&email).await.unwrap();

    let messages = server.messages();
    let [message] = messages.as_slice() else {
        panic!("expected one message, got {}", messages.len());
    };
    assert_eq!(message.header("From"), FROM);
    assert_eq!(message.header("To"), "\"Ada Lovelace\" <ada@example.com>");
    assert_eq!(message.header("Subject"), email.subject);
    assert_eq!(message.mime_type(), "text/plain");
    assert_eq!(
        message
            .content_type_parameter("charset")
            .map(|c| c.to_ascii_lowercase()),
        Some("utf-8".to_owned())
    );
    assert_eq!(message.text(), email.text);
    assert_eq!(message.header("MIME-Version"), "1.0");
    assert!(!message.header("Date").is_empty());
    let id = message.header("Message-ID");
    assert!(
        id.starts_with('<') && id.ends_with("@d2.example.com>"),
        "{id}"
    );
}

#[tokio::test]
async fn an_html_message_is_an_alternative_to_its_text() {
    let server = Server::start();
    let email = with_html(invitation("ada@example.com"));
    server.mailer().send(&email).await.unwrap();

    let messages = server.messages();
    let [message] = messages.as_slice() else {
        panic!("expected one message, got {}", messages.len());
    };
    assert_eq!(message.header("From"), FROM);
    assert_eq!(message.header("To"), "ada@example.com");
    assert_eq!(message.header("Subject"), email.subject);
    assert_eq!(message.mime_type(), "multipart/alternative");
    let parts = message.parts();
    let [text, html] = parts.as_slice() else {
        panic!("expected two parts, got {parts:?}");
    };
    assert_eq!(text.mime_type(), "text/plain");
    assert_eq!(text.text(), email.text);
    assert_eq!(html.mime_type(), "text/html");
    assert_eq!(Some(html.text()), email.html);
}

#[tokio::test]
async fn messages_arrive_in_order_over_the_pool() {
    let server = Server::start();
    let mailer = server.mailer();
    for n in 1..=3 {
        let mut email = invitation(&format!("user{n}@example.com"));
        email.subject = format!("Message {n}");
        mailer.send(&email).await.unwrap();
    }
    let subjects: Vec<String> = server
        .messages()
        .iter()
        .map(|m| m.header("Subject"))
        .collect();
    assert_eq!(subjects, ["Message 1", "Message 2", "Message 3"]);
}

#[tokio::test]
async fn a_transient_refusal_is_unavailable_and_a_retry_goes_through() {
    let server = Server::start();
    let mailer = server.mailer();
    let email = invitation("ada@example.com");

    server.refuse("");
    let text = assert_unavailable(mailer.send(&email).await, "451");
    assert_discreet(&text, &[LINK, "Hello"]);
    assert!(server.raw_messages().is_empty());

    server.accept();
    mailer.send(&email).await.unwrap();
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn a_permanent_refusal_is_refused() {
    let server = Server::start();
    server.refuse("permanent");
    let text = assert_refused(
        server.mailer().send(&invitation("ada@example.com")).await,
        "550",
    );
    assert_discreet(&text, &[LINK, "Hello"]);
    assert!(server.raw_messages().is_empty());
}

#[tokio::test]
async fn a_recipient_that_is_not_an_address_is_refused_before_sending() {
    let server = Server::start();
    let mailer = server.mailer();
    for to in [
        "",
        "ada",
        "ada@",
        "@example.com",
        "ada@example.com, eve@example.com",
        "ada@example.com\r\nBcc: eve@example.com",
    ] {
        let text = assert_refused(mailer.send(&invitation(to)).await, "recipient");
        assert_discreet(&text, &[LINK]);
    }
    assert!(server.raw_messages().is_empty());
}

#[tokio::test]
async fn a_subject_cannot_add_headers() {
    let server = Server::start();
    let mut email = invitation("ada@example.com");
    email.subject = "Hello\r\nBcc: eve@example.com".to_owned();
    server.mailer().send(&email).await.unwrap();
    let raw = server.raw_messages().concat();
    let (head, _) = raw.split_once("\r\n\r\n").unwrap();
    assert!(!head.lines().any(|line| line.starts_with("Bcc")), "{head}");
}

#[tokio::test]
async fn no_server_is_unavailable() {
    // A port nobody listens on: bound, then freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mailer =
        SmtpMailer::new(SmtpSettings::new(format!("smtp://127.0.0.1:{port}"), FROM)).unwrap();
    let text = assert_unavailable(mailer.send(&invitation("ada@example.com")).await, "");
    assert_discreet(&text, &[LINK]);
}

#[tokio::test]
async fn a_silent_server_times_out_as_unavailable() {
    // Accepts connections and never greets.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut settings = SmtpSettings::new(format!("smtp://127.0.0.1:{port}"), FROM);
    settings.timeout_seconds = 1;
    let mailer = SmtpMailer::new(settings).unwrap();
    let started = Instant::now();
    assert_unavailable(mailer.send(&invitation("ada@example.com")).await, "");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    silent.abort();
}

#[tokio::test]
async fn a_send_that_runs_out_of_time_leaves_no_connection_behind() {
    let server = Server::start();
    let mut settings = server.settings();
    settings.timeout_seconds = 1;
    let mailer = SmtpMailer::new(settings).unwrap();
    let mut late = invitation("ada@example.com");
    late.subject = "Late".to_owned();
    let mut next = invitation("ada@example.com");
    next.subject = "Next".to_owned();

    server.stall(3);
    let started = Instant::now();
    assert_unavailable(mailer.send(&late).await, "no answer within 1 s");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The connection still waits for the late answer: the next send must not read it, nor
    // wait for it. (The pool takes a dropped connection back on a task of its own: let it.)
    server.answer_at_once();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    mailer.send(&next).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let subjects: Vec<String> = server
        .messages()
        .iter()
        .map(|m| m.header("Subject"))
        .collect();
    assert!(subjects.contains(&"Next".to_owned()), "{subjects:?}");
}

#[tokio::test]
async fn credentials_are_sent_and_never_shown() {
    let server = Server::start();
    server.require("d2", "s3cret-pass");
    // The URL's credentials are wrong; the settings' override them.
    let with_url_credentials = server.url.replace("smtp://", "smtp://d2:url-pass@");
    let mut settings = SmtpSettings::new(&with_url_credentials, FROM);
    settings.username = Some("d2".to_owned());
    settings.password = Some("s3cret-pass".into());
    let mailer = SmtpMailer::new(settings.clone()).unwrap();
    mailer.send(&invitation("ada@example.com")).await.unwrap();
    assert_eq!(server.messages().len(), 1);
    for printed in [format!("{mailer:?}"), format!("{settings:?}")] {
        assert_discreet(&printed, &["s3cret-pass", "url-pass"]);
        assert!(printed.contains("127.0.0.1"), "{printed}");
    }

    // A wrong password is a permanent refusal (535), which does not repeat it.
    settings.password = Some("wrong-pass".into());
    let mailer = SmtpMailer::new(settings).unwrap();
    let text = assert_refused(mailer.send(&invitation("ada@example.com")).await, "535");
    assert_discreet(&text, &["wrong-pass", "s3cret-pass", "url-pass", LINK]);
    assert_eq!(server.messages().len(), 1);
}

fn invalid_key(result: Result<SmtpMailer, StartError>) -> (&'static str, String) {
    match result {
        Err(error @ StartError::InvalidSetting { key, .. }) => (key, error.to_string()),
        other => panic!("expected an invalid setting, got {other:?}"),
    }
}

#[tokio::test]
async fn settings_that_cannot_work_name_their_key() {
    for url in [
        "",
        "127.0.0.1:25",
        "http://127.0.0.1:25",
        "smtp://",
        "smtp://127.0.0.1:25?tls=maybe",
        "smtp://127.0.0.1:25?tsl=required",
    ] {
        let (key, text) = invalid_key(SmtpMailer::new(SmtpSettings::new(url, FROM)));
        assert_eq!(key, "smtp.url", "{url}");
        assert!(text.contains("`smtp.url`"), "{text}");
    }
    let (_, text) = invalid_key(SmtpMailer::new(SmtpSettings::new(
        "smtp://u:hunter2@127.0.0.1:25?tls=maybe",
        FROM,
    )));
    assert_discreet(&text, &["hunter2"]);

    for from in [
        "",
        "D2",
        "D2 <no-reply>",
        "no-reply@",
        "D2 <a@b.example>, c@d.example",
    ] {
        let (key, text) = invalid_key(SmtpMailer::new(SmtpSettings::new(
            "smtp://127.0.0.1:25",
            from,
        )));
        assert_eq!(key, "smtp.from", "{from}");
        assert!(text.contains("`smtp.from`"), "{text}");
    }

    let mut settings = SmtpSettings::new("smtp://127.0.0.1:25", FROM);
    settings.username = Some("d2".to_owned());
    assert_eq!(
        invalid_key(SmtpMailer::new(settings.clone())).0,
        "smtp.password"
    );
    settings.password = Some("".into());
    assert_eq!(
        invalid_key(SmtpMailer::new(settings.clone())).0,
        "smtp.password"
    );
    settings.username = None;
    settings.password = Some("hunter2".into());
    let (key, text) = invalid_key(SmtpMailer::new(settings.clone()));
    assert_eq!(key, "smtp.username");
    assert_discreet(&text, &["hunter2"]);
    settings.password = None;
    settings.timeout_seconds = 0;
    assert_eq!(
        invalid_key(SmtpMailer::new(settings)).0,
        "smtp.timeout_seconds"
    );

    // Every scheme and TLS mode lettre knows; nothing connects yet.
    for url in [
        "smtp://127.0.0.1",
        "smtp://127.0.0.1:2525/client.example.com",
        "smtp://mail.example.com?tls=required",
        "smtp://mail.example.com:587?tls=opportunistic",
        "smtps://mail.example.com",
    ] {
        SmtpMailer::new(SmtpSettings::new(url, FROM)).unwrap();
    }
}

#[test]
fn outside_a_runtime_the_mailer_says_so() {
    let result = SmtpMailer::new(SmtpSettings::new("smtp://127.0.0.1:25", FROM));
    assert!(
        matches!(result, Err(StartError::NoRuntime(_))),
        "{result:?}"
    );
}
