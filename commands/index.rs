//! `dupcheck index`: create, once, the indexes the job collection needs,
//! and list what it has.
//!
//! Safe to run again: what is there is reported, never replaced or
//! dropped. Creating an index on a large collection takes a while and
//! some load; `--dry-run` shows the plan first.

use std::path::PathBuf;

use bson::Bson;
use clap::Args as ClapArgs;

use dupcheck::indexes::{self, Duplicates, Existing, State, Wanted, WANTED};
use dupcheck::{Error, ErrorKind};

use crate::common::{self, shown, Outcome, Server};
use crate::{outln, say};

const EXIT_STATUS: &str = "\
Exit status:
  0  all three indexes are there (created now, or already)
  1  some index is not there: duplicate job ids, an index on the same
     field with other options, a name taken, or (--dry-run) still to do
  2  could not do what was asked: unreachable server, refused
     credentials, a failed index build";

/// Create the indexes on job_id, created_at and checkpoint.processed_files
///
/// A unique index on job_id (every save and lookup by job; one document per
/// job), a descending index on created_at (scan --since, --limit) and an
/// index on checkpoint.processed_files (which jobs recorded a file).
/// Existing indexes are reported, never replaced; the unique index is not
/// built while job ids are shared, and those ids are listed. Needs a user
/// allowed to create indexes (createIndex, as in readWrite or dbAdmin),
/// and the collection to exist: a mistyped --db or --collection is refused
/// rather than created.
#[derive(ClapArgs, Debug)]
#[command(after_help = EXIT_STATUS)]
pub struct Args {
    /// Show what would be created, and create nothing
    #[arg(long)]
    dry_run: bool,

    /// Refused: indexes live in a server, not in a dump file
    #[arg(long, value_name = "PATH", hide = true)]
    file: Option<PathBuf>,

    #[command(flatten)]
    server: Server,
}

pub fn run(args: Args) -> Outcome {
    if let Some(path) = &args.file {
        return Outcome::Failed(Error::usage(format!(
            "dupcheck index needs a server: indexes live in MongoDB, not in a dump file \
             ({}); give --uri instead",
            path.display()
        )));
    }
    common::runtime()
        .and_then(|rt| rt.block_on(index(&args)))
        .into()
}

/// How the indexes ended up.
#[derive(Default)]
struct Tally {
    not_there: usize,
    failed: usize,
}

async fn index(args: &Args) -> dupcheck::Result<Outcome> {
    let jobs = args.server.connect().await?;
    let ns = jobs.collection.namespace();
    // Output goes to stdout as it comes; a reader that goes away (`| head`)
    // stops none of the work, and the exit status is the work's.
    let existing = indexes::list(&jobs).await?;
    outln!("{}:", shown(&ns.to_string()));

    let mut tally = Tally::default();
    for wanted in &WANTED {
        let line = |what: String| {
            outln!("  {:<32} {what}", label(wanted));
        };
        match indexes::assess(wanted, &existing) {
            State::Present(name) if name == wanted.name() => line("already present".into()),
            State::Present(name) => line(format!("already present, as {name}")),
            State::OtherOptions(e) => {
                tally.not_there += 1;
                line(format!(
                    "not created: {} indexes the same field with other options, {}; \
                     left as it is",
                    shown(&e.name),
                    shown(&e.describe())
                ));
            }
            State::NameTaken(e) => {
                tally.not_there += 1;
                line(format!(
                    "not created: its name is taken by another index, {}; left as it is",
                    shown(&e.describe())
                ));
            }
            State::Missing => {
                if wanted.unique {
                    let shared = indexes::duplicate_job_ids(&jobs).await?;
                    if !shared.is_empty() {
                        tally.not_there += 1;
                        line(duplicates(&shared));
                        continue;
                    }
                }
                if args.dry_run {
                    tally.not_there += 1;
                    line(format!("would create {}", wanted.describe()));
                    continue;
                }
                match indexes::create(&jobs, wanted).await {
                    Ok(()) => line("created".into()),
                    Err(e) => {
                        line("not created (see below)".into());
                        say!("{}: {}", wanted.name(), shown(&e.message));
                        if e.kind == ErrorKind::Conflict {
                            tally.not_there += 1;
                        } else {
                            tally.failed += 1;
                        }
                    }
                }
            }
        }
    }

    let now = if args.dry_run {
        existing
    } else {
        indexes::list(&jobs).await?
    };
    outln!(
        "\nindexes of {}{}:",
        shown(&ns.to_string()),
        if args.dry_run { "" } else { " now" }
    );
    print_list(&now);

    Ok(if tally.failed > 0 {
        Outcome::Incomplete
    } else if tally.not_there > 0 {
        Outcome::Found
    } else {
        Outcome::Clean
    })
}

fn label(wanted: &Wanted) -> String {
    if wanted.unique {
        format!("{} (unique)", wanted.name())
    } else {
        wanted.name()
    }
}

fn duplicates(shared: &Duplicates) -> String {
    let mut text = format!(
        "not created: {} job id{} each on more than one document \
         (one document per job is needed first):",
        shared.total,
        if shared.total == 1 { " is" } else { "s are" }
    );
    for (id, n) in &shared.ids {
        let id = match id {
            Bson::String(s) => shown(s).into_owned(),
            Bson::Null => "(no job_id)".to_owned(),
            other => shown(&other.clone().into_relaxed_extjson().to_string()).into_owned(),
        };
        text.push_str(&format!("\n      {id}  ({n} documents)"));
    }
    let more = shared.total.saturating_sub(shared.ids.len() as u64);
    if more > 0 {
        text.push_str(&format!("\n      ... and {more} more"));
    }
    text
}

fn print_list(list: &[Existing]) {
    let names: Vec<_> = list.iter().map(|e| shown(&e.name)).collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    for (e, name) in list.iter().zip(&names) {
        outln!("  {name:<width$}  {}", shown(&e.describe()));
    }
}
