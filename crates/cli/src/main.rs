//! `d2ctl`: the D2 operator's command line.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Parser, Subcommand};

use d2_app::{App, MigrateMode, Mode, Settings, Store};
use d2_cli::{keys, tasks};
use d2_kernel::{AccountId, SystemClock, TaskState};
use d2_tokens::BootstrapRequest;

// glibc's malloc spent about half of the CPU of JSON-heavy work (ingest, export) on its
// own bookkeeping (perf); mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "d2ctl", version, about = "Operate a D2 control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply pending database migrations.
    Migrate {
        /// List pending migrations without applying them.
        #[arg(long)]
        status: bool,
    },
    /// Copy every table of one database into another, empty one (created and migrated if
    /// needed): `--from sqlite://./data/d2.sqlite --to postgres://...`. Tokens, signing keys
    /// and bundles stay valid as long as the servers keep the same crypto secrets.
    MigrateStore {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
    /// Create an account with its owner and an admin token (printed once), or, with
    /// --account-id, a break-glass owner token for an existing account.
    Bootstrap {
        #[arg(long)]
        account_id: Option<AccountId>,
        #[arg(long)]
        account_name: Option<String>,
        #[arg(long)]
        owner_email: Option<String>,
        #[arg(long)]
        owner_name: Option<String>,
        #[arg(long)]
        token_name: Option<String>,
        /// Print a JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a new AES-256 key (32 random bytes, URL-safe base64) for
    /// D2__CRYPTO__JWK_AES_KEY.
    GenerateAesKey,
    /// Re-seal every private signing key under the current AES key, bound to its
    /// account; resumable.
    RotateAesKey,
    /// Rotate signing keys (new key, active bundles re-signed).
    RotateJwks {
        /// Every account that has a signing key.
        #[arg(long)]
        all: bool,
    },
    /// Delete retired signing keys whose grace period has ended.
    PruneSigningKeys,
    /// The task queue: list pending or dead tasks, revive a dead one.
    Tasks {
        #[command(subcommand)]
        action: TasksCommand,
    },
    /// Print a new random secret (URL-safe base64) for the token pepper or the
    /// control-plane token.
    GenerateSecret {
        /// Random bytes in the secret.
        #[arg(long, default_value_t = 32)]
        bytes: usize,
    },
}

#[derive(Debug, Subcommand)]
enum TasksCommand {
    /// The counts, then the pending tasks (or, with --dead, the dead ones), oldest first.
    List {
        #[arg(long)]
        dead: bool,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Make a dead task pending again, due now, with its attempts reset.
    Revive { id: i64 },
}

/// Runs `work` with the application built for a one-shot command.
async fn with_app(work: impl AsyncFnOnce(&App) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let app = App::build_with(settings, Arc::new(SystemClock), Mode::Command)
        .await
        .context("cannot reach the database")?;
    let result = work(&app).await;
    app.shutdown().await;
    result
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("d2ctl: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::GenerateAesKey => {
            println!("{}", URL_SAFE_NO_PAD.encode(d2_app::random_bytes(32)?));
            Ok(())
        }
        Command::RotateAesKey => with_app(async |app| keys::rotate_aes_key(app).await).await,
        Command::RotateJwks { all } => {
            anyhow::ensure!(
                all,
                "say --all to rotate the signing key of every account (one account rotates with POST /v1/jwks/rotate)"
            );
            with_app(async |app| keys::rotate_jwks_all(app).await).await
        }
        Command::PruneSigningKeys => {
            with_app(async |app| keys::prune_signing_keys(app).await).await
        }
        Command::Tasks { action } => {
            with_app(async |app| match action {
                TasksCommand::List { dead, limit } => {
                    let state = if dead {
                        TaskState::Dead
                    } else {
                        TaskState::Pending
                    };
                    print!("{}", tasks::list(app, state, limit).await?);
                    Ok(())
                }
                TasksCommand::Revive { id } => tasks::revive(app, id).await,
            })
            .await
        }
        Command::GenerateSecret { bytes } => {
            anyhow::ensure!(bytes >= 16, "a secret needs at least 16 bytes");
            println!("{}", URL_SAFE_NO_PAD.encode(d2_app::random_bytes(bytes)?));
            Ok(())
        }
        Command::Migrate { status } => {
            let settings = Settings::load()?;
            let mode = if status {
                MigrateMode::Status
            } else {
                MigrateMode::Apply
            };
            let names = Store::migrate(&settings, mode).await?;
            if names.is_empty() {
                println!("up to date");
            }
            let verb = if status { "pending" } else { "applied" };
            for name in names {
                println!("{verb} {name}");
            }
            Ok(())
        }
        Command::MigrateStore { from, to } => {
            let settings = Settings::load()?;
            let source = Store::open_url(&settings, &from)
                .await
                .context("cannot open the source database")?;
            let target = Store::open_url(&settings, &to)
                .await
                .context("cannot open the target database")?;
            for (table, rows) in source.copy_to(&target).await? {
                println!("copied {rows} {table}");
            }
            Ok(())
        }
        Command::Bootstrap {
            account_id,
            account_name,
            owner_email,
            owner_name,
            token_name,
            json,
        } => {
            with_app(async |app| {
                let request = BootstrapRequest {
                    account_id,
                    account_name,
                    owner_email,
                    owner_name,
                    token_name,
                };
                let done = app.bootstrap.issue_trusted(request).await?;
                let secret = done.issued.secret.expose();
                if json {
                    let body = serde_json::json!({
                        "userToken": secret,
                        "token_id": done.issued.token.id,
                        "account_id": done.account_id,
                        "user_id": done.user_id,
                        "created_account": done.created_account,
                    });
                    println!("{body}");
                } else {
                    if done.created_account {
                        eprintln!("created account {}", done.account_id);
                    } else {
                        eprintln!(
                            "issued a break-glass owner token for account {}",
                            done.account_id
                        );
                    }
                    eprintln!(
                        "admin token {} (shown once; store it now):",
                        done.issued.token.id
                    );
                    println!("{secret}");
                }
                Ok(())
            })
            .await
        }
    }
}
