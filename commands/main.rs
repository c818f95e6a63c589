//! The `dupcheck` command: flags in, library calls, rendering out.
//!
//! Each subcommand lives in its own file with one `run` entry. Everything
//! a person reads goes through [`common`]: results on stdout, messages on
//! stderr behind a `dupcheck:` prefix, so `--format json` and CSV stay
//! clean for scripts.

mod common;
mod export;
mod index;
mod repair;
mod restore;
mod scan;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EXIT_STATUS: &str = "\
Exit status:
  0  ran, and found nothing wrong
  1  ran, and found something (findings, or jobs left unrepaired)
  2  could not do what was asked: bad flags, unreachable server, refused
     credentials, unreadable input; anything else printed says how far
     it got";

/// Find, repair and prevent duplicate processing in the bulk job records an
/// OCR pipeline keeps in MongoDB.
#[derive(Parser)]
#[command(name = "dupcheck", version, after_help = EXIT_STATUS)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Scan(scan::Args),
    Repair(repair::Args),
    Restore(restore::Args),
    Export(export::Args),
    Index(index::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return flag_error(e),
    };
    let outcome = match cli.command {
        Command::Scan(args) => scan::run(args),
        Command::Repair(args) => repair::run(args),
        Command::Restore(args) => restore::run(args),
        Command::Export(args) => export::run(args),
        Command::Index(args) => index::run(args),
    };
    common::finish(outcome)
}

/// Help and version go to stdout with status 0; a flag error goes to
/// stderr with status 2, with any connection string's password masked
/// (the parser echoes a stray argument as it was typed).
fn flag_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    use std::io::Write;

    let text = dupcheck::connect::redact_all(&e.render().to_string());
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = write!(std::io::stdout(), "{text}");
            ExitCode::from(0)
        }
        _ => {
            let _ = write!(std::io::stderr(), "{text}");
            ExitCode::from(2)
        }
    }
}
