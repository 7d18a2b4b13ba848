//! approval-bridge: forwards OpenClaw exec approvals to the owner's chat DMs as one-tap
//! prompts. `run` is the daemon, `check` verifies a configuration end to end, `probe`
//! follows a harmless approval through the running daemon.

mod check;
mod config;
mod http;
mod probe;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "OpenClaw exec approvals as one-tap prompts in your chat DMs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge until SIGINT/SIGTERM.
    Run {
        /// Path to the TOML configuration (see config.example.toml).
        #[arg(long, short, env = "APPROVAL_BRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Validate the configuration, connect to the gateway and every channel, report
    /// each problem with its fix. Exits non-zero if anything is wrong.
    Check {
        #[arg(long, short, env = "APPROVAL_BRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Ask the running bridge (through its [http] listener) to raise a harmless approval
    /// through the gateway and follow it: gateway accepted, prompt delivered on each
    /// channel, an owner's tap, resolved. Exits non-zero naming the broken hop.
    Probe {
        #[arg(long, short, env = "APPROVAL_BRIDGE_CONFIG")]
        config: PathBuf,
        /// Stop once every prompt is delivered; the approval expires unanswered.
        #[arg(long)]
        no_tap: bool,
    },
}

fn main() -> ExitCode {
    // teloxide, tokio-tungstenite and friends bring rustls with two crypto providers;
    // pick one for the whole process before any TLS connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run { config } => runtime.block_on(async {
            let cfg = config::Config::load(&config)?;
            run::init_logging(&cfg.log)?;
            run::run(cfg).await
        }),
        Command::Check { config } => runtime.block_on(check::check(&config)),
        Command::Probe { config, no_tap } => runtime.block_on(probe::probe(&config, !no_tap)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
