//! What the audit needs to know of one job, and nothing more.
//!
//! A job document carries kilobytes of OCR text per file; the audit needs
//! only counters, array sizes and, when something looks wrong, the paths.
//! On a server the digest is computed inside the server by the pipeline in
//! [`crate::server`], so text never crosses the network. From a dump file
//! [`JobDigest::from_document`] computes the same digest from the whole
//! document, always with the paths.

use std::collections::HashSet;

use bson::{Bson, Document};
use chrono::{DateTime, Utc};

/// The value of one counter field, as found.
#[derive(Debug, Clone, PartialEq)]
pub enum Counter {
    Missing,
    /// An integer, or a double holding an integral value.
    Value(i64),
    /// Present, but not a whole number; holds the BSON type's name.
    WrongType(String),
}

impl Counter {
    pub fn from_bson(value: Option<&Bson>) -> Counter {
        match value {
            None | Some(Bson::Null) => Counter::Missing,
            Some(Bson::Int32(n)) => Counter::Value(i64::from(*n)),
            Some(Bson::Int64(n)) => Counter::Value(*n),
            Some(Bson::Double(x)) if x.fract() == 0.0 && x.abs() < 9.0e15 => {
                Counter::Value(*x as i64)
            }
            Some(other) => Counter::WrongType(type_name(other).to_owned()),
        }
    }

    pub fn value(&self) -> Option<i64> {
        match self {
            Counter::Value(n) => Some(*n),
            _ => None,
        }
    }
}

/// The counters of a job document that the audit checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Counters {
    pub total_files: Counter,
    pub published_count: Counter,
    pub consumed_count: Counter,
    pub progress_current: Counter,
    pub summary_successful: Counter,
    pub summary_failed: Counter,
}

/// How an array field of `checkpoint` was found.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Missing,
    /// Present but not an array; holds the BSON type's name.
    NotArray(String),
    Array,
}

/// One entry of a path list: a string, or the type of what stood there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathEntry {
    Path(String),
    /// Not a string: the BSON type's name (`null` for a missing path).
    Invalid(String),
}

impl PathEntry {
    pub fn from_bson(value: Option<&Bson>) -> PathEntry {
        match value {
            Some(Bson::String(s)) => PathEntry::Path(s.clone()),
            None | Some(Bson::Null) => PathEntry::Invalid("missing".to_owned()),
            Some(other) => PathEntry::Invalid(type_name(other).to_owned()),
        }
    }
}

/// The paths recorded in a job, in document order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathLists {
    /// `file_path` of each entry of `checkpoint.results`.
    pub results: Vec<PathEntry>,
    /// `file_path` of each entry of `checkpoint.errors`.
    pub errors: Vec<PathEntry>,
    /// Each entry of `checkpoint.processed_files`.
    pub processed: Vec<PathEntry>,
}

/// Sizes and distinct counts of the arrays, as raw (unnormalised) strings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sizes {
    pub results: u64,
    pub errors: u64,
    pub processed: u64,
    pub message_ids: u64,
    pub distinct_results: u64,
    pub distinct_errors: u64,
    pub distinct_processed: u64,
    pub distinct_message_ids: u64,
    /// Distinct paths with a result or an error.
    pub distinct_recorded: u64,
}

/// Shapes of the four `checkpoint` arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct Shapes {
    pub results: Shape,
    pub errors: Shape,
    pub processed: Shape,
    pub message_ids: Shape,
}

/// Everything the audit reads of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDigest {
    /// The document's `_id`, as text (hex for an ObjectId).
    pub id: String,
    pub job_id: Option<String>,
    pub status: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    /// The whole document's BSON size.
    pub bytes: Option<u64>,
    pub counters: Counters,
    pub shapes: Shapes,
    pub sizes: Sizes,
    /// Present when the job failed the quick in-server check (or always,
    /// for a dump): the audit then works from the paths themselves.
    pub paths: Option<PathLists>,
}

impl JobDigest {
    /// The name a person knows the job by: `job_id`, else the `_id`.
    pub fn name(&self) -> &str {
        self.job_id.as_deref().unwrap_or(&self.id)
    }

    /// The digest of a whole job document, with its paths.
    pub fn from_document(doc: &Document) -> JobDigest {
        let checkpoint = doc.get_document("checkpoint").ok();
        let field = |name: &str| checkpoint.and_then(|c| c.get(name));

        let results = path_list(field("results"), Some("file_path"));
        let errors = path_list(field("errors"), Some("file_path"));
        let processed = path_list(field("processed_files"), None);
        let message_ids = path_list(field("processed_message_ids"), None);

        let sizes = Sizes {
            results: results.len() as u64,
            errors: errors.len() as u64,
            processed: processed.len() as u64,
            message_ids: message_ids.len() as u64,
            distinct_results: distinct(&[&results]),
            distinct_errors: distinct(&[&errors]),
            distinct_processed: distinct(&[&processed]),
            // By value, as the server's $setUnion counts: message ids that
            // are not strings must not all count as one.
            distinct_message_ids: distinct_values(field("processed_message_ids")),
            distinct_recorded: distinct(&[&results, &errors]),
        };

        let shapes = Shapes {
            results: shape(field("results")),
            errors: shape(field("errors")),
            processed: shape(field("processed_files")),
            message_ids: shape(field("processed_message_ids")),
        };

        let bytes = bson::to_vec(doc).ok().map(|v| v.len() as u64);
        let summary = doc
            .get_document("results")
            .ok()
            .and_then(|r| r.get_document("summary").ok());

        JobDigest {
            id: id_text(doc.get("_id")),
            job_id: doc.get_str("job_id").ok().map(str::to_owned),
            status: doc.get_str("status").ok().map(str::to_owned),
            created_at: date(doc.get("created_at")),
            bytes,
            counters: Counters {
                total_files: Counter::from_bson(doc.get("total_files")),
                published_count: Counter::from_bson(doc.get("published_count")),
                consumed_count: Counter::from_bson(doc.get("consumed_count")),
                progress_current: Counter::from_bson(
                    doc.get_document("progress")
                        .ok()
                        .and_then(|p| p.get("current")),
                ),
                summary_successful: Counter::from_bson(summary.and_then(|s| s.get("successful"))),
                summary_failed: Counter::from_bson(summary.and_then(|s| s.get("failed"))),
            },
            shapes,
            sizes,
            paths: Some(PathLists {
                results,
                errors,
                processed,
            }),
        }
    }
}

fn path_list(value: Option<&Bson>, key: Option<&str>) -> Vec<PathEntry> {
    let Some(Bson::Array(items)) = value else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| match key {
            None => PathEntry::from_bson(Some(item)),
            Some(key) => match item {
                Bson::Document(d) => PathEntry::from_bson(d.get(key)),
                _ => PathEntry::Invalid("missing".to_owned()),
            },
        })
        .collect()
}

fn distinct(lists: &[&Vec<PathEntry>]) -> u64 {
    let set: HashSet<&PathEntry> = lists.iter().flat_map(|l| l.iter()).collect();
    set.len() as u64
}

fn distinct_values(value: Option<&Bson>) -> u64 {
    let Some(Bson::Array(items)) = value else {
        return 0;
    };
    let set: HashSet<String> = items.iter().map(value_key).collect();
    set.len() as u64
}

/// A value as a set key, equal where MongoDB's `$setUnion` finds values
/// equal: numbers by value, whatever their type (`1`, `1.0` and
/// `NumberLong(1)` are one message id), anything else by its Extended JSON.
fn value_key(value: &Bson) -> String {
    let number = |x: f64| {
        if x.is_nan() {
            "number:nan".to_owned()
        } else if x.fract() == 0.0 && x.abs() < 9.0e15 {
            format!("number:{}", x as i64)
        } else {
            format!("number:{x:?}")
        }
    };
    match value {
        Bson::Int32(n) => format!("number:{n}"),
        Bson::Int64(n) => format!("number:{n}"),
        Bson::Double(x) => number(*x),
        other => other.clone().into_relaxed_extjson().to_string(),
    }
}

pub(crate) fn shape(value: Option<&Bson>) -> Shape {
    match value {
        None => Shape::Missing,
        Some(Bson::Array(_)) => Shape::Array,
        Some(other) => Shape::NotArray(type_name(other).to_owned()),
    }
}

/// A BSON value's `_id` as text: the hex of an ObjectId, else its JSON.
pub fn id_text(value: Option<&Bson>) -> String {
    match value {
        Some(Bson::ObjectId(oid)) => oid.to_hex(),
        Some(Bson::String(s)) => s.clone(),
        Some(other) => other.clone().into_relaxed_extjson().to_string(),
        None => "(no _id)".to_owned(),
    }
}

pub(crate) fn date(value: Option<&Bson>) -> Option<DateTime<Utc>> {
    match value {
        Some(Bson::DateTime(d)) => Some(d.to_chrono()),
        Some(Bson::String(s)) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        _ => None,
    }
}

/// The name MongoDB's `$type` gives a value's type.
pub fn type_name(value: &Bson) -> &'static str {
    match value {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Array(_) => "array",
        Bson::Document(_) => "object",
        Bson::Boolean(_) => "bool",
        Bson::Null => "null",
        Bson::RegularExpression(_) => "regex",
        Bson::JavaScriptCode(_) => "javascript",
        Bson::JavaScriptCodeWithScope(_) => "javascriptWithScope",
        Bson::Int32(_) => "int",
        Bson::Int64(_) => "long",
        Bson::Timestamp(_) => "timestamp",
        Bson::Binary(_) => "binData",
        Bson::ObjectId(_) => "objectId",
        Bson::DateTime(_) => "date",
        Bson::Symbol(_) => "symbol",
        Bson::Decimal128(_) => "decimal",
        Bson::Undefined => "undefined",
        Bson::MaxKey => "maxKey",
        Bson::MinKey => "minKey",
        Bson::DbPointer(_) => "dbPointer",
    }
}
