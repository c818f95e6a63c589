//! The audit pipeline that runs inside the server.
//!
//! For each selected job the server computes a small digest: counters,
//! array sizes, distinct counts and a quick verdict on whether anything
//! path-related could be wrong. Only when that verdict says so does the
//! digest carry the job's paths (never its OCR text); normalisation of
//! Unicode and the final findings happen in [`crate::audit`]. A clean job
//! thus costs the network a few hundred bytes, however many results it
//! holds.
//!
//! Field paths through arrays of documents are written with `$map`, not
//! `"$checkpoint.results.file_path"`: both give the same on mongod, and
//! only `$map` works on every server dupcheck is tested against.
//!
//! What the pipeline costs the server is mostly what it copies. A server may
//! copy a value each time an expression names it (SecantusDB does), and the
//! results array, with its OCR text, is most of a document: so it is named
//! as few times as the digest allows. And `$map` or `$filter` may copy every
//! variable in scope for each element, so the per-path checks run in stages
//! of their own, where nothing else is in scope, on one string holding every
//! processed path rather than path by path.
//!
//! Jobs are digested a chunk at a time ([`digest_documents`]), so that a
//! server that holds an aggregation's whole input in memory holds a few
//! jobs, not the collection. docs/benchmarks.md has figures.

use std::collections::{HashMap, VecDeque};
use std::future::IntoFuture;

use bson::{doc, Bson, Document};
use futures_util::stream::{Stream, StreamExt};
use mongodb::options::{AggregateOptions, FindOptions};

use crate::connect::Jobs;
use crate::digest::{
    date, id_text, Counter, Counters, JobDigest, PathEntry, PathLists, Shape, Shapes, Sizes,
};
use crate::error::{Error, Result};
use crate::select::Selection;

/// Jobs digested by one aggregation: the server reads and decodes only
/// these at a time (see [`digest_documents`]).
pub const CHUNK: usize = 50;

/// The one aggregation that digests every selected job, newest first.
/// [`digest_documents`] runs the same stages a chunk of jobs at a time;
/// this form is kept for comparison in the benchmark harness.
pub fn pipeline(selection: &Selection) -> Vec<Document> {
    let mut stages = vec![doc! { "$match": selection.filter() }];
    let newest_first = doc! { "$sort": { "created_at": -1, "_id": -1 } };
    if let Some(limit) = selection.limit {
        stages.push(newest_first.clone());
        stages.push(doc! { "$limit": limit as i64 });
        stages.extend(digest_stages());
    } else {
        stages.extend(digest_stages());
        stages.push(newest_first);
    }
    stages
}

/// The aggregation that digests the jobs with these `_id`s, in no order.
pub fn chunk_pipeline(ids: &[Bson]) -> Vec<Document> {
    let mut stages = vec![doc! { "$match": { "_id": { "$in": ids } } }];
    stages.extend(digest_stages());
    stages
}

/// The query that lists the selected jobs' `_id`s, newest first: the
/// order of scan's output. The `created_at` index serves both the window
/// and the order; projecting `created_at` (not `_id` alone) keeps the
/// listing cheap on servers that copy projected fields straight from the
/// stored document.
pub fn listing(selection: &Selection) -> (Document, FindOptions) {
    let options = FindOptions::builder()
        .sort(doc! { "created_at": -1, "_id": -1 })
        .projection(doc! { "_id": 1, "created_at": 1 })
        .limit(selection.limit.map(|n| n as i64))
        .allow_disk_use(true)
        .batch_size(1000)
        .build();
    (selection.filter(), options)
}

// Working fields the digest stages add to each job document, and drop.
const BYTES: &str = "$_dupcheck_bytes";
const RESULTS_TYPE: &str = "$_dupcheck_results_type";
const JOINED: &str = "$_dupcheck_processed_joined";
const PATH_CHECK: &str = "$_dupcheck_path_check";

/// The stages that turn job documents into digests.
fn digest_stages() -> Vec<Document> {
    // The size is of the document as stored, before fields are added.
    let first = doc! { "$addFields": {
        &BYTES[1..]: { "$bsonSize": "$$ROOT" },
        &RESULTS_TYPE[1..]: { "$type": "$checkpoint.results" },
        &JOINED[1..]: joined_paths(),
    } };
    let second = doc! { "$addFields": { &PATH_CHECK[1..]: path_check() } };
    vec![first, second, digest_stage()]
}

fn array_or_empty(field: &str) -> Bson {
    Bson::Document(doc! { "$cond": [{ "$isArray": field }, field, []] })
}

fn paths_of(field: &str) -> Bson {
    Bson::Document(doc! {
        "$map": { "input": array_or_empty(field), "in": "$$this.file_path" }
    })
}

fn size(of: &str) -> Bson {
    Bson::Document(doc! { "$size": of })
}

fn distinct(of: Bson) -> Bson {
    Bson::Document(doc! { "$size": { "$setUnion": [of] } })
}

/// A path spelt in a way [`crate::paths::normalize`] would change, or not a
/// string at all. Non-ASCII is always suspect: it may be decomposed.
///
/// String operators fail on mongod when given a non-string, and `$cond`
/// is the one operator sure to evaluate only the branch it takes; byte
/// offsets are only ever searched, never cut, since cutting a string in
/// the middle of a UTF-8 character is an error on mongod too.
fn odd_path() -> Document {
    let len = doc! { "$strLenBytes": "$$this" };
    let last_two = doc! { "$max": [0, { "$subtract": [len.clone(), 2] }] };
    let checks = doc! { "$or": [
        { "$ne": [len.clone(), { "$strLenCP": "$$this" }] },
        { "$gte": [{ "$indexOfBytes": ["$$this", "//"] }, 0] },
        { "$gte": [{ "$indexOfBytes": ["$$this", "/./"] }, 0] },
        { "$eq": [{ "$indexOfBytes": ["$$this", "./"] }, 0] },
        { "$and": [
            { "$gt": [len.clone(), 0] },
            { "$eq": [
                { "$indexOfBytes": [
                    "$$this", "/", { "$subtract": [len.clone(), 1] }
                ] },
                { "$subtract": [len.clone(), 1] },
            ] },
        ] },
        // A trailing "." segment ("/d/a.jpg/.") is dropped, and the empty
        // path becomes ".": searched from max(0, len - 2), so never cut.
        { "$eq": [len.clone(), 0] },
        { "$eq": [
            { "$indexOfBytes": ["$$this", "/.", last_two.clone()] },
            last_two,
        ] },
    ] };
    doc! { "$cond": [{ "$eq": [{ "$type": "$$this" }, "string"] }, checks, true] }
}

/// The base name of a path, as the aggregator keys its reports by it.
fn base_name() -> Document {
    doc! { "$cond": [
        { "$eq": [{ "$type": "$$this" }, "string"] },
        { "$arrayElemAt": [{ "$split": ["$$this", "/"] }, -1] },
        "$$this",
    ] }
}

/// Every processed path on a line of its own, between line breaks: `"\n"`,
/// then each path and `"\n"`. A processed file that is not a string is
/// written `//`, which the odd-spelling check always catches.
fn joined_paths() -> Document {
    doc! { "$reduce": {
        "input": array_or_empty("$checkpoint.processed_files"),
        "initialValue": "\n",
        "in": { "$cond": [
            { "$eq": [{ "$type": "$$this" }, "string"] },
            { "$concat": ["$$value", "$$this", "\n"] },
            { "$concat": ["$$value", "//\n"] },
        ] },
    } }
}

fn str_len(of: impl Into<Bson>) -> Bson {
    Bson::Document(doc! { "$strLenBytes": of.into() })
}

fn replace_all(input: impl Into<Bson>, find: impl Into<Bson>, with: &str) -> Bson {
    Bson::Document(doc! { "$replaceAll": {
        "input": input.into(), "find": find.into(), "replacement": with
    } })
}

/// Whether a processed path is spelt oddly or two share a base name: the
/// path-related part of the verdict. The digest stage uses it only beside
/// its count checks, and when those pass the results' and errors' paths
/// are exactly the processed files, none repeated; so checking processed
/// files alone is checking every path. The common case costs a handful of
/// operators per job on the joined string; a path holding a line break,
/// or paths in several folders, are checked path by path.
fn path_check() -> Document {
    let processed = array_or_empty("$checkpoint.processed_files");
    let count = Bson::Document(doc! { "$size": processed.clone() });

    // One line per path: no path holds a line break of its own. Then each
    // search below can only match within one path, or at its ends.
    let one_per_line = doc! { "$eq": [
        { "$subtract": [str_len(JOINED), str_len(replace_all(JOINED, "\n", ""))] },
        { "$add": [count.clone(), 1] },
    ] };
    let has = |s: &str| doc! { "$gte": [{ "$indexOfBytes": [JOINED, s] }, 0] };
    // The same conditions as odd_path(), path by path: not ASCII, "//",
    // "/./", leading "./", trailing "/", empty, trailing "/.".
    let odd_line = doc! { "$or": [
        { "$ne": [str_len(JOINED), { "$strLenCP": JOINED }] },
        has("//"), has("/./"), has("\n./"), has("/\n"), has("\n\n"), has("/.\n"),
    ] };
    let odd_one = doc! { "$gt": [
        { "$size": { "$filter": { "input": processed.clone(), "cond": odd_path() } } }, 0
    ] };

    // All in the folder of the first path, each a name without "/" after
    // it: then no two share a base name. Removing "\n<folder>/" from the
    // start of every line must shorten the joined string by that much per
    // path and leave no "/".
    let folder = doc! { "$substrBytes": [
        "$$first", 0,
        { "$subtract": [
            str_len("$$first"),
            str_len(doc! { "$arrayElemAt": [{ "$split": ["$$first", "/"] }, -1] }),
        ] },
    ] };
    let rest = replace_all(JOINED, doc! { "$concat": ["\n", "$$folder"] }, "\n");
    let one_folder = doc! { "$let": {
        "vars": { "first": { "$arrayElemAt": [processed.clone(), 0] } },
        "in": { "$cond": [
            { "$eq": [{ "$type": "$$first" }, "string"] },
            { "$let": { "vars": { "folder": folder }, "in": { "$let": {
                "vars": { "rest": rest },
                "in": { "$and": [
                    one_per_line.clone(),
                    { "$gt": [str_len("$$folder"), 0] },
                    { "$eq": [
                        { "$subtract": [str_len(JOINED), str_len("$$rest")] },
                        { "$multiply": [count, str_len("$$folder")] },
                    ] },
                    { "$eq": [{ "$indexOfBytes": ["$$rest", "/"] }, -1] },
                ] },
            } } } },
            false,
        ] },
    } };
    let names_collide = doc! { "$let": {
        "vars": { "names": { "$map": { "input": processed, "in": base_name() } } },
        "in": { "$ne": [distinct(Bson::String("$$names".into())), size("$$names")] },
    } };

    doc! { "$or": [
        { "$cond": [one_per_line, odd_line, odd_one] },
        { "$cond": [one_folder, false, names_collide] },
    ] }
}

fn digest_stage() -> Document {
    // The inner $let sees the four lists and their distinct sets.
    let verdict = doc! { "$or": [
        { "$ne": [size("$$rp"), size("$$ur")] },
        { "$ne": [size("$$ep"), size("$$ue")] },
        { "$ne": [size("$$pf"), size("$$up")] },
        { "$ne": [size("$$all"), size("$$up")] },
        { "$ne": [size("$$rec"), size("$$up")] },
        { "$gt": [{ "$size": { "$setIntersection": ["$$ur", "$$ue"] } }, 0] },
        PATH_CHECK,
    ] };

    let inner = doc! {
        "$let": {
            "vars": {
                "ur": { "$setUnion": ["$$rp"] },
                "ue": { "$setUnion": ["$$ep"] },
                "up": { "$setUnion": ["$$pf"] },
                "rec": { "$setUnion": ["$$rp", "$$ep"] },
                "all": { "$setUnion": ["$$rp", "$$ep", "$$pf"] },
            },
            "in": {
                "results": size("$$rp"),
                "errors": size("$$ep"),
                "processed": size("$$pf"),
                "message_ids": size("$$mi"),
                "distinct_results": size("$$ur"),
                "distinct_errors": size("$$ue"),
                "distinct_processed": size("$$up"),
                "distinct_message_ids": distinct(Bson::String("$$mi".into())),
                "distinct_recorded": size("$$rec"),
                "suspect": verdict,
            }
        }
    };

    doc! { "$project": {
        "job_id": 1,
        "status": 1,
        "created_at": 1,
        "total_files": 1,
        "published_count": 1,
        "consumed_count": 1,
        "progress_current": "$progress.current",
        "summary_successful": "$results.summary.successful",
        "summary_failed": "$results.summary.failed",
        "bytes": BYTES,
        "shapes": {
            "results": RESULTS_TYPE,
            "errors": { "$type": "$checkpoint.errors" },
            "processed": { "$type": "$checkpoint.processed_files" },
            "message_ids": { "$type": "$checkpoint.processed_message_ids" },
        },
        "facts": { "$let": {
            "vars": {
                // The results array is named once more, only if an array.
                "rp": { "$map": {
                    "input": { "$cond": [
                        { "$eq": [RESULTS_TYPE, "array"] }, "$checkpoint.results", []
                    ] },
                    "in": "$$this.file_path",
                } },
                "ep": paths_of("$checkpoint.errors"),
                "pf": array_or_empty("$checkpoint.processed_files"),
                "mi": array_or_empty("$checkpoint.processed_message_ids"),
            },
            "in": { "$let": {
                "vars": { "sizes": inner },
                "in": {
                    "sizes": "$$sizes",
                    "paths": { "$cond": [
                        "$$sizes.suspect",
                        { "results": "$$rp", "errors": "$$ep", "processed": "$$pf" },
                        null
                    ] },
                }
            } },
        } },
    } }
}

/// Streams the digests of the selected jobs, newest first.
pub async fn digests<'a>(
    jobs: &'a Jobs,
    selection: &Selection,
) -> Result<impl Stream<Item = Result<JobDigest>> + 'a> {
    let documents = digest_documents(jobs, selection).await?;
    Ok(documents.map(|item| item.and_then(|doc| from_server(&doc))))
}

/// Streams the selected jobs' digests as the server made them, newest
/// first.
///
/// Two steps, so that the server holds a few jobs at a time however many
/// are selected: a query lists the selected `_id`s in order (the
/// `created_at` index serves it), and each run of [`CHUNK`] of them is
/// digested by one aggregation that reads those jobs by `_id`. A server
/// that materialises an aggregation's whole input (SecantusDB does) would
/// otherwise decode every selected job at once: gigabytes for a
/// collection of large jobs, and slower for it. A job deleted between
/// the two steps is left out; one changed in between is digested as it
/// is when its chunk is read.
pub async fn digest_documents<'a>(
    jobs: &'a Jobs,
    selection: &Selection,
) -> Result<impl Stream<Item = Result<Document>> + 'a> {
    let (filter, options) = listing(selection);
    let ids = jobs
        .answer(
            "listing the selected jobs",
            jobs.collection
                .find(filter)
                .with_options(options)
                .into_future(),
        )
        .await?;
    let state = Chunks {
        jobs,
        ids,
        ready: VecDeque::new(),
        done: false,
    };
    Ok(futures_util::stream::unfold(
        state,
        |mut state| async move {
            loop {
                if let Some(item) = state.ready.pop_front() {
                    return Some((item, state));
                }
                if state.done {
                    return None;
                }
                state.next_chunk().await;
            }
        },
    ))
}

/// Where [`digest_documents`] is: the listing, and the digests of the
/// chunk read last that are still to be handed on.
struct Chunks<'a> {
    jobs: &'a Jobs,
    ids: mongodb::Cursor<Document>,
    ready: VecDeque<Result<Document>>,
    done: bool,
}

impl Chunks<'_> {
    /// Reads the next chunk of the listing and digests it. An error ends
    /// the stream after the digests read before it.
    async fn next_chunk(&mut self) {
        let mut ids = Vec::with_capacity(CHUNK);
        let mut failed = None;
        while ids.len() < CHUNK {
            let next = self.jobs.answer("listing the selected jobs", async {
                self.ids.next().await.transpose()
            });
            match next.await {
                Ok(Some(listed)) => ids.push(listed.get("_id").cloned().unwrap_or(Bson::Null)),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
                Ok(None) => {
                    self.done = true;
                    break;
                }
            }
        }
        if !ids.is_empty() {
            match digest_chunk(self.jobs, &ids).await {
                Ok(digests) => self.ready.extend(digests.into_iter().map(Ok)),
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            self.ready.push_back(Err(e));
            self.done = true;
        }
    }
}

/// The digests of the jobs with these `_id`s, in the order given.
async fn digest_chunk(jobs: &Jobs, ids: &[Bson]) -> Result<Vec<Document>> {
    let options = AggregateOptions::builder()
        .allow_disk_use(true)
        .batch_size(CHUNK as u32)
        .build();
    let doing = "digesting jobs";
    let mut cursor = jobs
        .answer(
            doing,
            jobs.collection
                .aggregate(chunk_pipeline(ids))
                .with_options(options)
                .into_future(),
        )
        .await?;
    let mut by_id = HashMap::with_capacity(ids.len());
    while let Some(doc) = jobs
        .answer(doing, async { cursor.next().await.transpose() })
        .await?
    {
        by_id.insert(id_key(doc.get("_id")), doc);
    }
    Ok(ids
        .iter()
        .filter_map(|id| by_id.remove(&id_key(Some(id))))
        .collect())
}

/// An `_id` as a map key: its canonical Extended JSON, which tells apart
/// values that compare unequal in MongoDB (an ObjectId and its hex string).
fn id_key(id: Option<&Bson>) -> String {
    id.cloned()
        .unwrap_or(Bson::Null)
        .into_canonical_extjson()
        .to_string()
}

/// Reads one digest as the pipeline produced it.
pub fn from_server(doc: &Document) -> Result<JobDigest> {
    let bad = |what: &str| Error::input(format!("unexpected digest from the server: {what}"));
    let facts = doc.get_document("facts").map_err(|_| bad("no facts"))?;
    let sizes = facts.get_document("sizes").map_err(|_| bad("no sizes"))?;
    let shapes = doc.get_document("shapes").map_err(|_| bad("no shapes"))?;

    let count = |name: &str| -> u64 {
        Counter::from_bson(sizes.get(name))
            .value()
            .unwrap_or(0)
            .max(0) as u64
    };
    let shape = |name: &str| match shapes.get_str(name) {
        Ok("missing") | Err(_) => Shape::Missing,
        Ok("array") => Shape::Array,
        Ok(other) => Shape::NotArray(other.to_owned()),
    };
    let list = |lists: &Document, name: &str| -> Vec<PathEntry> {
        match lists.get_array(name) {
            Ok(items) => items
                .iter()
                .map(|b| match b {
                    Bson::Null => PathEntry::Invalid("missing".to_owned()),
                    other => PathEntry::from_bson(Some(other)),
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    };
    let paths = facts.get_document("paths").ok().map(|lists| PathLists {
        results: list(lists, "results"),
        errors: list(lists, "errors"),
        processed: list(lists, "processed"),
    });

    Ok(JobDigest {
        id: id_text(doc.get("_id")),
        job_id: doc.get_str("job_id").ok().map(str::to_owned),
        status: doc.get_str("status").ok().map(str::to_owned),
        created_at: date(doc.get("created_at")),
        bytes: Counter::from_bson(doc.get("bytes"))
            .value()
            .map(|b| b as u64),
        counters: Counters {
            total_files: Counter::from_bson(doc.get("total_files")),
            published_count: Counter::from_bson(doc.get("published_count")),
            consumed_count: Counter::from_bson(doc.get("consumed_count")),
            progress_current: Counter::from_bson(doc.get("progress_current")),
            summary_successful: Counter::from_bson(doc.get("summary_successful")),
            summary_failed: Counter::from_bson(doc.get("summary_failed")),
        },
        shapes: Shapes {
            results: shape("results"),
            errors: shape("errors"),
            processed: shape("processed"),
            message_ids: shape("message_ids"),
        },
        sizes: Sizes {
            results: count("results"),
            errors: count("errors"),
            processed: count("processed"),
            message_ids: count("message_ids"),
            distinct_results: count("distinct_results"),
            distinct_errors: count("distinct_errors"),
            distinct_processed: count("distinct_processed"),
            distinct_message_ids: count("distinct_message_ids"),
            distinct_recorded: count("distinct_recorded"),
        },
        paths,
    })
}
