//! The deduplicated view of one job's history: which results, errors,
//! processed files and message ids a clean record keeps.
//!
//! Repair writes this view back; export renders reports from it. Files are
//! told apart by their normalised path ([`crate::paths::normalize`]), never
//! by base name, so two spellings of one file are one file and two files
//! that share a name in different folders stay two. Kept entries are the
//! original documents, untouched, in their original order.

use std::collections::{HashMap, HashSet};

use bson::{Bson, Document};

use crate::digest::type_name;
use crate::error::{Error, Result};
use crate::paths;

/// Which of a file's several results to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keep {
    /// The one recorded first.
    #[default]
    First,
    /// The one recorded last.
    Last,
    /// A success over an error, then the higher confidence, then the
    /// longer text; the first recorded among equals.
    Best,
}

/// How to dedupe.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    pub keep: Keep,
    /// Keep a file's error even when it also has a successful result.
    pub keep_errors: bool,
}

/// An entry a clean record drops, for the plan shown to a person.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropped {
    /// `checkpoint.results`, `checkpoint.errors`, ...
    pub field: &'static str,
    /// Position in the original array.
    pub index: usize,
    /// The path (or message id) of the entry, as recorded.
    pub value: String,
    /// Why it goes.
    pub reason: &'static str,
}

/// A job's history with one entry per file.
#[derive(Debug, Clone)]
pub struct Clean {
    pub results: Vec<Document>,
    pub errors: Vec<Document>,
    pub processed_files: Vec<String>,
    /// `None` when the job has no `processed_message_ids` field.
    pub message_ids: Option<Vec<Bson>>,
    /// What goes, in field and position order.
    pub dropped: Vec<Dropped>,
    /// Paths added to `processed_files` because they have an outcome.
    pub added: Vec<String>,
    /// Listed in `processed_files` with no result or error: reported, kept.
    pub unrecorded: Vec<String>,
    /// Distinct files with a kept result.
    pub successful: u64,
    /// Distinct files with a kept error and no result.
    pub failed: u64,
}

impl Clean {
    /// Distinct files with a result or an error.
    pub fn recorded(&self) -> u64 {
        self.successful + self.failed
    }

    /// Whether the clean view differs from the arrays as they are.
    pub fn changes_arrays(&self) -> bool {
        !self.dropped.is_empty() || !self.added.is_empty()
    }
}

/// The clean view of a job document, or why it cannot be made safely: the
/// error says what is wrong with the record (`job <id>: <what>`), and the
/// caller adds what it does about it.
pub fn clean(job: &Document, policy: Policy) -> Result<Clean> {
    let name = job
        .get_str("job_id")
        .map(str::to_owned)
        .unwrap_or_else(|_| crate::digest::id_text(job.get("_id")));
    let bad = |what: String| Error::input(format!("job {name}: {what}"));

    let checkpoint = job
        .get_document("checkpoint")
        .map_err(|_| bad("checkpoint is missing or not a document".into()))?;
    let array = |field: &str, required: bool| -> Result<Option<&Vec<Bson>>> {
        match checkpoint.get(field) {
            Some(Bson::Array(a)) => Ok(Some(a)),
            None if !required => Ok(None),
            None => Err(bad(format!("checkpoint.{field} is missing"))),
            Some(other) => Err(bad(format!(
                "checkpoint.{field} is {}, not an array",
                crate::audit::a(type_name(other))
            ))),
        }
    };
    let results = entries(array("results", true)?.unwrap(), "results", &bad)?;
    let errors = entries(array("errors", true)?.unwrap(), "errors", &bad)?;
    let processed = array("processed_files", true)?.unwrap();
    let message_ids = array("processed_message_ids", false)?;

    let mut dropped = Vec::new();

    let kept_results = pick(&results, policy.keep, "checkpoint.results", &mut dropped);
    let succeeded: HashSet<&String> = kept_results
        .iter()
        .filter(|(_, _, d)| d.get_str("status").unwrap_or("success") != "error")
        .map(|(key, _, _)| key)
        .collect();
    let error_keep = if policy.keep == Keep::Last {
        Keep::Last
    } else {
        Keep::First
    };
    let mut kept_errors = pick(&errors, error_keep, "checkpoint.errors", &mut dropped);
    if !policy.keep_errors {
        kept_errors.retain(|(key, index, _)| {
            let keep = !succeeded.contains(key);
            if !keep {
                dropped.push(Dropped {
                    field: "checkpoint.errors",
                    index: *index,
                    value: errors[*index].1.clone(),
                    reason: "the file has a successful result",
                });
            }
            keep
        });
    }

    let with_result: HashSet<&String> = kept_results.iter().map(|(k, _, _)| k).collect();
    let with_error: HashSet<&String> = kept_errors.iter().map(|(k, _, _)| k).collect();

    // processed_files: each listed file once, in the spelling first listed;
    // then every file with an outcome that was not listed.
    let mut listed: HashSet<String> = HashSet::new();
    let mut processed_files = Vec::new();
    let mut unrecorded = Vec::new();
    for (index, entry) in processed.iter().enumerate() {
        let Bson::String(raw) = entry else {
            return Err(bad(format!(
                "checkpoint.processed_files[{index}] is not a string"
            )));
        };
        let key = paths::normalize(raw);
        if listed.insert(key.clone()) {
            if !with_result.contains(&key) && !with_error.contains(&key) {
                unrecorded.push(raw.clone());
            }
            processed_files.push(raw.clone());
        } else {
            dropped.push(Dropped {
                field: "checkpoint.processed_files",
                index,
                value: raw.clone(),
                reason: "listed before",
            });
        }
    }
    let mut added = Vec::new();
    let outcomes = kept_results
        .iter()
        .map(|(key, index, _)| (key, &results[*index].1))
        .chain(
            kept_errors
                .iter()
                .map(|(key, index, _)| (key, &errors[*index].1)),
        );
    for (key, raw) in outcomes {
        if listed.insert(key.clone()) {
            added.push(raw.clone());
            processed_files.push(raw.clone());
        }
    }

    let message_ids = message_ids.map(|ids| {
        let mut seen = HashSet::new();
        let mut kept = Vec::new();
        for (index, id) in ids.iter().enumerate() {
            if seen.insert(id.clone().into_relaxed_extjson().to_string()) {
                kept.push(id.clone());
            } else {
                dropped.push(Dropped {
                    field: "checkpoint.processed_message_ids",
                    index,
                    value: id
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| id.to_string()),
                    reason: "listed before",
                });
            }
        }
        kept
    });

    let successful = with_result.len() as u64;
    let failed = with_error
        .iter()
        .filter(|k| !with_result.contains(**k))
        .count() as u64;
    dropped.sort_by(|a, b| (a.field, a.index).cmp(&(b.field, b.index)));

    Ok(Clean {
        results: in_order(kept_results),
        errors: in_order(kept_errors),
        processed_files,
        message_ids,
        dropped,
        added,
        unrecorded,
        successful,
        failed,
    })
}

/// (document, raw path) of each entry; refuses entries without a path.
fn entries<'a>(
    items: &'a [Bson],
    field: &str,
    bad: &dyn Fn(String) -> Error,
) -> Result<Vec<(&'a Document, String)>> {
    items
        .iter()
        .enumerate()
        .map(|(index, item)| match item {
            Bson::Document(d) => match d.get("file_path") {
                Some(Bson::String(p)) => Ok((d, p.clone())),
                _ => Err(bad(format!(
                    "checkpoint.{field}[{index}] has no string file_path"
                ))),
            },
            other => Err(bad(format!(
                "checkpoint.{field}[{index}] is {}, not a document",
                crate::audit::a(type_name(other))
            ))),
        })
        .collect()
}

/// Chooses one entry per file. Returns (key, index, document) of the kept
/// entries and records the others in `dropped`.
fn pick<'a>(
    items: &[(&'a Document, String)],
    keep: Keep,
    field: &'static str,
    dropped: &mut Vec<Dropped>,
) -> Vec<(String, usize, &'a Document)> {
    let mut chosen: HashMap<String, usize> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for (index, (doc, raw)) in items.iter().enumerate() {
        let key = paths::normalize(raw);
        match chosen.get(&key) {
            None => {
                chosen.insert(key.clone(), index);
                order.push(key);
            }
            Some(&held) => {
                let better = match keep {
                    Keep::First => false,
                    Keep::Last => true,
                    Keep::Best => rank(doc) > rank(items[held].0),
                };
                if better {
                    chosen.insert(key, index);
                }
            }
        }
    }
    let kept: HashSet<usize> = chosen.values().copied().collect();
    for (index, (_, raw)) in items.iter().enumerate() {
        if !kept.contains(&index) {
            dropped.push(Dropped {
                field,
                index,
                value: raw.clone(),
                reason: "another entry for the same file is kept",
            });
        }
    }
    order
        .into_iter()
        .map(|key| {
            let index = chosen[&key];
            (key, index, items[index].0)
        })
        .collect()
}

/// Orders results for `--keep best`.
fn rank(doc: &Document) -> (bool, f64, usize) {
    let success = doc.get_str("status").unwrap_or("success") == "success";
    let confidence = match doc.get("confidence") {
        Some(Bson::Double(x)) if x.is_finite() => *x,
        Some(Bson::Int32(n)) => f64::from(*n),
        Some(Bson::Int64(n)) => *n as f64,
        _ => f64::NEG_INFINITY,
    };
    let text = doc.get_str("text").map(str::len).unwrap_or(0);
    (success, confidence, text)
}

fn in_order(mut kept: Vec<(String, usize, &Document)>) -> Vec<Document> {
    kept.sort_by_key(|(_, index, _)| *index);
    kept.into_iter().map(|(_, _, d)| d.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn result(path: &str, status: &str, confidence: f64, text: &str) -> Bson {
        Bson::Document(doc! {
            "file_path": path, "status": status, "confidence": confidence, "text": text
        })
    }

    fn job(results: Vec<Bson>, errors: Vec<Bson>, processed: Vec<&str>) -> Document {
        doc! { "job_id": "j", "checkpoint": {
            "results": results, "errors": errors, "processed_files": processed,
        } }
    }

    fn texts(c: &Clean) -> Vec<&str> {
        c.results
            .iter()
            .map(|d| d.get_str("text").unwrap())
            .collect()
    }

    #[test]
    fn keep_policies() {
        let j = job(
            vec![
                result("/a/x.jpg", "error", 0.99, "first"),
                result("/a//x.jpg", "success", 0.5, "second"),
                result("/a/x.jpg", "success", 0.8, "third"),
                result("/a/x.jpg", "success", 0.8, "fourth, longer"),
                result("/b/x.jpg", "success", 0.1, "other file"),
            ],
            vec![],
            vec!["/a/x.jpg", "/b/x.jpg"],
        );
        let with = |keep| {
            clean(
                &j,
                Policy {
                    keep,
                    keep_errors: false,
                },
            )
            .unwrap()
        };
        assert_eq!(texts(&with(Keep::First)), ["first", "other file"]);
        assert_eq!(texts(&with(Keep::Last)), ["fourth, longer", "other file"]);
        assert_eq!(texts(&with(Keep::Best)), ["fourth, longer", "other file"]);
        assert_eq!(with(Keep::First).dropped.len(), 3);
        assert_eq!(
            (with(Keep::First).successful, with(Keep::First).failed),
            (2, 0)
        );
    }

    #[test]
    fn errors_give_way_to_success_and_missing_listings_are_added() {
        let e = |p: &str| Bson::Document(doc! { "file_path": p, "error": "503" });
        let j = job(
            vec![result("/a/1.jpg", "success", 0.9, "t")],
            vec![e("/a/1.jpg"), e("/a/2.jpg"), e("/a/2.jpg")],
            vec!["/a/1.jpg", "/a/3.jpg", "/a/1.jpg"],
        );
        let c = clean(&j, Policy::default()).unwrap();
        assert_eq!(c.errors.len(), 1);
        assert_eq!(c.processed_files, ["/a/1.jpg", "/a/3.jpg", "/a/2.jpg"]);
        assert_eq!(c.added, ["/a/2.jpg"]);
        assert_eq!(c.unrecorded, ["/a/3.jpg"]);
        assert_eq!((c.successful, c.failed), (1, 1));

        let kept = clean(
            &j,
            Policy {
                keep: Keep::First,
                keep_errors: true,
            },
        )
        .unwrap();
        assert_eq!(kept.errors.len(), 2);
    }

    #[test]
    fn malformed_jobs_are_refused() {
        let mut j = job(
            vec![Bson::Document(doc! { "file": "x.jpg" })],
            vec![],
            vec![],
        );
        assert!(clean(&j, Policy::default()).is_err());
        j.get_document_mut("checkpoint")
            .unwrap()
            .insert("results", "oops");
        assert!(clean(&j, Policy::default()).is_err());
    }
}
