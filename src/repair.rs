//! Repair: rewriting a job's record as its clean view, safely, while the
//! workers may still be writing to it.
//!
//! A repair of one job is: read the whole document; [`plan`] what its clean
//! view ([`crate::dedupe`]) changes; write the document as it is to a
//! backup file ([`crate::backup`]); then apply the plan with one update
//! whose filter, [`unchanged`], matches only the document as it was read.
//! If anything wrote to the job in between, the update matches nothing and
//! the repair starts again from a fresh read, a bounded number of times.
//! A single-document update is atomic, so a job is at every moment either
//! as it was or fully repaired, whatever happens to the process.
//!
//! The update is an aggregation pipeline (MongoDB 4.2 or later): it keeps
//! results and errors by their position in the arrays the server holds
//! (one keep-or-drop flag per entry), so their OCR text is not sent back
//! over the network and an update never grows past the 16 MiB limit,
//! however large the job. Positions are only meaningful while the arrays
//! are the ones read, which is what the filter guarantees.
//!
//! Of the document a repair writes only `checkpoint.results`, `.errors`,
//! `.processed_files`, `.processed_message_ids`, `consumed_count`,
//! `progress.current`, `progress.percentage` and, for a completed job,
//! `results.summary.successful` and `.failed`; each only if it changes
//! and only if it already exists, with the numeric type it had.

use std::collections::HashSet;
use std::future::IntoFuture;
use std::path::PathBuf;
use std::time::Duration;

use bson::{doc, Bson, Document};
use chrono::Utc;
use futures_util::StreamExt;

use crate::audit::{self, Kind};
use crate::backup::{self, job_name};
use crate::connect::Jobs;
use crate::dedupe::{self, Dropped, Keep, Policy};
use crate::digest::{id_text, type_name, Counter};
use crate::error::{Error, ErrorKind, Result};
use crate::select::Selection;
use crate::server;

/// How many times a repair reads, plans and tries to write one job before
/// it gives up because the job keeps changing.
pub const ATTEMPTS: u32 = 8;

/// How to repair.
#[derive(Debug, Clone)]
pub struct Options {
    pub policy: Policy,
    /// Repair jobs whose status is `processing` too.
    pub include_running: bool,
    /// Plan only; write nothing, not even a backup.
    pub dry_run: bool,
    /// Reads and tries per job; see [`ATTEMPTS`].
    pub attempts: u32,
    /// Where backups go.
    pub backup_dir: PathBuf,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            policy: Policy::default(),
            include_running: false,
            dry_run: false,
            attempts: ATTEMPTS,
            backup_dir: PathBuf::from("dupcheck-backups"),
        }
    }
}

/// An array's length before and after the repair.
#[derive(Debug, Clone, PartialEq)]
pub struct Size {
    pub field: &'static str,
    pub before: u64,
    pub after: u64,
}

/// A counter the repair changes.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterChange {
    pub field: &'static str,
    pub before: Bson,
    pub after: Bson,
}

/// What a repair changes in one job.
#[derive(Debug, Clone)]
pub struct Plan {
    pub id: Bson,
    pub name: String,
    pub status: Option<String>,
    /// The checkpoint arrays (message ids only when the job has them).
    pub sizes: Vec<Size>,
    /// Only the counters that change.
    pub counters: Vec<CounterChange>,
    /// The entries that go, in field and position order.
    pub removed: Vec<Dropped>,
    /// Paths added to `processed_files` because they have an outcome.
    pub added: Vec<String>,
    /// Listed in `processed_files` with no result or error: reported only.
    pub unrecorded: Vec<String>,
    keep_results: Option<Vec<usize>>,
    keep_errors: Option<Vec<usize>>,
    processed_files: Option<Vec<String>>,
    message_ids: Option<Vec<Bson>>,
}

impl Plan {
    /// Whether the job is consistent already.
    pub fn is_empty(&self) -> bool {
        self.keep_results.is_none()
            && self.keep_errors.is_none()
            && self.processed_files.is_none()
            && self.message_ids.is_none()
            && self.counters.is_empty()
    }

    /// The update, an aggregation pipeline of one `$set` stage.
    pub fn update(&self) -> Vec<Document> {
        let mut set = Document::new();
        // Each entry is paired with a keep-or-not flag and the kept ones are
        // unpaired: one pass over the array. Picking by $arrayElemAt per
        // position reads the same, but some servers copy the array for
        // every position, which is quadratic.
        let pick = |field: &str, all: usize, keep: &[usize]| {
            let mut mask = vec![Bson::Boolean(false); all];
            for &i in keep {
                if let Some(m) = mask.get_mut(i) {
                    *m = Bson::Boolean(true);
                }
            }
            Bson::Document(doc! { "$map": {
                "input": { "$filter": {
                    "input": { "$zip": { "inputs": [field, { "$literal": mask }] } },
                    "cond": { "$arrayElemAt": ["$$this", 1] },
                } },
                "in": { "$arrayElemAt": ["$$this", 0] },
            } })
        };
        if let Some(keep) = &self.keep_results {
            let all = self.before("checkpoint.results");
            set.insert("checkpoint.results", pick("$checkpoint.results", all, keep));
        }
        if let Some(keep) = &self.keep_errors {
            let all = self.before("checkpoint.errors");
            set.insert("checkpoint.errors", pick("$checkpoint.errors", all, keep));
        }
        if let Some(files) = &self.processed_files {
            set.insert("checkpoint.processed_files", literal(files.clone().into()));
        }
        if let Some(ids) = &self.message_ids {
            set.insert(
                "checkpoint.processed_message_ids",
                literal(Bson::Array(ids.clone())),
            );
        }
        for c in &self.counters {
            set.insert(c.field, literal(c.after.clone()));
        }
        vec![doc! { "$set": set }]
    }

    /// Applies the plan to the document it was made from, as the server
    /// will: the repaired document, byte for byte.
    pub fn apply(&self, job: &mut Document) {
        if let Ok(checkpoint) = job.get_document_mut("checkpoint") {
            let mut keep = |field: &str, kept: &Option<Vec<usize>>| {
                if let (Some(kept), Some(Bson::Array(items))) = (kept, checkpoint.get_mut(field)) {
                    let kept: HashSet<usize> = kept.iter().copied().collect();
                    let all = std::mem::take(items);
                    *items = all
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| kept.contains(i))
                        .map(|(_, item)| item)
                        .collect();
                }
            };
            keep("results", &self.keep_results);
            keep("errors", &self.keep_errors);
            if let Some(files) = &self.processed_files {
                checkpoint.insert("processed_files", files.clone());
            }
            if let Some(ids) = &self.message_ids {
                checkpoint.insert("processed_message_ids", ids.clone());
            }
        }
        for c in &self.counters {
            set_path(job, c.field, c.after.clone());
        }
    }

    fn before(&self, field: &str) -> usize {
        self.sizes
            .iter()
            .find(|s| s.field == field)
            .map_or(0, |s| s.before as usize)
    }

    /// How many entries the repair removes.
    pub fn removed_count(&self) -> u64 {
        self.removed.len() as u64
    }
}

fn literal(value: Bson) -> Bson {
    Bson::Document(doc! { "$literal": value })
}

/// Sets an existing field at a dotted path, keeping its place.
fn set_path(doc: &mut Document, path: &str, value: Bson) {
    match path.split_once('.') {
        None => {
            doc.insert(path, value);
        }
        Some((head, rest)) => {
            if let Ok(inner) = doc.get_document_mut(head) {
                set_path(inner, rest, value);
            }
        }
    }
}

/// What a repair of `job` would change; an error for a record it cannot
/// make sense of, which is then left as it is.
pub fn plan(job: &Document, policy: Policy) -> Result<Plan> {
    let clean = dedupe::clean(job, policy)?;
    let name = job_name(job);
    let bad = |what: String| Error::input(format!("job {name}: {what}"));
    let checkpoint = job
        .get_document("checkpoint")
        .map_err(|_| bad("checkpoint is not a document".into()))?;
    let len = |field: &str| match checkpoint.get(field) {
        Some(Bson::Array(a)) => Some(a.len()),
        _ => None,
    };
    let dropped_in = |field: &str| -> HashSet<usize> {
        clean
            .dropped
            .iter()
            .filter(|d| d.field == field)
            .map(|d| d.index)
            .collect()
    };
    let kept = |field: &str, all: usize| -> Option<Vec<usize>> {
        let gone = dropped_in(field);
        (!gone.is_empty()).then(|| (0..all).filter(|i| !gone.contains(i)).collect())
    };

    let results = len("results").unwrap_or(0);
    let errors = len("errors").unwrap_or(0);
    let processed = len("processed_files").unwrap_or(0);
    let keep_results = kept("checkpoint.results", results);
    let keep_errors = kept("checkpoint.errors", errors);
    let files_change =
        !dropped_in("checkpoint.processed_files").is_empty() || !clean.added.is_empty();
    let ids_change = !dropped_in("checkpoint.processed_message_ids").is_empty();

    let mut sizes = vec![
        Size {
            field: "checkpoint.results",
            before: results as u64,
            after: clean.results.len() as u64,
        },
        Size {
            field: "checkpoint.errors",
            before: errors as u64,
            after: clean.errors.len() as u64,
        },
        Size {
            field: "checkpoint.processed_files",
            before: processed as u64,
            after: clean.processed_files.len() as u64,
        },
    ];
    if let (Some(before), Some(ids)) = (len("processed_message_ids"), &clean.message_ids) {
        sizes.push(Size {
            field: "checkpoint.processed_message_ids",
            before: before as u64,
            after: ids.len() as u64,
        });
    }

    let counters = counters(job, &clean, &bad)?;

    Ok(Plan {
        id: job.get("_id").cloned().unwrap_or(Bson::Null),
        name: name.clone(),
        status: job.get_str("status").ok().map(str::to_owned),
        sizes,
        counters,
        keep_results,
        keep_errors,
        processed_files: files_change.then(|| clean.processed_files.clone()),
        message_ids: if ids_change {
            clean.message_ids.clone()
        } else {
            None
        },
        removed: clean.dropped,
        added: clean.added,
        unrecorded: clean.unrecorded,
    })
}

fn counters(
    job: &Document,
    clean: &dedupe::Clean,
    bad: &dyn Fn(String) -> Error,
) -> Result<Vec<CounterChange>> {
    let mut changes = Vec::new();
    let recorded = clean.recorded() as i64;

    // A counter must be a whole number to be recomputed: anything else is
    // a record this tool does not understand, and is left alone.
    let whole = |field: &str, value: Option<&Bson>| -> Result<Option<i64>> {
        match Counter::from_bson(value) {
            Counter::Value(n) => Ok(Some(n)),
            Counter::Missing => Ok(None),
            Counter::WrongType(ty) => Err(bad(format!(
                "{field} is {}, not a whole number",
                crate::audit::a(&ty)
            ))),
        }
    };
    let change = |field: &'static str, old: &Bson, now: i64, to: i64| {
        (now != to).then(|| CounterChange {
            field,
            before: old.clone(),
            after: same_type(old, to as f64),
        })
    };

    let consumed = job.get("consumed_count");
    match whole("consumed_count", consumed)? {
        Some(n) => changes.extend(change("consumed_count", consumed.unwrap(), n, recorded)),
        None => return Err(bad("consumed_count is missing".into())),
    }

    if let Ok(progress) = job.get_document("progress") {
        let current = progress.get("current");
        if let Some(n) = whole("progress.current", current)? {
            changes.extend(change("progress.current", current.unwrap(), n, recorded));
            let total = [progress.get("total"), job.get("total_files")]
                .into_iter()
                .find_map(|t| Counter::from_bson(t).value().filter(|t| *t > 0));
            let old = progress.get("percentage");
            let numeric = matches!(old, Some(Bson::Double(_) | Bson::Int32(_) | Bson::Int64(_)));
            if let (true, Some(total), true) = (n != recorded, total, numeric) {
                let old = old.unwrap();
                let share = recorded as f64 * 100.0 / total as f64;
                let share = match old {
                    Bson::Double(_) => (share * 100.0).round() / 100.0,
                    _ => share.round(),
                };
                let after = same_type(old, share);
                if &after != old {
                    changes.push(CounterChange {
                        field: "progress.percentage",
                        before: old.clone(),
                        after,
                    });
                }
            }
        }
    }

    let completed = job.get_str("status") == Ok("completed");
    let summary = job
        .get_document("results")
        .ok()
        .and_then(|r| r.get_document("summary").ok());
    if let (true, Some(summary)) = (completed, summary) {
        let fields = [
            ("results.summary.successful", "successful", clean.successful),
            ("results.summary.failed", "failed", clean.failed),
        ];
        for (field, key, to) in fields {
            let old = summary.get(key);
            if let Some(n) = whole(field, old)? {
                changes.extend(change(field, old.unwrap(), n, to as i64));
            }
        }
    }
    Ok(changes)
}

/// A number in the BSON type `like` has.
fn same_type(like: &Bson, n: f64) -> Bson {
    match like {
        Bson::Double(_) => Bson::Double(n),
        Bson::Int32(_) if n.abs() <= i32::MAX as f64 => Bson::Int32(n as i32),
        _ => Bson::Int64(n as i64),
    }
}

/// The filter that matches `job` only while it is as it was read.
///
/// It compares everything a worker or the aggregator changes: `status`,
/// `consumed_count`, the exact `processed_files` and message ids, and the
/// sequence of `file_path`s in results and errors (and so their lengths).
/// Array sizes and `consumed_count` alone would catch every append, since
/// `$push`, `$addToSet` and `$inc` only ever grow them; but another repair
/// or a restore can shrink them, and a shrink followed by appends can bring
/// the sizes back to what was read with different entries behind them. The
/// paths themselves cannot come back that way by chance, and they are what
/// the positions in [`Plan::update`] stand for.
pub fn unchanged(job: &Document) -> Document {
    let checkpoint = job.get_document("checkpoint").ok();
    let mut all = vec![
        same("$status", job.get("status")),
        same("$consumed_count", job.get("consumed_count")),
    ];
    for field in ["results", "errors"] {
        let path = format!("$checkpoint.{field}");
        match checkpoint.and_then(|c| c.get(field)) {
            Some(Bson::Array(items)) => {
                let paths: Vec<Bson> = items
                    .iter()
                    .map(|item| match item {
                        Bson::Document(d) => d.get("file_path").cloned().unwrap_or(Bson::Null),
                        _ => Bson::Null,
                    })
                    .collect();
                all.push(doc! { "$isArray": &path });
                all.push(doc! { "$eq": [
                    { "$map": {
                        "input": &path,
                        "in": { "$ifNull": ["$$this.file_path", null] },
                    } },
                    { "$literal": paths },
                ] });
            }
            other => all.push(same(&path, other)),
        }
    }
    for field in ["processed_files", "processed_message_ids"] {
        all.push(same(
            &format!("$checkpoint.{field}"),
            checkpoint.and_then(|c| c.get(field)),
        ));
    }
    // Spelt as an explicit $and: one test server plans `{_id, $expr}` as a
    // scan of the whole collection, though it finds the _id index for this
    // form; both mean the same on mongod.
    doc! { "$and": [
        { "_id": job.get("_id").cloned().unwrap_or(Bson::Null) },
        { "$expr": { "$and": all } },
    ] }
}

/// An expression true while `path` holds `value` (or is missing, for none).
fn same(path: &str, value: Option<&Bson>) -> Document {
    match value {
        None => doc! { "$eq": [{ "$type": path }, "missing"] },
        Some(v) => doc! { "$and": [
            { "$eq": [{ "$type": path }, type_name(v)] },
            { "$eq": [path, { "$literal": v.clone() }] },
        ] },
    }
}

/// The database and collection of the jobs.
pub fn namespace(jobs: &Jobs) -> (String, String) {
    let ns = jobs.collection.namespace();
    (ns.db, ns.coll)
}

/// Waits a little before another attempt, longer each time, with jitter so
/// that a repair and a steady writer do not keep meeting.
pub async fn pause(attempt: u32) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let base = 10u64 << attempt.min(6);
    let jitter = u64::from(nanos) % base;
    tokio::time::sleep(Duration::from_millis(base / 2 + jitter)).await;
}

/// A job selected for repair, as the audit saw it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: Bson,
    pub name: String,
    pub status: Option<String>,
    /// Entries beyond the first per file, as the audit counted them (when
    /// the job was chosen by its audit).
    pub extra_entries: Option<u64>,
}

impl Candidate {
    /// Why the job is left alone without being read, if it is.
    pub fn skip_reason(&self, options: &Options) -> Option<String> {
        (self.status.as_deref() == Some("processing") && !options.include_running).then(|| {
            "still running (status processing); --include-running repairs it too".to_owned()
        })
    }
}

/// Whether a finding is one a repair sets right (or, for a malformed
/// record, one it must report).
pub fn repairable(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Malformed
            | Kind::DuplicateResult
            | Kind::DuplicateError
            | Kind::ResultAndError
            | Kind::RepeatedProcessedFile
            | Kind::UnlistedPath
            | Kind::ConsumedCountMismatch
            | Kind::ProgressMismatch
            | Kind::SummaryMismatch
            | Kind::RepeatedMessageId
    )
}

/// The jobs with these `job_id`s, newest first, whatever their state: a
/// person named them. Only `_id`, `job_id` and `status` are read.
pub async fn named(jobs: &Jobs, job_ids: &[String]) -> Result<Vec<Candidate>> {
    let ids: Vec<Bson> = job_ids.iter().map(|s| Bson::String(s.clone())).collect();
    let doing = "looking up the jobs named";
    let find = jobs
        .collection
        .find(doc! { "job_id": { "$in": ids } })
        .projection(doc! { "_id": 1, "job_id": 1, "status": 1 })
        .sort(doc! { "created_at": -1, "_id": -1 });
    let mut cursor = jobs.answer(doing, find.into_future()).await?;
    let mut found = Vec::new();
    while let Some(job) = jobs
        .answer(doing, async { cursor.next().await.transpose() })
        .await?
    {
        found.push(Candidate {
            id: job.get("_id").cloned().unwrap_or(Bson::Null),
            name: job_name(&job),
            status: job.get_str("status").ok().map(str::to_owned),
            extra_entries: None,
        });
    }
    Ok(found)
}

/// The selected jobs, newest first, whose audit has a finding a repair
/// deals with. Only digests cross the network (see [`crate::server`]).
pub async fn candidates(jobs: &Jobs, selection: &Selection) -> Result<Vec<Candidate>> {
    let mut digests = Box::pin(server::digest_documents(jobs, selection).await?);
    let mut found = Vec::new();
    while let Some(item) = digests.next().await {
        let raw = item?;
        let digest = server::from_server(&raw)?;
        let report = audit::audit(&digest);
        if report.findings.iter().any(|f| repairable(f.kind)) {
            found.push(Candidate {
                id: raw.get("_id").cloned().unwrap_or(Bson::Null),
                name: digest.name().to_owned(),
                status: digest.status.clone(),
                extra_entries: Some(report.counts.extra_entries),
            });
        }
    }
    Ok(found)
}

/// How the repair of one job ended.
#[derive(Debug)]
pub enum Verdict {
    /// Written; the document as it was is in `backup`.
    Repaired { backup: PathBuf, attempts: u32 },
    /// A dry run: this is what a repair would do.
    WouldRepair,
    /// Nothing to change.
    Consistent,
    /// Left as it is on purpose (running, malformed).
    Skipped(String),
    /// Could not be repaired; says whether anything was written.
    Failed(Error),
}

/// The repair of one job: what it planned and how it ended.
#[derive(Debug)]
pub struct JobRepair {
    pub id: Bson,
    pub name: String,
    pub status: Option<String>,
    /// The plan of the last attempt, if the job could be planned.
    pub plan: Option<Plan>,
    pub verdict: Verdict,
}

/// Repairs jobs of one collection.
pub struct Repairer<'a> {
    jobs: &'a Jobs,
    options: Options,
}

impl<'a> Repairer<'a> {
    pub fn new(jobs: &'a Jobs, options: Options) -> Repairer<'a> {
        Repairer { jobs, options }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Repairs the job with this `_id`.
    pub async fn repair(&self, id: &Bson) -> JobRepair {
        let mut out = JobRepair {
            id: id.clone(),
            name: id_text(Some(id)),
            status: None,
            plan: None,
            verdict: Verdict::Consistent,
        };
        // One backup file per job and run; a retry replaces it, and it is
        // removed again if no write of ours applied.
        let mut backup: Option<PathBuf> = None;
        let forget = |backup: &Option<PathBuf>| {
            if let Some(path) = backup {
                let _ = std::fs::remove_file(path);
            }
        };
        let attempts = self.options.attempts.max(1);

        for attempt in 1..=attempts {
            let find = self.jobs.collection.find_one(doc! { "_id": id });
            let read = match self.jobs.within("reading a job", find.into_future()).await {
                Ok(read) => read,
                Err(e) => {
                    forget(&backup);
                    out.verdict = Verdict::Failed(e);
                    return out;
                }
            };
            let mut job = match read {
                Ok(Some(job)) => job,
                Ok(None) => {
                    forget(&backup);
                    out.verdict = Verdict::Failed(Error::new(
                        ErrorKind::NotFound,
                        format!("job {} no longer exists; nothing written", out.name),
                    ));
                    return out;
                }
                Err(e) => {
                    forget(&backup);
                    out.verdict = Verdict::Failed(self.jobs.error(e));
                    return out;
                }
            };
            out.name = job_name(&job);
            out.status = job.get_str("status").ok().map(str::to_owned);

            if out.status.as_deref() == Some("processing") && !self.options.include_running {
                forget(&backup);
                out.verdict = Verdict::Skipped(
                    "still running (status processing); --include-running repairs it too"
                        .to_owned(),
                );
                return out;
            }
            let plan = match plan(&job, self.options.policy) {
                Ok(plan) => plan,
                Err(e) => {
                    forget(&backup);
                    let prefix = format!("job {}: ", out.name);
                    let why = e.message.strip_prefix(&prefix).unwrap_or(&e.message);
                    out.verdict = Verdict::Skipped(why.to_owned());
                    return out;
                }
            };
            if plan.is_empty() {
                forget(&backup);
                out.plan = Some(plan);
                out.verdict = Verdict::Consistent;
                return out;
            }
            if self.options.dry_run {
                out.plan = Some(plan);
                out.verdict = Verdict::WouldRepair;
                return out;
            }

            let guard = unchanged(&job);
            let update = plan.update();
            let path = backup
                .get_or_insert_with(|| backup::new_path(&self.options.backup_dir, &job, Utc::now()))
                .clone();
            let (db, collection) = namespace(self.jobs);
            let meta = backup::Meta {
                db,
                collection,
                reason: "repair",
                detail: policy_text(self.options.policy),
                taken_at: Utc::now(),
            };
            if let Err(e) = backup::write(&path, &mut job, &meta, |doc| plan.apply(doc)) {
                out.plan = Some(plan);
                out.verdict = Verdict::Failed(Error::new(
                    e.kind,
                    format!("{}; job {} left as it is", e.message, out.name),
                ));
                return out;
            }
            drop(job);
            out.plan = Some(plan);

            let write = self.jobs.collection.update_one(guard, update);
            let written = match self.jobs.within("writing a job", write.into_future()).await {
                Ok(result) => result.map_err(|e| self.jobs.error(e)),
                Err(e) => Err(e),
            };
            match written {
                Ok(r) if r.matched_count == 1 => {
                    out.verdict = Verdict::Repaired {
                        backup: path,
                        attempts: attempt,
                    };
                    return out;
                }
                Ok(_) if attempt < attempts => pause(attempt).await,
                Ok(_) => {}
                Err(e) => {
                    out.verdict = Verdict::Failed(Error::new(
                        e.kind,
                        format!(
                            "{}; the write to job {} may or may not have applied \
                             (dupcheck scan --job tells), the backup {} is kept",
                            e.message,
                            out.name,
                            path.display()
                        ),
                    ));
                    return out;
                }
            }
        }

        forget(&backup);
        out.verdict = Verdict::Failed(Error::new(
            ErrorKind::Conflict,
            format!(
                "job {} changed under every one of {attempts} attempts; left as it is, \
                 try again when its workers are idle",
                out.name
            ),
        ));
        out
    }
}

/// The keep policy in the words of the flags.
pub fn policy_text(policy: Policy) -> String {
    let keep = match policy.keep {
        Keep::First => "first",
        Keep::Last => "last",
        Keep::Best => "best",
    };
    if policy.keep_errors {
        format!("--keep {keep} --keep-errors")
    } else {
        format!("--keep {keep}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(path: &str, text: &str) -> Bson {
        Bson::Document(doc! { "file_path": path, "status": "success", "text": text })
    }

    fn job() -> Document {
        doc! {
            "_id": 7,
            "job_id": "j",
            "status": "completed",
            "total_files": 3,
            "consumed_count": 5,
            "progress": { "current": 5i64, "total": 3, "percentage": 166.67, "filename": "" },
            "checkpoint": {
                "results": [
                    result("/a/1.jpg", "one"),
                    result("/a//1.jpg", "one again"),
                    result("/a/2.jpg", "two"),
                    result("/b/2.jpg", "other two"),
                ],
                "errors": [{ "file_path": "/a/1.jpg", "error": "503" }],
                "processed_files": ["/a/1.jpg", "/a/2.jpg", "/b/2.jpg"],
                "processed_message_ids": ["m1", "m2", "m1"],
                "processed_count": 5,
            },
            "results": { "summary": { "successful": 4, "failed": 1.0 }, "zip_path": "z" },
            "tail": "untouched",
        }
    }

    #[test]
    fn a_plan_changes_what_is_wrong_and_keeps_types() {
        let j = job();
        let p = plan(&j, Policy::default()).unwrap();
        assert_eq!(p.keep_results, Some(vec![0, 2, 3]));
        assert_eq!(p.keep_errors, Some(vec![]));
        assert_eq!(p.processed_files, None);
        assert_eq!(p.message_ids, Some(vec!["m1".into(), "m2".into()]));
        let counters: Vec<(&str, Bson)> = p
            .counters
            .iter()
            .map(|c| (c.field, c.after.clone()))
            .collect();
        assert_eq!(
            counters,
            [
                ("consumed_count", Bson::Int32(3)),
                ("progress.current", Bson::Int64(3)),
                ("progress.percentage", Bson::Double(100.0)),
                ("results.summary.successful", Bson::Int32(3)),
                ("results.summary.failed", Bson::Double(0.0)),
            ]
        );
        assert_eq!(p.removed_count(), 3);

        let mut repaired = j.clone();
        p.apply(&mut repaired);
        let again = plan(&repaired, Policy::default()).unwrap();
        assert!(again.is_empty(), "{again:?}");
        let keys: Vec<&String> = repaired.keys().collect();
        let before: Vec<&String> = j.keys().collect();
        assert_eq!(keys, before);
        assert_eq!(repaired.get_str("tail").unwrap(), "untouched");
        assert_eq!(
            repaired
                .get_document("checkpoint")
                .unwrap()
                .get_i32("processed_count")
                .unwrap(),
            5
        );
    }

    #[test]
    fn consistent_jobs_plan_nothing() {
        let j = doc! {
            "_id": 1, "job_id": "ok", "status": "completed", "consumed_count": 1,
            "progress": { "current": 1, "total": 1, "percentage": 100 },
            "checkpoint": {
                "results": [result("/a", "x")], "errors": [], "processed_files": ["/a"],
            },
            "results": { "summary": { "successful": 1, "failed": 0 } },
        };
        assert!(plan(&j, Policy::default()).unwrap().is_empty());
    }

    #[test]
    fn odd_counters_are_refused() {
        let mut j = job();
        j.insert("consumed_count", "five");
        let e = plan(&j, Policy::default()).unwrap_err();
        assert!(
            e.message.contains("consumed_count is a string"),
            "{}",
            e.message
        );
        j.remove("consumed_count");
        assert!(plan(&j, Policy::default()).is_err());
    }

    #[test]
    fn the_guard_names_every_path() {
        let g = unchanged(&job());
        let text = g.to_string();
        assert!(text.contains("/a//1.jpg"));
        assert!(text.contains("m2"));
        assert!(text.contains("\"_id\": 7"), "{text}");
    }
}
