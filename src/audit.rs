//! The audit: from a [`JobDigest`] to the findings of one job.
//!
//! Every check works on normalised paths (see [`crate::paths`]), so two
//! spellings of one file count as one file recorded twice. When the digest
//! carries no paths (the server's quick check found nothing path-related
//! to look at), only the counter checks run, on the distinct counts the
//! server computed; both ways give the same findings for such a job.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::digest::{Counter, JobDigest, PathEntry, PathLists, Shape};
use crate::paths;

/// A document at or above this size is reported as near MongoDB's 16 MiB
/// limit: 15 MiB leaves room for a few hundred more results at most.
pub const NEAR_LIMIT_BYTES: u64 = 15 * 1024 * 1024;

/// The kinds of finding; the names are part of the JSON and CSV output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Malformed,
    DuplicateResult,
    DuplicateError,
    ResultAndError,
    RepeatedProcessedFile,
    UnlistedPath,
    UnrecordedProcessedFile,
    PathSpellings,
    BaseNameCollision,
    ConsumedCountMismatch,
    ProgressMismatch,
    PublishedCountMismatch,
    TotalFilesMismatch,
    SummaryMismatch,
    RepeatedMessageId,
    NearSizeLimit,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Malformed => "malformed",
            Kind::DuplicateResult => "duplicate_result",
            Kind::DuplicateError => "duplicate_error",
            Kind::ResultAndError => "result_and_error",
            Kind::RepeatedProcessedFile => "repeated_processed_file",
            Kind::UnlistedPath => "unlisted_path",
            Kind::UnrecordedProcessedFile => "unrecorded_processed_file",
            Kind::PathSpellings => "path_spellings",
            Kind::BaseNameCollision => "base_name_collision",
            Kind::ConsumedCountMismatch => "consumed_count_mismatch",
            Kind::ProgressMismatch => "progress_mismatch",
            Kind::PublishedCountMismatch => "published_count_mismatch",
            Kind::TotalFilesMismatch => "total_files_mismatch",
            Kind::SummaryMismatch => "summary_mismatch",
            Kind::RepeatedMessageId => "repeated_message_id",
            Kind::NearSizeLimit => "near_size_limit",
        }
    }
}

/// One thing wrong with a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub kind: Kind,
    /// The path concerned, as first recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Further paths: the spellings of one file, or the files sharing a
    /// base name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// How many times the path was recorded, for repeated entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// The field concerned, for counters and malformed records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What the field should hold, from the files actually recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<i64>,
    /// What the field holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<i64>,
    /// One line for a person.
    pub message: String,
}

impl Finding {
    fn new(kind: Kind, message: String) -> Finding {
        Finding {
            kind,
            path: None,
            paths: Vec::new(),
            count: None,
            field: None,
            expected: None,
            actual: None,
            message,
        }
    }
}

/// The numbers of a job, as found and as they should be.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub total_files: Option<i64>,
    pub published_count: Option<i64>,
    pub consumed_count: Option<i64>,
    pub progress_current: Option<i64>,
    /// Entries in `checkpoint.results`.
    pub results: u64,
    /// Entries in `checkpoint.errors`.
    pub errors: u64,
    /// Entries in `checkpoint.processed_files`.
    pub processed_files: u64,
    /// Distinct files with a result or an error.
    pub distinct_files: u64,
    /// Files with more than one result or more than one error.
    pub duplicate_files: u64,
    /// Entries beyond the first for such files: what a repair removes.
    pub extra_entries: u64,
}

/// The audit of one job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobReport {
    /// The document's `_id` as text.
    pub id: String,
    pub job_id: Option<String>,
    pub status: Option<String>,
    pub created_at: Option<String>,
    /// The document's BSON size.
    pub bytes: Option<u64>,
    pub counts: Counts,
    pub findings: Vec<Finding>,
}

impl JobReport {
    pub fn name(&self) -> &str {
        self.job_id.as_deref().unwrap_or(&self.id)
    }
}

/// Audits one job.
pub fn audit(digest: &JobDigest) -> JobReport {
    let mut findings = Vec::new();
    shape_findings(digest, &mut findings);

    let files = match &digest.paths {
        Some(lists) => path_findings(lists, &mut findings),
        None => FileCounts {
            with_result: digest.sizes.distinct_results,
            only_error: digest.sizes.distinct_recorded - digest.sizes.distinct_results,
            recorded: digest.sizes.distinct_recorded,
            duplicate_files: 0,
            extra_entries: 0,
        },
    };

    counter_findings(digest, &files, &mut findings);

    let sizes = &digest.sizes;
    if sizes.message_ids > sizes.distinct_message_ids {
        let extra = sizes.message_ids - sizes.distinct_message_ids;
        let mut f = Finding::new(
            Kind::RepeatedMessageId,
            format!(
                "{extra} repeated {} in checkpoint.processed_message_ids",
                if extra == 1 { "entry" } else { "entries" }
            ),
        );
        f.field = Some("checkpoint.processed_message_ids".to_owned());
        f.count = Some(extra);
        findings.push(f);
    }

    if let Some(bytes) = digest.bytes.filter(|b| *b >= NEAR_LIMIT_BYTES) {
        let mut f = Finding::new(
            Kind::NearSizeLimit,
            format!(
                "document is {:.2} MiB, close to MongoDB's 16 MiB limit",
                bytes as f64 / 1048576.0
            ),
        );
        f.actual = Some(bytes as i64);
        findings.push(f);
    }

    JobReport {
        id: digest.id.clone(),
        job_id: digest.job_id.clone(),
        status: digest.status.clone(),
        created_at: digest.created_at.map(|t| t.to_rfc3339()),
        bytes: digest.bytes,
        counts: Counts {
            total_files: digest.counters.total_files.value(),
            published_count: digest.counters.published_count.value(),
            consumed_count: digest.counters.consumed_count.value(),
            progress_current: digest.counters.progress_current.value(),
            results: sizes.results,
            errors: sizes.errors,
            processed_files: sizes.processed,
            distinct_files: files.recorded,
            duplicate_files: files.duplicate_files,
            extra_entries: files.extra_entries,
        },
        findings,
    }
}

/// Distinct files by outcome, after normalisation.
struct FileCounts {
    with_result: u64,
    only_error: u64,
    recorded: u64,
    duplicate_files: u64,
    extra_entries: u64,
}

fn malformed(field: &str, message: String) -> Finding {
    let mut f = Finding::new(Kind::Malformed, message);
    f.field = Some(field.to_owned());
    f
}

fn shape_findings(digest: &JobDigest, out: &mut Vec<Finding>) {
    let shapes = [
        ("checkpoint.results", &digest.shapes.results, true),
        ("checkpoint.errors", &digest.shapes.errors, true),
        ("checkpoint.processed_files", &digest.shapes.processed, true),
        (
            "checkpoint.processed_message_ids",
            &digest.shapes.message_ids,
            false,
        ),
    ];
    for (field, shape, required) in shapes {
        match shape {
            Shape::Missing if required => out.push(malformed(field, format!("{field} is missing"))),
            Shape::NotArray(ty) => out.push(malformed(
                field,
                format!("{field} is {}, not an array", a(ty)),
            )),
            _ => {}
        }
    }

    if digest.job_id.is_none() {
        out.push(malformed(
            "job_id",
            "job_id is missing or not a string".to_owned(),
        ));
    }

    let counters = [
        ("total_files", &digest.counters.total_files),
        ("published_count", &digest.counters.published_count),
        ("consumed_count", &digest.counters.consumed_count),
        ("progress.current", &digest.counters.progress_current),
        (
            "results.summary.successful",
            &digest.counters.summary_successful,
        ),
        ("results.summary.failed", &digest.counters.summary_failed),
    ];
    for (field, counter) in counters {
        match counter {
            Counter::WrongType(ty) => out.push(malformed(
                field,
                format!("{field} is {}, not a whole number", a(ty)),
            )),
            Counter::Missing if field == "consumed_count" => {
                out.push(malformed(field, format!("{field} is missing")))
            }
            _ => {}
        }
    }
}

#[derive(Default)]
struct File {
    spellings: BTreeSet<String>,
    first: Option<String>,
    results: u64,
    errors: u64,
    processed: u64,
}

fn path_findings(lists: &PathLists, out: &mut Vec<Finding>) -> FileCounts {
    // BTreeMap: findings come out in path order, the same on every run.
    let mut files: BTreeMap<String, File> = BTreeMap::new();

    let sources = [
        ("checkpoint.results", &lists.results, 0),
        ("checkpoint.errors", &lists.errors, 1),
        ("checkpoint.processed_files", &lists.processed, 2),
    ];
    for (field, entries, which) in sources {
        let mut invalid: Vec<String> = Vec::new();
        for (at, entry) in entries.iter().enumerate() {
            let raw = match entry {
                PathEntry::Path(p) => p,
                PathEntry::Invalid(ty) => {
                    invalid.push(format!("{at} ({ty})"));
                    continue;
                }
            };
            let file = files.entry(paths::normalize(raw)).or_default();
            file.spellings.insert(raw.clone());
            file.first.get_or_insert_with(|| raw.clone());
            match which {
                0 => file.results += 1,
                1 => file.errors += 1,
                _ => file.processed += 1,
            }
        }
        if !invalid.is_empty() {
            let what = match (which == 2, invalid.len() == 1) {
                (true, true) => "entry that is not a string",
                (true, false) => "entries that are not strings",
                (false, true) => "entry without a string file_path",
                (false, false) => "entries without a string file_path",
            };
            out.push(malformed(
                field,
                format!(
                    "{field}: {} {what} at {}",
                    invalid.len(),
                    invalid.join(", ")
                ),
            ));
        }
    }

    let mut counts = FileCounts {
        with_result: 0,
        only_error: 0,
        recorded: 0,
        duplicate_files: 0,
        extra_entries: 0,
    };
    let mut by_base: BTreeMap<&str, Vec<&str>> = BTreeMap::new();

    for (key, file) in &files {
        let shown = file.first.clone().unwrap_or_default();
        let at = |kind, count: Option<u64>, message: String| {
            let mut f = Finding::new(kind, message);
            f.path = Some(shown.clone());
            f.count = count;
            f
        };

        if file.results > 0 {
            counts.with_result += 1;
        } else if file.errors > 0 {
            counts.only_error += 1;
        }
        if file.results + file.errors > 0 {
            counts.recorded += 1;
        }
        if file.results > 1 || file.errors > 1 {
            counts.duplicate_files += 1;
        }
        counts.extra_entries += file.results.saturating_sub(1) + file.errors.saturating_sub(1);

        if file.results > 1 {
            out.push(at(
                Kind::DuplicateResult,
                Some(file.results),
                format!("{shown}: {}x in results", file.results),
            ));
        }
        if file.errors > 1 {
            out.push(at(
                Kind::DuplicateError,
                Some(file.errors),
                format!("{shown}: {}x in errors", file.errors),
            ));
        }
        if file.results > 0 && file.errors > 0 {
            out.push(at(
                Kind::ResultAndError,
                None,
                format!("{shown}: has both a result and an error"),
            ));
        }
        if file.processed > 1 {
            out.push(at(
                Kind::RepeatedProcessedFile,
                Some(file.processed),
                format!("{shown}: {}x in processed_files", file.processed),
            ));
        }
        if file.processed == 0 {
            out.push(at(
                Kind::UnlistedPath,
                None,
                format!("{shown}: has a result or error but is not in processed_files"),
            ));
        }
        if file.processed > 0 && file.results + file.errors == 0 {
            out.push(at(
                Kind::UnrecordedProcessedFile,
                None,
                format!("{shown}: in processed_files with no result or error"),
            ));
        }
        if file.spellings.len() > 1 {
            let mut f = at(
                Kind::PathSpellings,
                Some(file.spellings.len() as u64),
                format!(
                    "{} spellings of {key}: {}",
                    file.spellings.len(),
                    quoted(file.spellings.iter())
                ),
            );
            f.paths = file.spellings.iter().cloned().collect();
            out.push(f);
        }

        by_base.entry(paths::base_name(key)).or_default().push(key);
    }

    for (base, keys) in by_base.into_iter().filter(|(_, k)| k.len() > 1) {
        let mut f = Finding::new(
            Kind::BaseNameCollision,
            format!(
                "{} files share the name {base}: {}",
                keys.len(),
                quoted(keys.iter())
            ),
        );
        f.path = Some(base.to_owned());
        f.paths = keys.iter().map(|k| k.to_string()).collect();
        f.count = Some(keys.len() as u64);
        out.push(f);
    }

    counts
}

fn quoted<'a>(items: impl Iterator<Item = &'a (impl AsRef<str> + 'a + ?Sized)>) -> String {
    items
        .map(|s| format!("{:?}", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn counter_findings(digest: &JobDigest, files: &FileCounts, out: &mut Vec<Finding>) {
    let c = &digest.counters;
    let recorded = files.recorded as i64;
    let completed = digest.status.as_deref() == Some("completed");

    let mut check = |kind: Kind, field: &str, counter: &Counter, expected: i64, why: &str| {
        let Some(actual) = counter.value() else {
            return;
        };
        if actual == expected {
            return;
        }
        let mut f = Finding::new(kind, format!("{field} is {actual}, but {why}: {expected}"));
        f.field = Some(field.to_owned());
        f.expected = Some(expected);
        f.actual = Some(actual);
        out.push(f);
    };

    let recorded_why = "distinct files with a result or an error";
    check(
        Kind::ConsumedCountMismatch,
        "consumed_count",
        &c.consumed_count,
        recorded,
        recorded_why,
    );
    check(
        Kind::ProgressMismatch,
        "progress.current",
        &c.progress_current,
        recorded,
        recorded_why,
    );

    // A running job may have published more than it has recorded yet;
    // recording more files than were published is wrong at any time.
    let published_low = c.published_count.value().is_some_and(|p| p < recorded);
    if completed || published_low {
        check(
            Kind::PublishedCountMismatch,
            "published_count",
            &c.published_count,
            recorded,
            recorded_why,
        );
    }

    if completed {
        check(
            Kind::TotalFilesMismatch,
            "total_files",
            &c.total_files,
            recorded,
            recorded_why,
        );
        check(
            Kind::SummaryMismatch,
            "results.summary.successful",
            &c.summary_successful,
            files.with_result as i64,
            "distinct files with a result",
        );
        check(
            Kind::SummaryMismatch,
            "results.summary.failed",
            &c.summary_failed,
            files.only_error as i64,
            "distinct files with only an error",
        );
    }
}

/// A type name with its article: `a string`, `an object`.
pub(crate) fn a(type_name: &str) -> String {
    match type_name.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_name}"),
        _ => format!("a {type_name}"),
    }
}
