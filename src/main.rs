//! The `veil` binary: parse the command line, start logging, run the
//! subcommand, map the outcome to an exit code (0 ok, 1 failure, 2 bad
//! configuration) and print the fix under an error. SIGINT/SIGTERM ask `run` to finish its batch and stop;
//! a second signal exits at once.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use veil::cli::{Cli, Command};
use veil::{commands, outcome, telemetry};

fn main() -> ExitCode {
    let cli = match lambda_bootstrap() {
        true => Cli::parse_from(["veil", "lambda"]),
        false => Cli::parse(),
    };
    // Before any thread starts: the environment is not thread-safe.
    veil::keyring::take_env_key();
    telemetry::init(cli.log_format);
    let runtime = match runtime(&cli.command) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

/// The binary started by Lambda as `bootstrap`, with no arguments: it
/// serves the Runtime API (`veil lambda`).
fn lambda_bootstrap() -> bool {
    std::env::args_os().len() == 1
        && std::env::var_os(commands::lambda::RUNTIME_API_ENV).is_some_and(|api| !api.is_empty())
}

/// One thread unless `run --worker-threads` asks for more: every other
/// command is a handful of calls, and one thread spends the least CPU per
/// event (no wake-ups passed between threads).
fn runtime(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    match command {
        Command::Run(args) if args.worker_threads > 1 => {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(usize::from(args.worker_threads))
                .enable_all()
                .build()
        }
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
}

async fn run(cli: Cli) -> ExitCode {
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    let result = match cli.command {
        Command::Run(args) => commands::run(args, shutdown).await,
        Command::Lambda(args) => commands::lambda::lambda(args, shutdown).await,
        Command::Reveal(args) => commands::reveal::reveal(args).await,
        Command::Keys(command) => commands::keys::keys(command).await,
        Command::Keygen(args) => commands::keys::new(args).await,
        Command::Rekey(args) => commands::rekey(args).await,
        Command::Migrate(args) => commands::migrate(args).await,
        Command::Doctor(args) => commands::doctor::doctor(args).await,
        Command::Seed(args) => commands::seed(args).await,
        Command::Maintain(args) => commands::maintain(args).await,
        Command::Find(args) => commands::find::find(args).await,
        Command::Forget(args) => commands::forget::forget(args).await,
        Command::Contract(command) => commands::contract::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", veil::error::error_chain(&error));
            if let Some(fix) = outcome::fix_for(&error, &commands::FIXERS) {
                eprintln!("fix: {fix}");
            }
            ExitCode::from(outcome::exit_code(&error))
        }
    }
}

async fn watch_signals(shutdown: CancellationToken) {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                return;
            }
        };
    for round in 0..2 {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        if round == 0 {
            tracing::info!("shutdown requested: finishing the batch in hand");
            shutdown.cancel();
        } else {
            eprintln!("second signal: exiting now (unrecorded messages return to the queue)");
            std::process::exit(130);
        }
    }
}
