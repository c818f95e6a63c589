//! The indexes the job collection needs, and their one-off creation.
//!
//! Three single-field indexes: `job_id`, unique, which every worker save,
//! the aggregator and each `--job` lookup find a job by, and which keeps a
//! job from being split over two documents; `created_at`, descending, which
//! `scan --since`, `scan --limit` and every newest-first listing select and sort
//! by; and `checkpoint.processed_files`, which finds the jobs that recorded
//! a given file.
//!
//! Creation never replaces or drops anything. An index on the same field
//! counts as present whatever its direction (a single-field index serves
//! both); one with other options (not unique, sparse, partial, a collation)
//! is reported and left alone, as is a different index holding the name a
//! new one would take. The unique index is not attempted while job ids
//! are shared by several documents (a missing `job_id` counts as null, as
//! the index would count it); those ids are reported instead.

use std::future::IntoFuture;

use bson::{doc, Bson, Document};
use futures_util::StreamExt;
use mongodb::error::ErrorKind as DriverKind;
use mongodb::options::{AggregateOptions, IndexOptions};
use mongodb::IndexModel;

use crate::connect::Jobs;
use crate::error::{Error, ErrorKind, Result};

/// An index the job collection should have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub field: &'static str,
    /// 1 ascending, -1 descending.
    pub direction: i32,
    pub unique: bool,
    /// What it speeds up, in one line.
    pub purpose: &'static str,
}

impl Wanted {
    /// The name MongoDB would give it: `<field>_<direction>`.
    pub fn name(&self) -> String {
        format!("{}_{}", self.field, self.direction)
    }

    pub fn keys(&self) -> Document {
        doc! { self.field: self.direction }
    }

    /// Keys and options in one line, as [`Existing::describe`] gives them.
    pub fn describe(&self) -> String {
        let keys = Bson::Document(self.keys()).into_relaxed_extjson();
        if self.unique {
            format!("{keys} {{\"unique\":true}}")
        } else {
            keys.to_string()
        }
    }
}

/// The three indexes, in the order they are created.
pub const WANTED: [Wanted; 3] = [
    Wanted {
        field: "checkpoint.processed_files",
        direction: 1,
        unique: false,
        purpose: "finds the jobs that recorded a file path",
    },
    Wanted {
        field: "job_id",
        direction: 1,
        unique: true,
        purpose: "every save, aggregation and --job lookup; one document per job",
    },
    Wanted {
        field: "created_at",
        direction: -1,
        unique: false,
        purpose: "scan --since, scan --limit and newest-first listings",
    },
];

/// An index as the server lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Existing {
    pub name: String,
    pub keys: Document,
    /// Everything else the server lists that changes what the index does.
    pub options: Document,
}

impl Existing {
    fn from_spec(spec: &Document) -> Existing {
        let mut options = Document::new();
        for (key, value) in spec {
            // Version, name and namespace say nothing of what it indexes;
            // `background` is ignored by servers since MongoDB 4.2.
            if matches!(key.as_str(), "v" | "key" | "name" | "ns" | "background") {
                continue;
            }
            // A false flag is the same as no flag.
            if matches!(key.as_str(), "unique" | "sparse" | "hidden")
                && value == &Bson::Boolean(false)
            {
                continue;
            }
            options.insert(key.clone(), value.clone());
        }
        Existing {
            name: spec.get_str("name").unwrap_or("(no name)").to_owned(),
            keys: spec.get_document("key").cloned().unwrap_or_default(),
            options,
        }
    }

    /// Keys and options in one line, as the shell would print them.
    pub fn describe(&self) -> String {
        let keys = Bson::Document(self.keys.clone()).into_relaxed_extjson();
        if self.options.is_empty() {
            keys.to_string()
        } else {
            let options = Bson::Document(self.options.clone()).into_relaxed_extjson();
            format!("{keys} {options}")
        }
    }

    /// Whether this is a single-field index on `field`, either direction.
    fn indexes_only(&self, field: &str) -> bool {
        self.keys.len() == 1
            && self
                .keys
                .get(field)
                .is_some_and(|d| matches!(as_number(d), Some(n) if n == 1.0 || n == -1.0))
    }
}

fn as_number(value: &Bson) -> Option<f64> {
    match value {
        Bson::Int32(n) => Some(f64::from(*n)),
        Bson::Int64(n) => Some(*n as f64),
        Bson::Double(x) => Some(*x),
        _ => None,
    }
}

/// How one wanted index stands against the collection's indexes.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Present, under this name.
    Present(String),
    /// Absent; creating it is safe as far as the listed indexes go.
    Missing,
    /// An index on the same field with other options: left alone.
    OtherOptions(Existing),
    /// A different index already has the name: left alone.
    NameTaken(Existing),
}

/// Where one wanted index stands.
pub fn assess(wanted: &Wanted, existing: &[Existing]) -> State {
    let same_field: Vec<&Existing> = existing
        .iter()
        .filter(|e| e.indexes_only(wanted.field))
        .collect();
    let want_options = if wanted.unique {
        doc! { "unique": true }
    } else {
        Document::new()
    };
    if let Some(found) = same_field
        .iter()
        .find(|e| same_options(&e.options, &want_options))
    {
        return State::Present(found.name.clone());
    }
    if let Some(found) = same_field.first() {
        return State::OtherOptions((*found).clone());
    }
    match existing.iter().find(|e| e.name == wanted.name()) {
        Some(taken) => State::NameTaken(taken.clone()),
        None => State::Missing,
    }
}

fn same_options(a: &Document, b: &Document) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k) == Some(v))
}

/// The collection's indexes. [`Jobs::connect`] makes sure the collection
/// exists; one dropped since is an error ([`ErrorKind::NotFound`]).
pub async fn list(jobs: &Jobs) -> Result<Vec<Existing>> {
    let ns = jobs.collection.namespace();
    let db = jobs.client.database(&ns.db);
    let command = db.run_command(doc! { "listIndexes": &ns.coll, "cursor": {} });
    let reply = jobs
        .within("listing indexes", command.into_future())
        .await?;
    let reply = match reply {
        Ok(r) => r,
        Err(e) if matches!(*e.kind, DriverKind::Command(ref c) if c.code == 26) => {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no collection {:?} in database {:?}", ns.coll, ns.db),
            ));
        }
        Err(e) => return Err(jobs.error(e)),
    };
    // A collection holds at most 64 indexes: they all come in the first
    // batch, which holds 101 unless asked otherwise.
    let specs = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .map(|b| b.to_vec())
        .unwrap_or_default();
    Ok(specs
        .iter()
        .filter_map(Bson::as_document)
        .map(Existing::from_spec)
        .collect())
}

/// Job ids on more than one document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Duplicates {
    /// Each shared job id (null for documents without one) and how many
    /// documents have it, most first; at most [`Duplicates::SHOWN`].
    pub ids: Vec<(Bson, u64)>,
    /// How many shared job ids there are in all.
    pub total: u64,
}

impl Duplicates {
    pub const SHOWN: usize = 50;

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// The job ids that would stop a unique index on `job_id`.
pub async fn duplicate_job_ids(jobs: &Jobs) -> Result<Duplicates> {
    let pipeline = vec![
        doc! { "$group": {
            "_id": { "$ifNull": ["$job_id", null] },
            "n": { "$sum": 1 },
        } },
        doc! { "$match": { "n": { "$gt": 1 } } },
        doc! { "$sort": { "n": -1, "_id": 1 } },
    ];
    let options = AggregateOptions::builder().allow_disk_use(true).build();
    let doing = "looking for shared job ids";
    let aggregate = jobs.collection.aggregate(pipeline).with_options(options);
    let mut cursor = jobs.answer(doing, aggregate.into_future()).await?;
    let mut found = Duplicates::default();
    while let Some(group) = jobs
        .answer(doing, async { cursor.next().await.transpose() })
        .await?
    {
        found.total += 1;
        if found.ids.len() < Duplicates::SHOWN {
            let n = group
                .get("n")
                .and_then(as_number)
                .map_or(0, |n| n.max(0.0) as u64);
            found
                .ids
                .push((group.get("_id").cloned().unwrap_or(Bson::Null), n));
        }
    }
    Ok(found)
}

/// Creates one wanted index under its usual name. A unique build that
/// meets a shared job id (one written since [`duplicate_job_ids`] looked)
/// fails as a [`ErrorKind::Conflict`].
pub async fn create(jobs: &Jobs, wanted: &Wanted) -> Result<()> {
    let mut options = IndexOptions::builder().name(wanted.name()).build();
    if wanted.unique {
        options.unique = Some(true);
    }
    let model = IndexModel::builder()
        .keys(wanted.keys())
        .options(options)
        .build();
    let build = jobs.collection.create_index(model);
    match jobs
        .within("creating an index", build.into_future())
        .await?
    {
        Ok(_) => Ok(()),
        Err(e) if matches!(*e.kind, DriverKind::Command(ref c) if c.code == 11000) => {
            let e = jobs.error(e);
            Err(Error::new(
                ErrorKind::Conflict,
                format!("a job id is on more than one document: {}", e.message),
            ))
        }
        Err(e) => Err(jobs.error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(d: Document) -> Existing {
        Existing::from_spec(&d)
    }

    #[test]
    fn present_in_either_direction_with_the_same_options() {
        let have = [
            spec(doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" }),
            spec(doc! { "v": 2, "key": { "created_at": 1.0 }, "name": "by_date" }),
            spec(
                doc! { "v": 2, "key": { "job_id": 1 }, "name": "j", "unique": true,
                "background": true },
            ),
        ];
        assert_eq!(assess(&WANTED[2], &have), State::Present("by_date".into()));
        assert_eq!(assess(&WANTED[1], &have), State::Present("j".into()));
        assert_eq!(assess(&WANTED[0], &have), State::Missing);
    }

    #[test]
    fn other_options_and_taken_names_are_left_alone() {
        let have = [
            spec(doc! { "key": { "job_id": 1 }, "name": "job_id_1", "unique": false }),
            spec(doc! { "key": { "created_at": -1, "status": 1 }, "name": "created_at_-1" }),
            spec(doc! { "key": { "checkpoint.processed_files": 1 },
            "name": "p", "sparse": true }),
        ];
        assert!(
            matches!(assess(&WANTED[1], &have), State::OtherOptions(e) if e.name == "job_id_1")
        );
        assert!(matches!(assess(&WANTED[2], &have), State::NameTaken(_)));
        assert!(matches!(assess(&WANTED[0], &have), State::OtherOptions(_)));
        assert_eq!(
            have[2].describe(),
            r#"{"checkpoint.processed_files":1} {"sparse":true}"#
        );
    }

    #[test]
    fn names_are_the_servers() {
        let names: Vec<String> = WANTED.iter().map(Wanted::name).collect();
        assert_eq!(
            names,
            ["checkpoint.processed_files_1", "job_id_1", "created_at_-1"]
        );
    }
}
