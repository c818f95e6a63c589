//! `dupcheck restore`: put a job's document back from a backup that
//! `dupcheck repair` wrote.
//!
//! The check and the write are the library's (`backup::restore`): the job
//! is put back only if it is still exactly as the repair left it, by one
//! conditional replace, after its current state is itself backed up.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args as ClapArgs;

use dupcheck::backup::{self, Restored};
use dupcheck::{repair, ErrorKind};

use crate::common::{self, out_err, shown, Outcome, Quiet, Server};
use crate::say;

const AFTER_HELP: &str = "\
Exit status:
  0  every backup was put back (or the job already was as in it)
  1  some job was left as it is because it changed since its repair
  2  something failed: bad flags, unreadable backup, a backup whose header
     names another job than the document it holds (unless --force),
     unreachable server";

/// Put a job's document back as a repair's backup holds it
#[derive(ClapArgs, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Backup files written by dupcheck repair (or by an earlier restore)
    #[arg(value_name = "BACKUP_FILE", required = true)]
    files: Vec<PathBuf>,

    /// Restore even if the job changed since its repair (the changes are
    /// lost, though the current state is backed up first), no longer
    /// exists, the backup names another database or collection, or its
    /// header names another job than the document it holds
    #[arg(long)]
    force: bool,

    /// Where to back up the state that a restore replaces
    #[arg(long, value_name = "DIR", default_value = "dupcheck-backups")]
    backup_dir: PathBuf,

    #[command(flatten)]
    server: Server,
}

pub fn run(args: Args) -> Outcome {
    let rt = match common::runtime() {
        Ok(rt) => rt,
        Err(e) => return Outcome::Failed(e),
    };
    let jobs = match rt.block_on(args.server.connect()) {
        Ok(jobs) => jobs,
        Err(e) => return Outcome::Failed(e),
    };
    let (db, coll) = repair::namespace(&jobs);
    // A closed stdout (`| head`) must not stop the restores: what would
    // have been printed is dropped, and the exit status is the work's.
    let stdout = io::stdout();
    let mut out = Quiet::new(stdout.lock());
    let (mut refused, mut failed) = (0, 0);

    for file in &args.files {
        let file_name = file.display().to_string();
        let file_name = shown(&file_name);
        let saved = match backup::read(file) {
            Ok(saved) => saved,
            Err(e) => {
                say!("{}", shown(&e.message));
                failed += 1;
                continue;
            }
        };
        if let Some(why) = saved.mismatch() {
            if args.force {
                say!("{file_name}: {}; restoring anyway (--force)", shown(&why));
            } else {
                say!(
                    "{file_name}: {}; the file was edited or is damaged, not restored \
                     (--force restores the document it holds anyway)",
                    shown(&why)
                );
                failed += 1;
                continue;
            }
        }
        if (saved.db != db || saved.collection != coll) && !args.force {
            say!(
                "{file_name}: taken from {}.{}, not {db}.{coll}; pass --db and --collection, \
                 or --force to restore here anyway",
                shown(&saved.db),
                shown(&saved.collection)
            );
            refused += 1;
            continue;
        }
        let done = rt.block_on(backup::restore(
            &jobs,
            &saved,
            args.force,
            &args.backup_dir,
            repair::ATTEMPTS,
        ));
        let name = saved.name();
        let name = shown(&name);
        let line = match done {
            Ok(Restored::Restored { backup }) => format!(
                "restored job {name} from {file_name}; the state it replaced is backed up in {}",
                shown(&backup.display().to_string())
            ),
            Ok(Restored::Inserted) => {
                format!("restored job {name} from {file_name} (it was gone)")
            }
            Ok(Restored::AlreadyThere) => {
                format!("job {name} already is as in {file_name}; nothing written")
            }
            Err(e) => {
                say!("{file_name}: {}", shown(&e.message));
                match e.kind {
                    ErrorKind::Conflict | ErrorKind::NotFound => refused += 1,
                    _ => failed += 1,
                }
                continue;
            }
        };
        if let Err(e) = writeln!(out, "{line}").map_err(out_err) {
            return Outcome::Failed(e);
        }
    }
    if let Err(e) = common::flush(&mut out) {
        return Outcome::Failed(e);
    }
    match (failed, refused) {
        (0, 0) => Outcome::Clean,
        (0, _) => Outcome::Found,
        _ => Outcome::Incomplete,
    }
}
