//! `dupcheck scan`: audit jobs for duplicates and for every mismatch
//! between results, errors, processed files and counters.
//!
//! On a server the audit runs inside it (see the library's `server`
//! module), so only counts and suspect paths cross the network, on a
//! streaming cursor. JSON and CSV are written as jobs arrive; the table
//! keeps one small row per job until the end.

use std::collections::HashSet;
use std::future::IntoFuture;
use std::io::{self, IsTerminal, Write};

use bson::doc;
use chrono::Utc;
use clap::{Args as ClapArgs, ValueEnum};
use comfy_table::{presets, Cell, Color, ContentArrangement, Table};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use dupcheck::audit::{audit, JobReport};
use dupcheck::digest::JobDigest;
use dupcheck::select::Selection;
use dupcheck::{dump, window, Error};

use crate::common::{self, out_err, plural, shown, Outcome, Source};
use crate::say;

const EXIT_STATUS: &str = "\
Exit status:
  0  every selected job is clean
  1  some job has findings
  2  could not scan all that was asked: bad flags, unreachable server,
     refused credentials, a missing collection or --job id, unreadable
     dump records (the rest of the dump is still scanned)";

/// Audit jobs for duplicate results and inconsistent counters
///
/// Without --since, --all or --job a server scan looks at the last 24
/// hours, and a dump scan at every job in the file. Reads only: a
/// read-only user is enough, and readPreference=secondaryPreferred in
/// the URI keeps the scan off a busy primary.
#[derive(ClapArgs, Debug)]
#[command(after_help = EXIT_STATUS)]
pub struct Args {
    /// Jobs created since: 90m, 24h, 7d, 2w, a date (2026-01-09) or an
    /// RFC 3339 time
    #[arg(long, value_name = "WHEN", conflicts_with = "all")]
    since: Option<String>,

    /// Every job, whenever created
    #[arg(long)]
    all: bool,

    /// Only this job (its job_id); repeat for several
    #[arg(long = "job", value_name = "ID")]
    jobs: Vec<String>,

    /// Only jobs with this status (processing, completed, ...); repeatable
    #[arg(long = "status", value_name = "STATUS")]
    statuses: Vec<String>,

    /// At most this many jobs, newest first
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=i64::MAX as u64))]
    limit: Option<u64>,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    #[command(flatten)]
    source: Source,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

pub fn run(args: Args) -> Outcome {
    let selection = match selection(&args) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(e),
    };
    let stdout = io::stdout();
    let mut sink = Sink::new(args.format, stdout.lock(), &args, &selection);

    let read = match &args.source.file {
        Some(path) => scan_file(path, &selection, &mut sink),
        None => {
            common::runtime().and_then(|rt| rt.block_on(scan_server(&args, &selection, &mut sink)))
        }
    };
    let failure = read.err();
    // A job named with --job that no document carries is an error, as in
    // repair and export: a typo must not look like a clean scan. One that
    // exists but is outside the other filters is only noted. Which are
    // missing is known only if the read finished.
    let missing = match failure {
        None => sink.missing(&selection),
        Some(_) => Vec::new(),
    };
    let (absent, unselected): (Vec<String>, Vec<String>) = missing
        .into_iter()
        .partition(|id| !sink.existing.contains(id));
    let finished = sink.finish(failure.as_ref());

    for id in &unselected {
        say!(
            "job {}: not selected (outside --since, --status or --limit)",
            shown(id)
        );
    }
    for id in &absent {
        say!("job {}: no such job_id", shown(id));
    }
    if !absent.is_empty() {
        return Outcome::Incomplete;
    }

    match (failure, finished) {
        (_, Err(e)) => Outcome::Failed(e),
        (Some(e), Ok(_)) => Outcome::Failed(e),
        (None, Ok(Tally { unreadable, .. })) if unreadable > 0 => Outcome::Incomplete,
        (None, Ok(Tally { with_findings, .. })) if with_findings > 0 => Outcome::Found,
        (None, Ok(_)) => Outcome::Clean,
    }
}

fn selection(args: &Args) -> dupcheck::Result<Selection> {
    let since = match (
        &args.since,
        args.all || !args.jobs.is_empty(),
        &args.source.file,
    ) {
        (Some(spec), _, _) => Some(window::since(spec, Utc::now())?),
        (None, true, _) | (None, false, Some(_)) => None,
        (None, false, None) => Some(window::since("24h", Utc::now())?),
    };
    Ok(Selection {
        since,
        jobs: args.jobs.clone(),
        statuses: args.statuses.clone(),
        limit: args.limit,
    })
}

async fn scan_server(
    args: &Args,
    selection: &Selection,
    sink: &mut Sink<'_>,
) -> dupcheck::Result<()> {
    let jobs = args.source.server.connect().await?;
    let mut stream = Box::pin(dupcheck::server::digests(&jobs, selection).await?);
    let spinner = spinner();
    while let Some(digest) = stream.next().await {
        sink.job(&digest?)?;
        spinner.inc(1);
    }
    spinner.finish_and_clear();
    if !selection.jobs.is_empty() {
        let filter = doc! { "job_id": { "$in": &selection.jobs } };
        let carried = jobs
            .answer(
                "looking up --job ids",
                jobs.collection.distinct("job_id", filter).into_future(),
            )
            .await?;
        sink.existing
            .extend(carried.iter().filter_map(|b| b.as_str().map(str::to_owned)));
    }
    Ok(())
}

fn scan_file(
    path: &std::path::Path,
    selection: &Selection,
    sink: &mut Sink<'_>,
) -> dupcheck::Result<()> {
    // A dump has no index to sort by: collect the selected digests' order
    // keys only when a limit asks for the newest jobs.
    let mut kept: Vec<(Option<bson::Bson>, bson::Bson, JobDigest)> = Vec::new();
    let mut failed: Option<Error> = None;
    let shown = path.display().to_string();
    dump::read(path, |place, doc| {
        if failed.is_some() {
            return;
        }
        match doc {
            Err(e) => {
                say!("{shown}: {place}: {}", e.message);
                sink.tally.unreadable += 1;
            }
            Ok(doc) => {
                let digest = JobDigest::from_document(&doc);
                if let Some(id) = &digest.job_id {
                    if selection.jobs.contains(id) {
                        sink.existing.insert(id.clone());
                    }
                }
                if !selection.matches(
                    digest.job_id.as_deref(),
                    digest.status.as_deref(),
                    dupcheck::select::window_date(doc.get("created_at")),
                ) {
                    return;
                }
                if selection.limit.is_some() {
                    let created = doc.get("created_at").cloned();
                    let id = doc.get("_id").cloned().unwrap_or(bson::Bson::Null);
                    kept.push((created, id, digest));
                } else if let Err(e) = sink.job(&digest) {
                    failed = Some(e);
                }
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if let Some(limit) = selection.limit {
        // As the server sorts: newest first, then the greater _id, in
        // MongoDB's order of values.
        kept.sort_by(|(a_at, a_id, _), (b_at, b_id, _)| {
            dupcheck::select::newest_first(a_at.as_ref(), a_id, b_at.as_ref(), b_id)
        });
        for (_, _, digest) in kept.iter().take(limit as usize) {
            sink.job(digest)?;
        }
    }
    Ok(())
}

fn spinner() -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} jobs audited").expect("valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// What the run found, for the summary and the exit status.
#[derive(Default, Clone, Copy)]
struct Tally {
    jobs: u64,
    with_findings: u64,
    findings: u64,
    unreadable: u64,
}

/// Where reports go, in the chosen format.
struct Sink<'a> {
    format: Format,
    out: io::StdoutLock<'a>,
    tally: Tally,
    rows: Vec<JobReport>,
    /// job_ids met, to tell which `--job` ids match no document.
    seen: HashSet<String>,
    /// `--job` ids that some document carries, selected or not.
    existing: HashSet<String>,
    colour: bool,
}

const CSV_HEADER: [&str; 18] = [
    "job_id",
    "id",
    "status",
    "created_at",
    "total_files",
    "results",
    "errors",
    "processed_files",
    "consumed_count",
    "distinct_files",
    "duplicate_files",
    "finding",
    "field",
    "path",
    "count",
    "expected",
    "actual",
    "message",
];

impl<'a> Sink<'a> {
    fn new(
        format: Format,
        out: io::StdoutLock<'a>,
        args: &Args,
        selection: &Selection,
    ) -> Sink<'a> {
        let mut sink = Sink {
            format,
            out,
            tally: Tally::default(),
            rows: Vec::new(),
            seen: HashSet::new(),
            existing: HashSet::new(),
            colour: common::colour(),
        };
        match format {
            Format::Json => {
                let source = match &args.source.file {
                    Some(p) => json!({ "file": p.display().to_string() }),
                    None => json!({
                        "db": args.source.server.db,
                        "collection": args.source.server.collection,
                    }),
                };
                let head = json!({
                    "since": selection.since.map(|t| t.to_rfc3339()),
                    "jobs": selection.jobs,
                    "statuses": selection.statuses,
                    "limit": selection.limit,
                });
                // Written before any job: errors here surface at finish.
                let _ = write!(
                    sink.out,
                    "{{\"dupcheck\":1,\"source\":{source},\"selection\":{head},\"jobs\":["
                );
            }
            Format::Csv | Format::Table => {}
        }
        sink
    }

    fn job(&mut self, digest: &JobDigest) -> dupcheck::Result<()> {
        if let Some(id) = &digest.job_id {
            self.seen.insert(id.clone());
        }
        let report = audit(digest);
        self.tally.jobs += 1;
        self.tally.findings += report.findings.len() as u64;
        if !report.findings.is_empty() {
            self.tally.with_findings += 1;
        }
        match self.format {
            Format::Table => self.rows.push(report),
            Format::Json => {
                let sep = if self.tally.jobs > 1 { "," } else { "" };
                let text = serde_json::to_string(&report).expect("reports serialise");
                write!(self.out, "{sep}\n{text}").map_err(out_err)?;
            }
            Format::Csv => {
                if self.tally.jobs == 1 {
                    self.csv_header()?;
                }
                self.csv_rows(&report)?
            }
        }
        Ok(())
    }

    /// The `--job` ids no audited job carried.
    fn missing(&self, selection: &Selection) -> Vec<String> {
        let mut missing: Vec<String> = selection
            .jobs
            .iter()
            .filter(|id| !self.seen.contains(*id))
            .cloned()
            .collect();
        missing.dedup();
        missing
    }

    fn csv_header(&mut self) -> dupcheck::Result<()> {
        let header = CSV_HEADER.map(String::from);
        self.out
            .write_all(&csv_line(&[header.as_slice()]))
            .map_err(out_err)
    }

    fn csv_rows(&mut self, r: &JobReport) -> dupcheck::Result<()> {
        let num = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
        let job = [
            r.job_id.clone().unwrap_or_default(),
            r.id.clone(),
            r.status.clone().unwrap_or_default(),
            r.created_at.clone().unwrap_or_default(),
            num(r.counts.total_files),
            r.counts.results.to_string(),
            r.counts.errors.to_string(),
            r.counts.processed_files.to_string(),
            num(r.counts.consumed_count),
            r.counts.distinct_files.to_string(),
            r.counts.duplicate_files.to_string(),
        ];
        let row =
            |rest: [String; 7]| -> Vec<String> { job.iter().chain(rest.iter()).cloned().collect() };
        let mut rows = Vec::new();
        if r.findings.is_empty() {
            rows.push(row(Default::default()));
        }
        for f in &r.findings {
            let path = f.path.clone().unwrap_or_default();
            rows.push(row([
                f.kind.name().to_owned(),
                f.field.clone().unwrap_or_default(),
                path,
                f.count.map(|n| n.to_string()).unwrap_or_default(),
                num(f.expected),
                num(f.actual),
                f.message.clone(),
            ]));
        }
        // Values go out as they are, for scripts and spreadsheets; but on
        // a terminal a file name must not be able to rewrite the screen.
        if io::stdout().is_terminal() {
            for field in rows.iter_mut().flatten() {
                if let std::borrow::Cow::Owned(safe) = shown(field) {
                    *field = safe;
                }
            }
        }
        let rows: Vec<&[String]> = rows.iter().map(Vec::as_slice).collect();
        self.out.write_all(&csv_line(&rows)).map_err(out_err)
    }

    fn finish(mut self, failure: Option<&Error>) -> dupcheck::Result<Tally> {
        let t = self.tally;
        match self.format {
            Format::Json => {
                let summary = json!({
                    "jobs": t.jobs,
                    "jobs_with_findings": t.with_findings,
                    "findings": t.findings,
                    "unreadable_records": t.unreadable,
                    "complete": failure.is_none(),
                });
                writeln!(self.out, "\n],\"summary\":{summary}}}").map_err(out_err)?;
            }
            Format::Csv if t.jobs == 0 && failure.is_none() => self.csv_header()?,
            Format::Csv => {}
            Format::Table if failure.is_some() && self.rows.is_empty() => {}
            Format::Table => self.table()?,
        }
        common::flush(&mut self.out)?;
        Ok(t)
    }

    fn table(&mut self) -> dupcheck::Result<()> {
        let t = self.tally;
        if self.rows.is_empty() {
            writeln!(self.out, "no jobs selected").map_err(out_err)?;
            return Ok(());
        }
        let mut table = Table::new();
        table.load_style(presets::UTF8_FULL_CONDENSED);
        table.set_content_arrangement(ContentArrangement::Disabled);
        if self.colour {
            table.enforce_styling();
        } else {
            table.force_no_tty();
        }
        table.set_header(vec![
            "job",
            "status",
            "files",
            "results",
            "errors",
            "processed",
            "consumed",
            "dup files",
            "findings",
        ]);
        let num = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
        for r in &self.rows {
            let findings = Cell::new(r.findings.len());
            let dups = Cell::new(r.counts.duplicate_files);
            let (findings, dups) = if self.colour && !r.findings.is_empty() {
                (
                    findings.fg(Color::Red),
                    if r.counts.duplicate_files > 0 {
                        dups.fg(Color::Red)
                    } else {
                        dups
                    },
                )
            } else {
                (findings, dups)
            };
            table.add_row(vec![
                Cell::new(shown(r.name())),
                Cell::new(shown(r.status.as_deref().unwrap_or("-"))),
                Cell::new(num(r.counts.total_files)),
                Cell::new(r.counts.results),
                Cell::new(r.counts.errors),
                Cell::new(r.counts.processed_files),
                Cell::new(num(r.counts.consumed_count)),
                dups,
                findings,
            ]);
        }
        writeln!(self.out, "{table}").map_err(out_err)?;

        let (bold, red, off) = if self.colour {
            ("\x1b[1m", "\x1b[31m", "\x1b[0m")
        } else {
            ("", "", "")
        };
        for r in self.rows.iter().filter(|r| !r.findings.is_empty()) {
            writeln!(
                self.out,
                "\n{bold}{}{off} ({})",
                shown(r.name()),
                shown(r.status.as_deref().unwrap_or("no status"))
            )
            .map_err(out_err)?;
            for f in &r.findings {
                writeln!(
                    self.out,
                    "  {red}{:<26}{off} {}",
                    f.kind.name(),
                    shown(&f.message)
                )
                .map_err(out_err)?;
            }
        }
        writeln!(
            self.out,
            "\n{} audited, {} with findings ({})",
            plural(t.jobs, "job"),
            t.with_findings,
            plural(t.findings, "finding")
        )
        .map_err(out_err)
    }
}

/// CSV text of some records, quoted as needed: writing into memory cannot
/// fail, so each job's rows reach stdout whole, as soon as they are known.
fn csv_line(rows: &[&[String]]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.write_record(*row).expect("writing CSV to memory");
    }
    w.into_inner().expect("flushing CSV to memory")
}
