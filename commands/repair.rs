//! `dupcheck repair`: dedupe jobs' records in place, a backup first.
//!
//! The library's `repair` module does the work and holds the safety model;
//! this file chooses the jobs, asks for confirmation, and renders each
//! job's plan and outcome as it comes, then a summary. Jobs are read one at
//! a time, so memory holds one job's document however many are repaired.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;

use bson::Bson;
use chrono::Utc;
use clap::{ArgGroup, Args as ClapArgs, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use dupcheck::connect::Jobs;
use dupcheck::dedupe::{Keep, Policy};
use dupcheck::digest::id_text;
use dupcheck::repair::{self, Candidate, JobRepair, Options, Plan, Repairer, Verdict};
use dupcheck::select::Selection;
use dupcheck::{window, Error};

use crate::common::{self, out_err, plural, shown, Outcome, Quiet, Server};
use crate::say;

const AFTER_HELP: &str = "\
Safety:
  Each job is written to a backup file (Extended JSON, restorable with
  `dupcheck restore FILE`) before it is changed, and changed by one update
  that applies only if the job is still as it was read. A job that changed
  in between is read and planned again. Running jobs are left alone unless
  --include-running. Repairing a repaired job changes nothing.

Exit status:
  0  every selected job is consistent now (repaired, or was already)
  1  some job was left as it is: a dry run with something to do, a running
     or malformed job, or the confirmation was declined
  2  something failed: bad flags, unreachable server, a job that could not
     be backed up or written (each is reported)";

/// How many removed entries the text plan lists per job.
const LISTED: usize = 20;

/// Dedupe jobs' records in place: one result and one error per file,
/// counters recomputed, a backup of each job written first
#[derive(ClapArgs, Debug)]
#[command(after_help = AFTER_HELP)]
#[command(group(ArgGroup::new("which").required(true).args(["jobs", "since"])))]
pub struct Args {
    /// Repair this job (its job_id); repeat for several
    #[arg(long = "job", value_name = "ID")]
    jobs: Vec<String>,

    /// Repair every job created since WHEN that scan finds something wrong
    /// with: 90m, 24h, 7d, 2w, a date (2026-01-09) or an RFC 3339 time
    #[arg(long, value_name = "WHEN", conflicts_with = "jobs")]
    since: Option<String>,

    /// Which of a file's results to keep: the first recorded, the last, or
    /// the best (a success, then higher confidence, then longer text)
    #[arg(long, value_enum, default_value_t = KeepArg::First)]
    keep: KeepArg,

    /// Keep a file's error even when the file has a successful result
    #[arg(long)]
    keep_errors: bool,

    /// Print what would change, write nothing
    #[arg(long)]
    dry_run: bool,

    /// Do not ask for confirmation (needed when not on a terminal)
    #[arg(long, short = 'y')]
    yes: bool,

    /// Where to write the backup of each job before changing it
    #[arg(long, value_name = "DIR", default_value = "dupcheck-backups")]
    backup_dir: PathBuf,

    /// Repair jobs still processing too (their workers may be writing)
    #[arg(long)]
    include_running: bool,

    /// Output format of the plans and the summary
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    #[command(flatten)]
    server: Server,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KeepArg {
    First,
    Last,
    Best,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

pub fn run(args: Args) -> Outcome {
    if !args.dry_run && !args.yes && !terminal() {
        return Outcome::Failed(Error::usage(
            "repair writes to the database: pass --yes to go ahead, or --dry-run to see \
             the plan (without a terminal there is no one to ask)",
        ));
    }
    if !args.dry_run {
        if let Err(e) = backup_dir_usable(&args.backup_dir) {
            return Outcome::Failed(e);
        }
    }
    let options = Options {
        policy: Policy {
            keep: match args.keep {
                KeepArg::First => Keep::First,
                KeepArg::Last => Keep::Last,
                KeepArg::Best => Keep::Best,
            },
            keep_errors: args.keep_errors,
        },
        include_running: args.include_running,
        dry_run: args.dry_run,
        attempts: repair::ATTEMPTS,
        backup_dir: args.backup_dir.clone(),
    };
    let tally = common::runtime().and_then(|rt| rt.block_on(repair_all(&args, options)));
    match tally {
        Err(e) => Outcome::Failed(e),
        Ok(t) if t.failed > 0 => Outcome::Incomplete,
        Ok(t) if t.skipped > 0 || t.would_repair > 0 || t.declined => Outcome::Found,
        Ok(_) => Outcome::Clean,
    }
}

/// Refuses, before any job is read, a backup folder that is a file: every
/// job would fail on it.
fn backup_dir_usable(dir: &std::path::Path) -> dupcheck::Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(Error::usage(format!(
            "--backup-dir {} is not a directory",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

fn terminal() -> bool {
    io::stdin().is_terminal() && io::stderr().is_terminal()
}

/// What the run did, for the summary and the exit status.
#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    jobs: u64,
    repaired: u64,
    would_repair: u64,
    consistent: u64,
    skipped: u64,
    failed: u64,
    removed: u64,
    backups: u64,
    declined: bool,
}

async fn repair_all(args: &Args, options: Options) -> dupcheck::Result<Tally> {
    let selection = Selection {
        since: match &args.since {
            Some(spec) => Some(window::since(spec, Utc::now())?),
            None => None,
        },
        jobs: Vec::new(),
        statuses: Vec::new(),
        limit: None,
    };
    let jobs = args.server.connect().await?;
    let candidates = if args.jobs.is_empty() {
        repair::candidates(&jobs, &selection).await?
    } else {
        repair::named(&jobs, &args.jobs).await?
    };

    let stdout = io::stdout();
    let mut out = Render::new(args, &jobs, stdout.lock())?;

    for wanted in &args.jobs {
        if !candidates.iter().any(|c| &c.name == wanted) {
            out.tally.jobs += 1;
            out.tally.failed += 1;
            let (db, coll) = repair::namespace(&jobs);
            let message = format!("no job with job_id {wanted} in {db}.{coll}");
            say!("{}", shown(&message));
            out.missing(wanted, &message)?;
        }
    }

    let to_read = candidates
        .iter()
        .filter(|c| c.skip_reason(&options).is_none())
        .count();
    if !options.dry_run && !args.yes && to_read > 0 && !confirm(&jobs, &candidates, &options)? {
        say!("nothing written");
        out.tally.declined = true;
        return out.finish();
    }

    let bar = progress(candidates.len());
    let repairer = Repairer::new(&jobs, options);
    for candidate in &candidates {
        let done = match candidate.skip_reason(repairer.options()) {
            Some(reason) => JobRepair {
                id: candidate.id.clone(),
                name: candidate.name.clone(),
                status: candidate.status.clone(),
                plan: None,
                verdict: Verdict::Skipped(reason),
            },
            None => repairer.repair(&candidate.id).await,
        };
        bar.suspend(|| out.job(&done))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.finish()
}

/// Asks once on the terminal; true to go ahead.
fn confirm(jobs: &Jobs, candidates: &[Candidate], options: &Options) -> dupcheck::Result<bool> {
    let (db, coll) = repair::namespace(jobs);
    let live: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.skip_reason(options).is_none())
        .collect();
    let extra: Option<u64> = live.iter().map(|c| c.extra_entries).sum();
    let found = match extra {
        Some(n) => format!(" ({n} duplicate entries found by scan)"),
        None => String::new(),
    };
    eprint!(
        "dupcheck: repair {} job(s) in {db}.{coll}{found}, with backups in {}? [y/N] ",
        live.len(),
        options.backup_dir.display()
    );
    io::stderr().flush().ok();
    let mut answer = String::new();
    io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::io("cannot read the answer", e))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

fn progress(jobs: usize) -> ProgressBar {
    if jobs < 2 || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(jobs as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} jobs, {elapsed} {wide_msg}")
            .expect("valid template"),
    );
    bar
}

/// Writes plans and outcomes in the chosen format, as they come. Output
/// that meets a closed pipe is dropped: the jobs are repaired all the same,
/// and the exit status says how that went.
struct Render<'a> {
    format: Format,
    dry_run: bool,
    backup_dir: PathBuf,
    out: Quiet<io::StdoutLock<'a>>,
    tally: Tally,
    written: u64,
}

impl<'a> Render<'a> {
    fn new(args: &Args, jobs: &Jobs, out: io::StdoutLock<'a>) -> dupcheck::Result<Render<'a>> {
        let mut out = Quiet::new(out);
        if args.format == Format::Json {
            let (db, coll) = repair::namespace(jobs);
            let head = json!({
                "dupcheck": 1,
                "command": "repair",
                "dry_run": args.dry_run,
                "keep": format!("{:?}", args.keep).to_lowercase(),
                "keep_errors": args.keep_errors,
                "db": db,
                "collection": coll,
                "backup_dir": args.backup_dir.display().to_string(),
            });
            let head = head.to_string();
            write!(out, "{},\"jobs\":[", &head[..head.len() - 1]).map_err(out_err)?;
        }
        Ok(Render {
            format: args.format,
            dry_run: args.dry_run,
            backup_dir: args.backup_dir.clone(),
            out,
            tally: Tally::default(),
            written: 0,
        })
    }

    fn json_item(&mut self, item: &Value) -> dupcheck::Result<()> {
        let sep = if self.written > 0 { "," } else { "" };
        self.written += 1;
        write!(self.out, "{sep}\n{item}").map_err(out_err)
    }

    fn missing(&mut self, job_id: &str, message: &str) -> dupcheck::Result<()> {
        match self.format {
            Format::Json => self.json_item(&json!({
                "job_id": job_id, "outcome": "failed", "message": message,
            })),
            Format::Text => {
                writeln!(self.out, "job {}: not found\n", shown(job_id)).map_err(out_err)
            }
        }
    }

    fn job(&mut self, done: &JobRepair) -> dupcheck::Result<()> {
        let t = &mut self.tally;
        t.jobs += 1;
        let removed = done.plan.as_ref().map_or(0, Plan::removed_count);
        let (outcome, message, backup) = match &done.verdict {
            Verdict::Repaired { backup, .. } => {
                t.repaired += 1;
                t.removed += removed;
                t.backups += 1;
                ("repaired", None, Some(backup.display().to_string()))
            }
            Verdict::WouldRepair => {
                t.would_repair += 1;
                t.removed += removed;
                ("would_repair", None, None)
            }
            Verdict::Consistent => {
                t.consistent += 1;
                ("consistent", None, None)
            }
            Verdict::Skipped(why) => {
                t.skipped += 1;
                say!("job {}: skipped: {}", shown(&done.name), shown(why));
                ("skipped", Some(why.clone()), None)
            }
            Verdict::Failed(e) => {
                t.failed += 1;
                say!("job {}: {}", shown(&done.name), shown(&e.message));
                ("failed", Some(e.message.clone()), None)
            }
        };
        match self.format {
            Format::Json => {
                if let (Some(path), Some(plan)) = (&backup, &done.plan) {
                    say!(
                        "repaired job {}: {} removed; backup {}",
                        shown(&done.name),
                        entries(plan.removed_count()),
                        shown(path)
                    );
                }
                let item = job_json(done, outcome, message, backup);
                self.json_item(&item)
            }
            Format::Text => self.job_text(done, outcome, message, backup),
        }
    }

    fn job_text(
        &mut self,
        done: &JobRepair,
        outcome: &str,
        message: Option<String>,
        backup: Option<String>,
    ) -> dupcheck::Result<()> {
        if self.out.closed() {
            // No one reads it: spare the formatting of a long plan.
            return Ok(());
        }
        let status = shown(done.status.as_deref().unwrap_or("no status"));
        let verdict = match (outcome, &message, &backup) {
            ("repaired", _, Some(path)) => format!("repaired, backup {}", shown(path)),
            ("would_repair", _, _) => "would be repaired (dry run)".to_owned(),
            ("consistent", _, _) => "consistent, nothing to do".to_owned(),
            (other, Some(why), _) => format!("{other}: {}", shown(why)),
            (other, _, _) => other.to_owned(),
        };
        let o = &mut self.out;
        writeln!(o, "job {} ({status}): {verdict}", shown(&done.name)).map_err(out_err)?;
        let Some(plan) = done.plan.as_ref().filter(|p| !p.is_empty()) else {
            return writeln!(o).map_err(out_err);
        };
        for s in &plan.sizes {
            writeln!(o, "  {:<34} {:>6} -> {}", s.field, s.before, s.after).map_err(out_err)?;
        }
        for c in &plan.counters {
            writeln!(
                o,
                "  {:<34} {:>6} -> {}",
                c.field,
                number(&c.before),
                number(&c.after)
            )
            .map_err(out_err)?;
        }
        for d in plan.removed.iter().take(LISTED) {
            let value = shown(&d.value);
            writeln!(o, "  - {}[{}] {value} ({})", d.field, d.index, d.reason).map_err(out_err)?;
        }
        if plan.removed.len() > LISTED {
            writeln!(
                o,
                "  - and {} more (--format json lists them all)",
                plan.removed.len() - LISTED
            )
            .map_err(out_err)?;
        }
        for path in &plan.added {
            let path = shown(path);
            writeln!(o, "  + checkpoint.processed_files {path} (has an outcome)")
                .map_err(out_err)?;
        }
        for path in &plan.unrecorded {
            let path = shown(path);
            writeln!(
                o,
                "  ! {path}: listed in processed_files with no result or error (left as is)"
            )
            .map_err(out_err)?;
        }
        writeln!(o).map_err(out_err)
    }

    fn finish(mut self) -> dupcheck::Result<Tally> {
        let t = self.tally;
        let dir = self.backup_dir.display().to_string();
        let dir = shown(&dir);
        match self.format {
            Format::Json => {
                let summary = json!({
                    "jobs": t.jobs,
                    "repaired": t.repaired,
                    "would_repair": t.would_repair,
                    "consistent": t.consistent,
                    "skipped": t.skipped,
                    "failed": t.failed,
                    "entries_removed": t.removed,
                    "backups_written": t.backups,
                    "declined": t.declined,
                });
                writeln!(self.out, "\n],\"summary\":{summary}}}").map_err(out_err)?;
            }
            Format::Text if self.dry_run => {
                writeln!(
                    self.out,
                    "{}: {} would be repaired ({} would go), {} consistent, \
                     {} skipped, {} failed; nothing written (dry run)",
                    plural(t.jobs, "job"),
                    t.would_repair,
                    entries(t.removed),
                    t.consistent,
                    t.skipped,
                    t.failed
                )
                .map_err(out_err)?;
            }
            Format::Text => {
                writeln!(
                    self.out,
                    "{}: {} repaired ({} removed, {} written in {dir}), \
                     {} consistent, {} skipped, {} failed",
                    plural(t.jobs, "job"),
                    t.repaired,
                    entries(t.removed),
                    plural(t.backups, "backup"),
                    t.consistent,
                    t.skipped,
                    t.failed
                )
                .map_err(out_err)?;
            }
        }
        common::flush(&mut self.out)?;
        Ok(t)
    }
}

/// A counter's value for a person: the number, without its BSON type.
fn number(value: &Bson) -> String {
    match value {
        Bson::Int32(n) => n.to_string(),
        Bson::Int64(n) => n.to_string(),
        Bson::Double(x) => x.to_string(),
        other => shown(&other.to_string()).into_owned(),
    }
}

fn job_json(
    done: &JobRepair,
    outcome: &str,
    message: Option<String>,
    backup: Option<String>,
) -> Value {
    let mut item = json!({
        "id": id_text(Some(&done.id)),
        "job_id": done.name,
        "status": done.status,
        "outcome": outcome,
    });
    let map = item.as_object_mut().expect("an object");
    if let Some(m) = message {
        map.insert("message".into(), m.into());
    }
    if let Some(b) = backup {
        map.insert("backup".into(), b.into());
    }
    if let Verdict::Repaired { attempts, .. } = &done.verdict {
        map.insert("attempts".into(), (*attempts).into());
    }
    if let Some(plan) = &done.plan {
        map.insert(
            "arrays".into(),
            plan.sizes
                .iter()
                .map(|s| json!({ "field": s.field, "before": s.before, "after": s.after }))
                .collect(),
        );
        map.insert(
            "counters".into(),
            plan.counters
                .iter()
                .map(|c| {
                    json!({
                        "field": c.field,
                        "before": c.before.clone().into_relaxed_extjson(),
                        "after": c.after.clone().into_relaxed_extjson(),
                    })
                })
                .collect(),
        );
        map.insert(
            "removed".into(),
            plan.removed
                .iter()
                .map(|d| {
                    json!({
                        "field": d.field, "index": d.index, "value": d.value, "reason": d.reason,
                    })
                })
                .collect(),
        );
        map.insert("added".into(), json!(plan.added));
        map.insert("unrecorded".into(), json!(plan.unrecorded));
    }
    item
}

/// `1 entry`, `2 entries`.
fn entries(n: u64) -> String {
    if n == 1 {
        "1 entry".to_owned()
    } else {
        format!("{n} entries")
    }
}
