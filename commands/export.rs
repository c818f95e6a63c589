//! `dupcheck export`: re-export a job's reports from its deduplicated
//! results, in the files and layout the OCR system's aggregator writes.
//!
//! Holds one job in memory at a time (with `--update-job`, its clean copy
//! too, for the backup); reports are streamed to disk. One job's failure
//! is reported and the others still go; the exit status remembers it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chrono::Utc;
use clap::{Args as ClapArgs, ValueEnum};

use dupcheck::dedupe::{Keep, Policy};
use dupcheck::export::{self, Exported, Format, Options, UpdateJob};
use dupcheck::{dump, Error, ErrorKind};

use crate::common::{self, plural, shown, Outcome, Source};
use crate::{outln, say};

const EXIT_STATUS: &str = "\
Exit status:
  0  every job exported (and its summary updated, with --update-job)
  1  every job exported, but some job's summary was not updated: it
     changed since it was read, or has no final summary yet
  2  some job could not be exported: unknown job, a job id that cannot
     name a folder, reports already there without --force, unwritable
     folder, unreachable server, bad dump";

/// Re-export a job's reports from its deduplicated results
///
/// Writes <OUT>/<job_id>/<job_id>_results.json, _results.csv,
/// _results.txt, individual_files/ and <job_id>_bulk_ocr_results.zip in
/// the layout the OCR system's aggregator writes, with one result or error
/// per file (files told apart by path, not base name) and statistics
/// recomputed. Each file is written under a temporary name and renamed
/// into place when whole.
#[derive(ClapArgs, Debug)]
#[command(after_help = EXIT_STATUS)]
pub struct Args {
    /// The job to export (its job_id); repeat for several
    #[arg(long = "job", value_name = "ID", required = true)]
    jobs: Vec<String>,

    /// Folder holding one folder of reports per job
    #[arg(long, value_name = "DIR", default_value = "bulk_results")]
    out: PathBuf,

    /// What to write, comma-separated: json, csv, txt, individual (the
    /// individual_files folder), zip. The ZIP always holds all the others
    #[arg(long, value_name = "LIST", value_delimiter = ',',
          default_value = "json,csv,txt,individual,zip", value_parser = format_name)]
    format: Vec<Format>,

    /// Replace reports that already exist
    #[arg(long)]
    force: bool,

    /// Which of a file's several results to keep
    #[arg(long, value_enum, default_value_t = KeepArg::First)]
    keep: KeepArg,

    /// Also write the clean counts, statistics and report paths into the
    /// job's final summary (its `results` field), after a backup, and only
    /// if no worker changed the job since it was read
    #[arg(long, conflicts_with = "file")]
    update_job: bool,

    /// Where --update-job puts the backup of each job it changes
    #[arg(long, value_name = "DIR", default_value = "dupcheck-backups")]
    backup_dir: PathBuf,

    /// The time the reports say they were generated (RFC 3339), instead
    /// of now: for reproducible output
    #[arg(long, value_name = "TIME", env = "DUPCHECK_GENERATED_AT", hide = true)]
    generated_at: Option<String>,

    #[command(flatten)]
    source: Source,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KeepArg {
    /// The result recorded first, as the aggregator keeps
    First,
    /// The result recorded last
    Last,
    /// A success over an error, then higher confidence, then longer text
    Best,
}

fn format_name(name: &str) -> Result<Format, String> {
    Format::parse(name.trim()).ok_or_else(|| {
        format!("{name:?} is not a report format: json, csv, txt, individual or zip")
    })
}

/// How the run went, job by job.
#[derive(Default)]
struct Tally {
    failed: usize,
    not_updated: usize,
}

pub fn run(args: Args) -> Outcome {
    let options = match options(&args) {
        Ok(o) => o,
        Err(e) => return Outcome::Failed(e),
    };

    // A job id that cannot name a folder is that job's failure: the others
    // still go.
    let mut tally = Tally::default();
    let mut wanted: Vec<&str> = Vec::new();
    for id in &args.jobs {
        match export::check_job_id(id) {
            Err(e) => {
                say!("{}", shown(&e.message));
                tally.failed += 1;
            }
            Ok(()) if wanted.contains(&id.as_str()) => {}
            Ok(()) => wanted.push(id),
        }
    }
    if wanted.is_empty() {
        return Outcome::Incomplete;
    }

    let run = match &args.source.file {
        Some(path) => from_file(path, &wanted, &options, &mut tally),
        None => common::runtime()
            .and_then(|rt| rt.block_on(from_server(&args, &wanted, &options, &mut tally))),
    };
    match run {
        Err(e) => Outcome::Failed(e),
        Ok(()) if tally.failed > 0 => Outcome::Incomplete,
        Ok(()) if tally.not_updated > 0 => Outcome::Found,
        Ok(()) => Outcome::Clean,
    }
}

fn options(args: &Args) -> dupcheck::Result<Options> {
    let generated_at = match args.generated_at.as_deref() {
        Some(spec) => export::parse_generated_at(spec)?,
        None => Utc::now().naive_utc(),
    };
    let keep = match args.keep {
        KeepArg::First => Keep::First,
        KeepArg::Last => Keep::Last,
        KeepArg::Best => Keep::Best,
    };
    Ok(Options {
        out: args.out.clone(),
        formats: args.format.clone(),
        force: args.force,
        generated_at,
        policy: Policy {
            keep,
            keep_errors: false,
        },
    })
}

/// Exports each of `wanted` (distinct, valid job ids) from the server.
async fn from_server(
    args: &Args,
    wanted: &[&str],
    options: &Options,
    tally: &mut Tally,
) -> dupcheck::Result<()> {
    let jobs = args.source.server.connect().await?;
    let update = args.update_job.then(|| UpdateJob {
        backup_dir: args.backup_dir.clone(),
    });
    for id in wanted {
        let done = export::export_from_server(&jobs, id, options, update.as_ref()).await;
        render(id, done, tally);
    }
    Ok(())
}

/// Exports each of `wanted` (distinct, valid job ids) from a dump file.
fn from_file(
    path: &Path,
    wanted: &[&str],
    options: &Options,
    tally: &mut Tally,
) -> dupcheck::Result<()> {
    let wanted_set: HashSet<&str> = wanted.iter().copied().collect();
    let mut done: HashSet<String> = HashSet::new();
    let mut unreadable = 0u64;
    let file_name = path.display().to_string();
    let file_name = shown(&file_name);

    dump::read(path, |place, doc| {
        let doc = match doc {
            Ok(doc) => doc,
            Err(e) => {
                say!("{file_name}: {place}: {}", shown(&e.message));
                unreadable += 1;
                return;
            }
        };
        let Ok(id) = doc.get_str("job_id").map(str::to_owned) else {
            return;
        };
        if !wanted_set.contains(id.as_str()) {
            return;
        }
        if !done.insert(id.clone()) {
            say!(
                "job {}: found again at {place} of {file_name}; kept the first, skipped this one",
                shown(&id)
            );
            tally.failed += 1;
            return;
        }
        render(&id, export::export_document(doc, options), tally);
    })?;

    for id in wanted {
        if !done.contains(*id) {
            let also = match unreadable {
                0 => String::new(),
                n => format!(" ({n} records in it could not be read)"),
            };
            let e = Error::new(
                ErrorKind::NotFound,
                format!("job {id} not found in {file_name}{also}"),
            );
            render(id, Err(e), tally);
        }
    }
    Ok(())
}

/// One job's lines: what was written on stdout, what went wrong on stderr.
/// Stdout may be gone (`| head`): its lines are then dropped, and the work
/// and the exit status stay the same.
fn render(id: &str, done: dupcheck::Result<Exported>, tally: &mut Tally) {
    let exported = match done {
        Ok(e) => e,
        Err(e) => {
            tally.failed += 1;
            let prefix = format!("job {id}: ");
            let message = match e.message.strip_prefix(&prefix) {
                // A record dedupe cannot make sense of: says what is wrong.
                Some(what) if e.kind == ErrorKind::Input => format!("{prefix}skipped: {what}"),
                _ if e.message.contains(id) => e.message,
                _ => format!("{prefix}{}", e.message),
            };
            say!("{}", shown(&message));
            return;
        }
    };
    let c = &exported.report_summary;
    let mut left_out = Vec::new();
    if c.dropped_results > 0 {
        left_out.push(plural(c.dropped_results as u64, "duplicate result"));
    }
    if c.dropped_errors > 0 {
        left_out.push(plural(
            c.dropped_errors as u64,
            "duplicate or superseded error",
        ));
    }
    let left_out = match left_out.is_empty() {
        true => String::new(),
        false => format!("; left out {}", left_out.join(" and ")),
    };
    let dir = exported.written.dir.display().to_string();
    let files: Vec<String> = exported
        .written
        .files
        .iter()
        .map(|(format, _)| match format {
            Format::Individual => format!("{} ({})", export::INDIVIDUAL_DIR, c.results),
            other => other.name().to_owned(),
        })
        .collect();
    outln!(
        "{}: {} and {}{left_out}\n  {}: {}",
        shown(&c.job_id),
        plural(c.results as u64, "result"),
        plural(c.errors as u64, "error"),
        shown(&dir),
        files.join(", ")
    );
    match exported.update {
        None => {}
        Some(Ok(backup)) => {
            let backup = backup.display().to_string();
            outln!("  job summary updated; backup at {}", shown(&backup));
        }
        Some(Err(e)) => {
            say!(
                "job {}: reports written, job summary not updated: {}",
                shown(id),
                shown(&e.message)
            );
            if matches!(e.kind, ErrorKind::Conflict | ErrorKind::Input) {
                tally.not_updated += 1;
            } else {
                tally.failed += 1;
            }
        }
    }
}
