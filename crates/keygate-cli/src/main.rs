//! The `keygate` binary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use keygate_server::{auth, keyfiles, telemetry, Application, Config};
use uuid::Uuid;

/// The longest lifetime `keygate token` mints (GitLab's limit for access tokens): a
/// token that never expires can be stopped only by changing the token secret.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Operator checks (`keygate doctor`).
mod doctor;

/// mimalloc: per-thread free lists; glibc's malloc/free were about 13 % of a gateway call.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "keygate",
    version,
    about = "Vault and signing gateway for exchange API keys"
)]
struct Cli {
    /// TOML configuration file (KEYGATE_* environment variables override it).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Run database migrations and exit.
    Migrate,
    /// Print a token the local server accepts; its issue is recorded in the audit log.
    Token {
        /// User id (UUID) the token acts for.
        #[arg(long)]
        user: Option<Uuid>,
        /// Mark the token as an admin's.
        #[arg(long)]
        admin: bool,
        /// `authenticated` (default) or `service_role`.
        #[arg(long, default_value = "authenticated")]
        role: String,
        /// Lifetime, e.g. 1h, 15m, 7d (at most 365d).
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
    },
    /// Print a one-time sign-in URL for the web console (last line of output).
    LoginLink {
        /// User id (UUID) to sign in.
        #[arg(long)]
        user: Uuid,
        /// Sign in as an admin.
        #[arg(long)]
        admin: bool,
        /// How long the link stays valid (at most 24h).
        #[arg(long, default_value = "10m")]
        ttl: humantime::Duration,
        /// Public base URL of keygate (default: from the listen address).
        #[arg(long)]
        base_url: Option<String>,
    },
    /// Write a consistent snapshot of the database (secrets stay sealed; no key files).
    Backup {
        /// Backup file to write (mode 0600; replaced atomically when complete).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into an empty database (KEYGATE_DATABASE_URL); needs the master key.
    Restore {
        /// Backup file to read.
        #[arg(long)]
        from: PathBuf,
    },
    /// Master-key commands.
    MasterKey {
        #[command(subcommand)]
        command: MasterKeyCommand,
    },
    /// Crypto-shred a user: destroy every data key of theirs, so none of their secrets can
    /// ever be decrypted again (metadata and audit remain). Irreversible; audited.
    Shred {
        /// The user (UUID) whose data keys to destroy.
        #[arg(long)]
        user: Uuid,
    },
    /// Audit log commands.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Check configuration, file modes, database, migrations, Redis, TLS, master key and
    /// clock; one line per check (ok / warn / fail), exit 1 if any check fails.
    Doctor {
        /// Exchange server-time endpoint (JSON with `serverTime` in ms) for the clock check.
        #[arg(long, default_value = "https://api.binance.com/api/v3/time")]
        time_url: String,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) generated from this command-line definition.
    Man,
    /// Print the configuration reference (docs/CONFIGURATION.md) generated from the code.
    ConfigReference,
}

#[derive(Subcommand)]
enum MasterKeyCommand {
    /// Rewrap every user data key under the new master key. Supply the new key as usual
    /// (KEYGATE_MASTER_KEY or master.key) and the old one as KEYGATE_MASTER_KEY_PREVIOUS or
    /// master.key.previous. Resumable: run again after an interruption; audited. When it
    /// reports completion the database no longer needs the old key, but backups taken
    /// before the rotation restore only with it: take a new backup, and keep the old key
    /// while you keep the older backups. With KEYGATE_KEY_PROVIDER=openbao
    /// it rotates the Transit key (unless a rewrap is already pending) and rewraps inside
    /// Transit.
    Rotate {
        /// Data keys rewrapped per batch.
        #[arg(long, default_value_t = 100)]
        batch_size: i64,
        /// Stop after this many batches (run again to continue).
        #[arg(long)]
        max_batches: Option<u64>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the audit chain; exit 1 and name the first broken link if it is broken.
    Verify,
    /// Print every audit event as JSON lines (oldest first), chain fields included.
    Export,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("keygate: {msg}");
    ExitCode::FAILURE
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve) {
        // before any key is read: a crash of `master-key rotate`, `restore`, `doctor` and
        // the rest writes no core file (serve hardens itself, memory locking included)
        keygate_server::hardening::no_core_dumps();
    }
    // Commands that need no configuration.
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "keygate",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            };
        }
        Command::ConfigReference => {
            print!("{}", keygate_server::config_reference::render_markdown());
            return ExitCode::SUCCESS;
        }
        Command::Doctor { time_url } => {
            let config = Config::load(cli.config.as_deref()).map_err(|e| e.to_string());
            let checks = doctor::run(config, cli.config.as_deref(), time_url).await;
            for c in &checks {
                println!("{c}");
            }
            return if checks.iter().any(|c| c.level == doctor::Level::Fail) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
        _ => {}
    }
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Some(f) = cli.log_format {
        config.log_format = f;
    }
    telemetry::init(&config.log_format);
    match cli.command {
        Command::Serve => {
            // Before any key is read: no core dumps, not dumpable, memory locked.
            keygate_server::hardening::harden();
            let app = match Application::build(config).await {
                Ok(a) => a,
                Err(e) => return fail(e),
            };
            tracing::info!(addr = %app.local_addr(), "keygate listening");
            if let Err(e) = app.run_until(keygate_server::shutdown_signal()).await {
                return fail(e);
            }
            ExitCode::SUCCESS
        }
        Command::Migrate => match keygate_server::prepare(config).await {
            Ok(s) => {
                println!(
                    "migrations applied (schema version {})",
                    s.store.binary_schema_version()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Token {
            user,
            admin,
            role,
            ttl,
        } => {
            if role != "authenticated" && role != "service_role" {
                return fail("--role must be authenticated or service_role");
            }
            if user.is_none() && role != "service_role" {
                return fail("--user is required unless --role service_role");
            }
            if let Err(e) = keyfiles::ensure_data_dir(&config.data_dir) {
                return fail(e);
            }
            let secret = match keyfiles::load_or_create_jwt_secret(&config) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let ttl: Duration = ttl.into();
            if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
                return fail("--ttl must be between 1s and 365d");
            }
            // the token is shown only once its issue is in the audit chain
            let state = match keygate_server::prepare_tool(config).await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let session_id = Uuid::new_v4();
            // with what the server requires of a token (`iss`, `aud`), so that it accepts it
            let scope = auth::Scope::of(&state.config);
            let token =
                match auth::mint_scoped(&secret, user, admin, &role, ttl, &scope, session_id) {
                    Ok(t) => t,
                    Err(e) => return fail(e),
                };
            let issued = keygate_server::issue::Issued::Token {
                user,
                role: &role,
                admin,
                session_id,
                ttl,
            };
            match keygate_server::issue::record(&state, issued).await {
                Ok(()) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!(
                    "the token's issue could not be audited, so it is not shown: {e}"
                )),
            }
        }
        Command::LoginLink {
            user,
            admin,
            ttl,
            base_url,
        } => {
            if let Err(e) = keyfiles::ensure_data_dir(&config.data_dir) {
                return fail(e);
            }
            let url = match keygate_server::ui::create_login_link(
                &config,
                user,
                admin,
                ttl.into(),
                base_url.as_deref(),
            )
            .await
            {
                Ok(url) => url,
                Err(e) => return fail(e),
            };
            // the link is shown only once its issue is in the audit chain (unshown, the
            // stored link is of no use: only its hash is kept)
            let state = match keygate_server::prepare_tool(config).await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let issued = keygate_server::issue::Issued::LoginLink {
                user,
                admin,
                ttl: ttl.into(),
            };
            match keygate_server::issue::record(&state, issued).await {
                Ok(()) => {
                    eprintln!("one-time sign-in link (works once, expires in {ttl}):");
                    println!("{url}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!(
                    "the link's issue could not be audited, so it is not shown: {e}"
                )),
            }
        }
        Command::Backup { out } => {
            match keygate_server::backup::backup_to_file(&config, &out).await {
                Ok(s) => {
                    println!(
                        "backup written to {}: {}",
                        out.display(),
                        keygate_server::backup::describe(&s)
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Restore { from } => {
            match keygate_server::backup::restore_from_file(&config, &from).await {
                Ok(r) if r.audit.ok => {
                    println!(
                        "restored {}; audit chain verified ({} events)",
                        keygate_server::backup::describe(&r.restored),
                        r.audit.events_checked
                    );
                    if r.rotating {
                        println!("the backup is under the previous master key: run `keygate master-key rotate` (with both keys supplied) to move it onto the current one");
                    }
                    ExitCode::SUCCESS
                }
                Ok(r) => fail(format!(
                    "restored {}, but the audit chain does not verify: {} at seq {}",
                    keygate_server::backup::describe(&r.restored),
                    r.audit.problem.unwrap_or_default(),
                    r.audit.first_broken_seq.unwrap_or_default()
                )),
                Err(e) => fail(e),
            }
        }
        Command::MasterKey {
            command:
                MasterKeyCommand::Rotate {
                    batch_size,
                    max_batches,
                },
        } => {
            let transit = config.key_provider == keygate_server::KeyProviderKind::OpenBao;
            let state = match keygate_server::prepare_existing(config).await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            match keygate_server::master_key::rotate(&state, batch_size, max_batches).await {
                Ok(r) if r.already_current => {
                    println!(
                        "nothing to rotate: every data key is already on the current master key"
                    );
                    ExitCode::SUCCESS
                }
                Ok(r) if r.complete => {
                    println!(
                        "master-key rotation complete: {} data key(s) rewrapped in {} batch(es); {}",
                        r.rewrapped,
                        r.batches,
                        if transit {
                            "everything is on the latest Transit key version. Take a new backup now: backups taken before this rotation need the older versions, so retire them in OpenBao (min_decryption_version) only once no such backup is kept"
                        } else {
                            "the previous master key is no longer needed by the database. Take a new backup now: backups taken before this rotation restore only with the previous key (as KEYGATE_MASTER_KEY_PREVIOUS), so keep it for as long as you keep them"
                        }
                    );
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    println!(
                        "master-key rotation paused after {} batch(es) ({} data key(s) rewrapped); run it again to continue",
                        r.batches, r.rewrapped
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Shred { user } => {
            let state = match keygate_server::prepare_existing(config).await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            match keygate_server::shred::shred_user(&state, user).await {
                Ok(0) => {
                    println!("user {user} has no data keys left to destroy (unknown or already shredded)");
                    ExitCode::SUCCESS
                }
                Ok(n) => {
                    println!("user {user} shredded: {n} data key version(s) destroyed; their secrets can no longer be decrypted");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Audit {
            command: AuditCommand::Export,
        } => {
            let state = match keygate_server::prepare_existing(config).await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let mut f = keygate_storage::AuditFilter::default();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            loop {
                let rows = match state
                    .store
                    .export_audit(keygate_storage::Actor::service(), &f, 1000)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => return fail(e),
                };
                let Some(last) = rows.last().map(|r| r.seq) else {
                    break;
                };
                for r in rows {
                    if serde_json::to_writer(&mut out, &r).is_err()
                        || std::io::Write::write_all(&mut out, b"\n").is_err()
                    {
                        return fail("cannot write to stdout");
                    }
                }
                f.after_seq = Some(last);
            }
            if std::io::Write::flush(&mut out).is_err() {
                return fail("cannot write to stdout");
            }
            ExitCode::SUCCESS
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            let state = match keygate_server::prepare_existing(config).await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            match state
                .store
                .verify_audit_chain(state.chain_key.as_ref())
                .await
            {
                Ok(r) => {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                    if r.ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => fail(e),
            }
        }
        Command::Doctor { .. }
        | Command::Completions { .. }
        | Command::Man
        | Command::ConfigReference => {
            unreachable!("handled before the configuration is loaded")
        }
    }
}
