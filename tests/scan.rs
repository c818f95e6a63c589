//! Integration tests of `dupcheck scan`, against a real MongoDB wire server
//! (SecantusDB by default, see tests/common and scripts/test.sh; any
//! mongod through DUPCHECK_TEST_URI). Nothing here is mocked: jobs are
//! written to the server, the binary is run, and its output is read back.
//!
//! Where a test passes here but mongod could behave differently, a comment
//! at the test says so.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use chrono::Utc;
use serde_json::{json, Value};
use unicode_normalization::UnicodeNormalization;

use common::*;
use dupcheck::audit::Kind;

// ------------------------------------------------------------------ helpers

/// `dupcheck scan` pointed at this test's database, with `extra` flags.
fn scan_args(t: &TestDb, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["scan".to_owned()];
    args.extend(t.flags());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Parses stdout as the JSON report, showing the run on failure.
fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}); exit {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            stdout(out),
            stderr(out)
        )
    })
}

/// Scans the server with `--format json` and these flags.
fn scan_server(t: &TestDb, extra: &[&str]) -> (Value, Output) {
    let mut flags = vec!["--format", "json"];
    flags.extend_from_slice(extra);
    let out = dupcheck(scan_args(t, &flags));
    (json_of(&out), out)
}

/// `dupcheck scan --file PATH` with these flags.
fn file_args(path: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "scan".to_owned(),
        "--file".to_owned(),
        path.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Scans a dump file with `--format json` and these flags.
fn scan_file(path: &Path, extra: &[&str]) -> (Value, Output) {
    let mut flags = vec!["--format", "json"];
    flags.extend_from_slice(extra);
    let out = dupcheck(file_args(path, &flags));
    (json_of(&out), out)
}

/// The job reports of a JSON scan, by the name a person knows them by.
fn by_job(v: &Value) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for j in v["jobs"].as_array().expect("jobs is an array") {
        let name = j["job_id"].as_str().or(j["id"].as_str()).expect("a name");
        assert!(
            map.insert(name.to_owned(), j.clone()).is_none(),
            "{name} reported twice"
        );
    }
    map
}

/// The names of the jobs of a JSON scan, in output order.
fn names(v: &Value) -> Vec<String> {
    v["jobs"]
        .as_array()
        .expect("jobs is an array")
        .iter()
        .map(|j| {
            j["job_id"]
                .as_str()
                .or(j["id"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn sorted(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items
}

fn strs(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A job's findings without their messages, for exact comparison.
fn findings(job: &Value) -> Vec<Value> {
    job["findings"]
        .as_array()
        .expect("findings is an array")
        .iter()
        .map(|f| {
            let mut f = f.clone();
            let obj = f.as_object_mut().expect("a finding is an object");
            assert!(obj.remove("message").is_some_and(|m| m.is_string()));
            f
        })
        .collect()
}

/// Sets a field, dotted paths descending into (and creating) documents.
fn set(doc: &mut Document, path: &str, value: impl Into<Bson>) {
    match path.split_once('.') {
        None => {
            doc.insert(path, value.into());
        }
        Some((head, rest)) => {
            if !matches!(doc.get(head), Some(Bson::Document(_))) {
                doc.insert(head, Document::new());
            }
            let inner = doc.get_document_mut(head).expect("just made a document");
            set(inner, rest, value);
        }
    }
}

/// Removes a field, dotted paths descending into documents.
fn unset(doc: &mut Document, path: &str) {
    match path.split_once('.') {
        None => {
            doc.remove(path);
        }
        Some((head, rest)) => {
            if let Ok(inner) = doc.get_document_mut(head) {
                unset(inner, rest);
            }
        }
    }
}

fn r(path: &str) -> Document {
    result_doc(path, 0, "ocr-worker-1")
}

fn e(path: &str) -> Document {
    error_doc(path)
}

fn f(n: u32) -> String {
    format!("/data/in/f{n}.jpg")
}

/// The job documents of the sample dump, parsed as mongoimport would.
fn sample_docs() -> Vec<Document> {
    let text = std::fs::read_to_string(sample_dump()).expect("read the sample dump");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let value: Value = serde_json::from_str(line).expect("sample line is JSON");
            match Bson::try_from(value).expect("sample line is Extended JSON") {
                Bson::Document(d) => d,
                other => panic!("sample line is not a document: {other:?}"),
            }
        })
        .collect()
}

/// The forms of dump dupcheck reads.
#[derive(Clone, Copy, Debug)]
enum Form {
    /// mongoexport: one relaxed Extended JSON document a line.
    RelaxedLines,
    /// mongoexport --jsonFormat=canonical.
    CanonicalLines,
    /// mongoexport --jsonArray, pretty-printed over many lines.
    RelaxedArray,
    /// mongodump: BSON documents one after another.
    Bson,
}

fn dump_bytes(docs: &[Document], form: Form) -> Vec<u8> {
    let ext = |d: &Document, canonical: bool| {
        let b = Bson::Document(d.clone());
        if canonical {
            b.into_canonical_extjson()
        } else {
            b.into_relaxed_extjson()
        }
    };
    match form {
        Form::RelaxedLines | Form::CanonicalLines => {
            let canonical = matches!(form, Form::CanonicalLines);
            let mut text = String::new();
            for d in docs {
                text.push_str(&ext(d, canonical).to_string());
                text.push('\n');
            }
            text.into_bytes()
        }
        Form::RelaxedArray => {
            let all: Vec<Value> = docs.iter().map(|d| ext(d, false)).collect();
            serde_json::to_vec_pretty(&all).expect("serialise")
        }
        Form::Bson => docs
            .iter()
            .flat_map(|d| bson::to_vec(d).expect("encode BSON"))
            .collect(),
    }
}

fn write_dump(dir: &Path, name: &str, docs: &[Document], form: Form) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, dump_bytes(docs, form)).expect("write dump");
    path
}

/// Inserts `docs`, scans them on the server and from a dump (`--all`), and
/// asserts both give the same report for every job: the in-server quick
/// check with its counts-only audit must agree with the full audit of the
/// paths. Returns the server's reports by job.
///
/// The comparison includes `bytes`: `$bsonSize` on the server against the
/// encoded size of the parsed document. That holds when the server stores
/// the fields in the order given, `_id` first, as SecantusDB and mongod
/// both do.
async fn assert_agree(t: &TestDb, docs: &[Document]) -> BTreeMap<String, Value> {
    t.insert(docs).await;
    let dir = tempfile::tempdir().expect("temp dir");
    // Canonical Extended JSON keeps every type (relaxed turns a small
    // int64 into a number read back as int32, which changes the size).
    let dump = write_dump(dir.path(), "jobs.json", docs, Form::CanonicalLines);
    let (server, out) = scan_server(t, &["--all"]);
    assert!(code(&out) < 2, "server scan failed: {}", stderr(&out));
    let (file, out_f) = scan_file(&dump, &["--all"]);
    assert!(code(&out_f) < 2, "dump scan failed: {}", stderr(&out_f));
    assert_eq!(code(&out), code(&out_f), "exit status differs");
    assert_eq!(server["summary"], file["summary"]);
    let server = by_job(&server);
    let file = by_job(&file);
    assert_eq!(server.len(), docs.len(), "every job is reported once");
    assert_eq!(
        server.keys().collect::<Vec<_>>(),
        file.keys().collect::<Vec<_>>()
    );
    for (name, s) in &server {
        assert_eq!(s, &file[name], "job {name}: server and dump differ");
    }
    server
}

// --------------------------------------------------------------- the race

/// How many results each path has in a stored job.
fn results_per_path(job: &Document) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let results = job
        .get_document("checkpoint")
        .and_then(|c| c.get_array("results"))
        .expect("results array");
    for r in results {
        let path = r.as_document().unwrap().get_str("file_path").unwrap();
        *counts.entry(path.to_owned()).or_insert(0) += 1;
    }
    counts
}

// Concurrent check-then-act writers, as before the fix. The interleaving
// is real (many client tasks, one server), so it depends on timing; it
// reproduced on every run here and is the same race on mongod.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racy_writers_duplicates_are_counted_exactly() {
    let t = TestDb::new("scan_race").await;
    let n = 24;
    t.insert(&[empty_job("race-a", n)]).await;
    let files: Vec<String> = (0..n).map(|i| format!("/data/in/p{i:03}.jpg")).collect();
    let pushed = race(&t.jobs, "race-a", &files, 12).await;
    assert!(
        pushed > n as u64,
        "the race should record some files more than once; pushed {pushed}"
    );

    // What is actually in the document, read independently of dupcheck.
    let stored = t.get("race-a").await;
    let per_path = results_per_path(&stored);
    let total: u64 = per_path.values().sum();
    assert_eq!(total, pushed);
    assert_eq!(per_path.len(), n as usize, "every file has a result");
    let dups: BTreeMap<&String, u64> = per_path
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(p, c)| (p, *c))
        .collect();
    assert!(!dups.is_empty());
    let consumed = stored.get_i32("consumed_count").expect("an int") as i64;

    let (v, out) = scan_server(&t, &["--all"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let job = &by_job(&v)["race-a"];
    let c = &job["counts"];
    assert_eq!(c["results"], total);
    assert_eq!(c["distinct_files"], n);
    assert_eq!(c["duplicate_files"], dups.len());
    assert_eq!(c["extra_entries"], total - n as u64);
    assert_eq!(c["processed_files"], n, "$addToSet keeps one entry a path");
    assert_eq!(c["consumed_count"], consumed);

    let mut reported = BTreeMap::new();
    for f in findings(job) {
        match f["kind"].as_str().unwrap() {
            "duplicate_result" => {
                let path = f["path"].as_str().unwrap().to_owned();
                reported.insert(path, f["count"].as_u64().unwrap());
            }
            "consumed_count_mismatch" => {
                assert_eq!(f["expected"], n);
                assert_eq!(f["actual"], consumed);
            }
            // empty_job's progress is never advanced by the racy save.
            "progress_mismatch" => {
                assert_eq!(f["expected"], n);
                assert_eq!(f["actual"], 0);
            }
            other => panic!("unexpected finding {other}: {f}"),
        }
    }
    let expected: BTreeMap<String, u64> = dups.iter().map(|(p, c)| ((*p).clone(), *c)).collect();
    assert_eq!(reported, expected);

    // The dump of the same document gives the same report.
    let dir = tempfile::tempdir().unwrap();
    let dump = write_dump(dir.path(), "race.bson", &[stored], Form::Bson);
    let (file, _) = scan_file(&dump, &[]);
    assert_eq!(by_job(&file)["race-a"], *job);
}

// The fixed save is one conditional update; its atomicity on one document
// is the same guarantee mongod gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fixed_save_under_the_same_race_records_each_file_once() {
    let t = TestDb::new("scan_fixed").await;
    let n = 24;
    let mut job = empty_job("fixed-a", n);
    // Neither save advances progress; stale progress has its own test.
    unset(&mut job, "progress");
    t.insert(&[job]).await;
    let files: Vec<String> = (0..n).map(|i| format!("/data/in/p{i:03}.jpg")).collect();
    let pushed = race_with(&t.jobs, "fixed-a", &files, 12, Save::Fixed).await;
    assert_eq!(pushed, n as u64);

    let stored = t.get("fixed-a").await;
    let per_path = results_per_path(&stored);
    assert_eq!(per_path.len(), n as usize);
    assert!(per_path.values().all(|c| *c == 1), "{per_path:?}");
    assert_eq!(stored.get_i32("consumed_count").unwrap(), n);

    let (v, out) = scan_server(&t, &["--all"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let job = &by_job(&v)["fixed-a"];
    assert_eq!(findings(job), Vec::<Value>::new());
    assert_eq!(job["counts"]["results"], n);
    assert_eq!(job["counts"]["extra_entries"], 0);
}

// ------------------------------------------------------ every finding kind

/// Where each kind of finding is tested. The match has no wildcard, so a
/// new kind does not compile until it is given a test.
fn tested_in(kind: Kind) -> &'static str {
    match kind {
        Kind::Malformed => "malformed_records_are_findings_and_the_scan_goes_on",
        Kind::NearSizeLimit => "a_document_near_16_mib_is_reported",
        Kind::DuplicateResult
        | Kind::DuplicateError
        | Kind::ResultAndError
        | Kind::RepeatedProcessedFile
        | Kind::UnlistedPath
        | Kind::UnrecordedProcessedFile
        | Kind::PathSpellings
        | Kind::BaseNameCollision
        | Kind::ConsumedCountMismatch
        | Kind::ProgressMismatch
        | Kind::PublishedCountMismatch
        | Kind::TotalFilesMismatch
        | Kind::SummaryMismatch
        | Kind::RepeatedMessageId => "every_finding_kind_on_the_server",
    }
}

const ALL_KINDS: [Kind; 16] = [
    Kind::Malformed,
    Kind::DuplicateResult,
    Kind::DuplicateError,
    Kind::ResultAndError,
    Kind::RepeatedProcessedFile,
    Kind::UnlistedPath,
    Kind::UnrecordedProcessedFile,
    Kind::PathSpellings,
    Kind::BaseNameCollision,
    Kind::ConsumedCountMismatch,
    Kind::ProgressMismatch,
    Kind::PublishedCountMismatch,
    Kind::TotalFilesMismatch,
    Kind::SummaryMismatch,
    Kind::RepeatedMessageId,
    Kind::NearSizeLimit,
];

/// Each kind in a job built for it, with every field of the finding
/// checked; each job is also scanned from a dump, with the same result.
#[tokio::test]
async fn every_finding_kind_on_the_server() {
    let t = TestDb::new("scan_kinds").await;
    let mut docs = Vec::new();
    let mut expect: Vec<(String, Value)> = Vec::new();
    let mut add = |doc: Document, findings: Value| {
        expect.push((doc.get_str("job_id").unwrap().to_owned(), findings));
        docs.push(doc);
    };
    let p = |n| f(n);

    add(
        job_doc(
            "clean",
            "completed",
            vec![r(&p(1))],
            vec![e(&p(2))],
            vec![&p(1), &p(2)],
        ),
        json!([]),
    );
    add(
        job_doc(
            "duplicate-result",
            "processing",
            vec![r(&p(1)), r(&p(1)), r(&p(2)), r(&p(1))],
            vec![],
            vec![&p(1), &p(2)],
        ),
        json!([{ "kind": "duplicate_result", "path": p(1), "count": 3 }]),
    );
    add(
        job_doc(
            "duplicate-error",
            "processing",
            vec![r(&p(1))],
            vec![e(&p(2)), e(&p(2))],
            vec![&p(1), &p(2)],
        ),
        json!([{ "kind": "duplicate_error", "path": p(2), "count": 2 }]),
    );
    add(
        job_doc(
            "result-and-error",
            "processing",
            vec![r(&p(1)), r(&p(2))],
            vec![e(&p(2))],
            vec![&p(1), &p(2)],
        ),
        json!([{ "kind": "result_and_error", "path": p(2) }]),
    );
    add(
        job_doc(
            "repeated-processed",
            "processing",
            vec![r(&p(1)), r(&p(2))],
            vec![],
            vec![&p(1), &p(2), &p(1)],
        ),
        json!([{ "kind": "repeated_processed_file", "path": p(1), "count": 2 }]),
    );
    add(
        job_doc(
            "unlisted",
            "processing",
            vec![r(&p(1)), r(&p(2))],
            vec![],
            vec![&p(1)],
        ),
        json!([{ "kind": "unlisted_path", "path": p(2) }]),
    );
    add(
        job_doc(
            "unrecorded",
            "processing",
            vec![r(&p(1))],
            vec![],
            vec![&p(1), &p(2)],
        ),
        json!([{ "kind": "unrecorded_processed_file", "path": p(2) }]),
    );

    // One file each, recorded once as a result and once in processed_files
    // but spelt differently: only the spellings are wrong.
    let cafe = "/data/in/caf\u{e9}.jpg";
    let cafe_nfd: String = cafe.nfd().collect();
    assert_ne!(cafe, cafe_nfd);
    let pairs: Vec<(String, String)> = vec![
        (cafe.to_owned(), cafe_nfd.clone()),
        (p(1), "/data//in/f1.jpg".to_owned()),
        (p(3) + "/", "/data/in/./f3.jpg".to_owned()),
        ("/data/in/f4.jpg/.".to_owned(), p(4)),
        ("in/rel/g.jpg".to_owned(), "./in/rel/g.jpg".to_owned()),
    ];
    let spelling = |(first, other): &(String, String)| {
        let mut both = vec![first.clone(), other.clone()];
        both.sort();
        json!({ "kind": "path_spellings", "path": first, "paths": both, "count": 2 })
    };
    add(
        job_doc(
            "spellings",
            "processing",
            pairs.iter().map(|(a, _)| r(a)).collect(),
            vec![],
            pairs.iter().map(|(_, b)| b.as_str()).collect(),
        ),
        // In the order of the normal forms: "/data/in/caf..", "/data/in/f1..",
        // "/data/in/f3..", "/data/in/f4..", "in/rel/..".
        Value::Array(pairs.iter().map(spelling).collect()),
    );
    // A trailing "." segment alone: the server's quick check must still
    // see a path worth looking at (it once did not, and the server
    // reported this job clean while the dump did not).
    let dotted = "/data/in/f1.jpg/.";
    add(
        job_doc(
            "trailing-dot",
            "processing",
            vec![r(dotted), r(&p(1))],
            vec![],
            vec![dotted, &p(1)],
        ),
        json!([
            { "kind": "duplicate_result", "path": dotted, "count": 2 },
            { "kind": "repeated_processed_file", "path": dotted, "count": 2 },
            {
                "kind": "path_spellings", "path": dotted,
                "paths": [p(1), dotted], "count": 2,
            },
            { "kind": "consumed_count_mismatch", "field": "consumed_count",
              "expected": 1, "actual": 2 },
            { "kind": "progress_mismatch", "field": "progress.current",
              "expected": 1, "actual": 2 },
        ]),
    );
    // The empty path is "." spelt another way; nothing else is odd here.
    add(
        job_doc(
            "empty-path",
            "processing",
            vec![r(""), r(".")],
            vec![],
            vec!["", "."],
        ),
        json!([
            { "kind": "duplicate_result", "path": "", "count": 2 },
            { "kind": "repeated_processed_file", "path": "", "count": 2 },
            { "kind": "path_spellings", "path": "", "paths": ["", "."], "count": 2 },
            { "kind": "consumed_count_mismatch", "field": "consumed_count",
              "expected": 1, "actual": 2 },
            { "kind": "progress_mismatch", "field": "progress.current",
              "expected": 1, "actual": 2 },
        ]),
    );
    add(
        job_doc(
            "base-names",
            "processing",
            vec![r("/data/in/v2/p.tif"), r("/data/in/v1/p.tif"), r(&p(1))],
            vec![],
            vec!["/data/in/v2/p.tif", "/data/in/v1/p.tif", &p(1)],
        ),
        json!([{
            "kind": "base_name_collision", "path": "p.tif",
            "paths": ["/data/in/v1/p.tif", "/data/in/v2/p.tif"], "count": 2,
        }]),
    );

    let two = || {
        job_doc(
            "",
            "processing",
            vec![r(&p(1)), r(&p(2))],
            vec![],
            vec![&p(1), &p(2)],
        )
    };
    let with = |id: &str, status: &str, changes: &[(&str, Bson)]| {
        let mut d = two();
        set(&mut d, "job_id", id);
        set(&mut d, "status", status);
        if status == "completed" {
            set(&mut d, "results.summary.successful", 2);
            set(&mut d, "results.summary.failed", 0);
        }
        for (path, value) in changes {
            set(&mut d, path, value.clone());
        }
        d
    };
    let counter = |kind: &str, field: &str, expected: i64, actual: i64| {
        json!({
            "kind": kind,
            "field": field,
            "expected": expected,
            "actual": actual,
        })
    };
    add(
        with("consumed", "processing", &[("consumed_count", 3.into())]),
        json!([counter("consumed_count_mismatch", "consumed_count", 2, 3)]),
    );
    add(
        with("progress", "processing", &[("progress.current", 1.into())]),
        json!([counter("progress_mismatch", "progress.current", 2, 1)]),
    );
    add(
        with(
            "published-low",
            "processing",
            &[("published_count", 1.into())],
        ),
        json!([counter("published_count_mismatch", "published_count", 2, 1)]),
    );
    // A running job may have published more than it has recorded yet.
    add(
        with(
            "published-ahead",
            "processing",
            &[("published_count", 5.into())],
        ),
        json!([]),
    );
    add(
        with(
            "published-done",
            "completed",
            &[("published_count", 3.into())],
        ),
        json!([counter("published_count_mismatch", "published_count", 2, 3)]),
    );
    add(
        with("total-done", "completed", &[("total_files", 3.into())]),
        json!([counter("total_files_mismatch", "total_files", 2, 3)]),
    );
    add(
        with("total-running", "processing", &[("total_files", 3.into())]),
        json!([]),
    );
    let mut summary = job_doc(
        "summary",
        "completed",
        vec![r(&p(1)), r(&p(2))],
        vec![e(&p(3))],
        vec![&p(1), &p(2), &p(3)],
    );
    set(&mut summary, "results.summary.successful", 3);
    set(&mut summary, "results.summary.failed", 2);
    add(
        summary,
        json!([
            counter("summary_mismatch", "results.summary.successful", 2, 3),
            counter("summary_mismatch", "results.summary.failed", 1, 2),
        ]),
    );
    add(
        with(
            "message-ids",
            "processing",
            &[(
                "checkpoint.processed_message_ids",
                bson::bson!(["0a1b2c3d", "0a1b2c3e", "0a1b2c3d", "0a1b2c3d"]),
            )],
        ),
        json!([{
            "kind": "repeated_message_id",
            "field": "checkpoint.processed_message_ids",
            "count": 2,
        }]),
    );

    // Every kind this test is the place for is expected somewhere above.
    let expected_kinds: BTreeSet<&str> = expect
        .iter()
        .flat_map(|(_, fs)| fs.as_array().unwrap().iter())
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    for kind in ALL_KINDS {
        if tested_in(kind) == "every_finding_kind_on_the_server" {
            assert!(expected_kinds.contains(kind.name()), "{kind:?} untested");
        }
    }

    let reports = assert_agree(&t, &docs).await;
    for (name, want) in &expect {
        let got = Value::Array(findings(&reports[name]));
        assert_eq!(&got, want, "job {name}");
    }

    let dup = &reports["duplicate-result"]["counts"];
    assert_eq!(dup["results"], 4);
    assert_eq!(dup["distinct_files"], 2);
    assert_eq!(dup["duplicate_files"], 1);
    assert_eq!(dup["extra_entries"], 2);

    let out = dupcheck(scan_args(&t, &["--job", "clean"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = dupcheck(scan_args(&t, &["--job", "clean", "--job", "progress"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
}

// A document close to 16 MiB: both SecantusDB and mongod refuse an update
// that would take a document past 16 MiB, so the limit is real here.
#[tokio::test]
async fn a_document_near_16_mib_is_reported() {
    let t = TestDb::new("scan_big").await;
    let n = 31;
    let mut job = empty_job("big", n);
    set(&mut job, "consumed_count", n);
    set(&mut job, "progress.current", n);
    t.insert(&[job, empty_job("small", 0)]).await;

    let chunk = text("big", 512 * 1024);
    for i in 0..n {
        let path = format!("/data/in/big{i:02}.tif");
        let mut result = result_doc(&path, i, "ocr-worker-1");
        result.insert("text", chunk.as_str());
        result.insert("full_text", "");
        t.jobs
            .update_one(
                doc! { "job_id": "big" },
                doc! {
                    "$push": { "checkpoint.results": result },
                    "$addToSet": { "checkpoint.processed_files": &path },
                },
            )
            .await
            .expect("push a result");
    }
    let stored = t.get("big").await;
    let size = bson::to_vec(&stored).unwrap().len() as u64;
    assert!(
        (15 * 1024 * 1024..16 * 1024 * 1024).contains(&size),
        "{size} bytes"
    );

    // One more such result does not fit.
    let mut more = result_doc("/data/in/one-more.tif", 99, "ocr-worker-1");
    more.insert("text", chunk.as_str());
    let refused = t
        .jobs
        .update_one(
            doc! { "job_id": "big" },
            doc! { "$push": { "checkpoint.results": more } },
        )
        .await;
    assert!(refused.is_err(), "the server took a document past 16 MiB");

    let (v, out) = scan_server(&t, &["--all"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let reports = by_job(&v);
    let big = &reports["big"];
    assert_eq!(
        Value::Array(findings(big)),
        json!([{ "kind": "near_size_limit", "actual": size }])
    );
    assert_eq!(big["bytes"], size);
    assert_eq!(big["counts"]["results"], n);
    assert_eq!(findings(&reports["small"]), Vec::<Value>::new());
    // The server sends the digest, not the text: the whole report is small.
    assert!(out.stdout.len() < 64 * 1024, "{} bytes", out.stdout.len());

    let dir = tempfile::tempdir().unwrap();
    let dump = write_dump(dir.path(), "big.bson", &[stored], Form::Bson);
    let (file, out) = scan_file(&dump, &[]);
    assert_eq!(code(&out), 1);
    assert_eq!(by_job(&file)["big"], *big);
}

// ----------------------------------------------------------- malformed

#[tokio::test]
async fn malformed_records_are_findings_and_the_scan_goes_on() {
    let t = TestDb::new("scan_malformed").await;
    let p = |n| f(n);
    let base = |id: &str| {
        job_doc(
            id,
            "processing",
            vec![r(&p(1)), r(&p(2))],
            vec![],
            vec![&p(1), &p(2)],
        )
    };
    let malformed = |field: &str| json!({ "kind": "malformed", "field": field });
    let mut docs = Vec::new();
    let mut expect: Vec<(String, Value)> = Vec::new();

    docs.push(base("ok-before"));
    expect.push(("ok-before".into(), json!([])));

    let mut d = job_doc("results-string", "processing", vec![], vec![], vec![]);
    set(&mut d, "checkpoint.results", "none");
    docs.push(d);
    expect.push((
        "results-string".into(),
        json!([malformed("checkpoint.results")]),
    ));

    let mut d = base("errors-number");
    set(&mut d, "checkpoint.errors", 0);
    docs.push(d);
    expect.push((
        "errors-number".into(),
        json!([malformed("checkpoint.errors")]),
    ));

    let mut d = base("processed-object");
    set(&mut d, "checkpoint.processed_files", doc! { "a": 1 });
    docs.push(d);
    expect.push((
        "processed-object".into(),
        json!([
            malformed("checkpoint.processed_files"),
            { "kind": "unlisted_path", "path": p(1) },
            { "kind": "unlisted_path", "path": p(2) },
        ]),
    ));

    let mut d = base("message-ids-string");
    set(&mut d, "checkpoint.processed_message_ids", "0a1b");
    docs.push(d);
    expect.push((
        "message-ids-string".into(),
        json!([malformed("checkpoint.processed_message_ids")]),
    ));

    // Counters as strings or fractions are malformed; an integral double
    // is a number like any other.
    let mut d = base("string-counters");
    set(&mut d, "consumed_count", "2");
    set(&mut d, "total_files", 2.5);
    set(&mut d, "published_count", 2.0);
    docs.push(d);
    expect.push((
        "string-counters".into(),
        json!([malformed("total_files"), malformed("consumed_count")]),
    ));

    let mut d = base("no-consumed");
    unset(&mut d, "consumed_count");
    docs.push(d);
    expect.push(("no-consumed".into(), json!([malformed("consumed_count")])));

    let mut d = job_doc(
        "no-file-path",
        "processing",
        vec![r(&p(1)), r(&p(2)), r(&p(3))],
        vec![],
        vec![&p(1), &p(3)],
    );
    set(&mut d, "consumed_count", 2);
    set(&mut d, "progress.current", 2);
    let results = d
        .get_document_mut("checkpoint")
        .unwrap()
        .get_array_mut("results")
        .unwrap();
    results[1].as_document_mut().unwrap().remove("file_path");
    docs.push(d);
    expect.push((
        "no-file-path".into(),
        json!([malformed("checkpoint.results")]),
    ));

    // Paths that are not strings, in results and in processed_files.
    let mut d = base("non-string-paths");
    let cp = d.get_document_mut("checkpoint").unwrap();
    let results = cp.get_array_mut("results").unwrap();
    let mut odd = r("x");
    odd.insert("file_path", 7);
    results.push(Bson::Document(odd));
    cp.get_array_mut("processed_files")
        .unwrap()
        .push(Bson::Int32(42));
    docs.push(d);
    expect.push((
        "non-string-paths".into(),
        json!([
            malformed("checkpoint.results"),
            malformed("checkpoint.processed_files"),
        ]),
    ));

    let mut d = job_doc(
        "",
        "processing",
        vec![r(&p(1)), r(&p(1))],
        vec![],
        vec![&p(1)],
    );
    d.remove("job_id");
    let no_job_id = d.get_object_id("_id").unwrap().to_hex();
    docs.push(d);
    expect.push((
        no_job_id.clone(),
        json!([
            malformed("job_id"),
            { "kind": "duplicate_result", "path": p(1), "count": 2 },
        ]),
    ));

    let mut d = base("");
    set(&mut d, "job_id", 12345);
    let int_job_id = d.get_object_id("_id").unwrap().to_hex();
    docs.push(d);
    expect.push((int_job_id.clone(), json!([malformed("job_id")])));

    let mut d = job_doc("no-checkpoint", "processing", vec![], vec![], vec![]);
    d.remove("checkpoint");
    docs.push(d);
    expect.push((
        "no-checkpoint".into(),
        json!([
            malformed("checkpoint.results"),
            malformed("checkpoint.errors"),
            malformed("checkpoint.processed_files"),
        ]),
    ));

    // Message ids that are not strings are counted by value, as the
    // server's $setUnion counts them. (mongod's $setUnion also takes 1 and
    // 1.0 for one value, the dump does not; these ids avoid that case.)
    let mut d = base("int-message-ids");
    set(
        &mut d,
        "checkpoint.processed_message_ids",
        bson::bson!([1, 2, 3]),
    );
    docs.push(d);
    expect.push(("int-message-ids".into(), json!([])));

    let mut d = base("dup-after");
    d.get_document_mut("checkpoint")
        .unwrap()
        .get_array_mut("results")
        .unwrap()
        .push(Bson::Document(r(&p(2))));
    docs.push(d);
    expect.push((
        "dup-after".into(),
        json!([{ "kind": "duplicate_result", "path": p(2), "count": 2 }]),
    ));

    let reports = assert_agree(&t, &docs).await;
    for (name, want) in &expect {
        let got = Value::Array(findings(&reports[name]));
        assert_eq!(&got, want, "job {name}");
    }

    // The messages say where and what.
    let message = |job: &str, at: usize| {
        reports[job]["findings"][at]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        message("results-string", 0),
        "checkpoint.results is a string, not an array"
    );
    assert_eq!(
        message("string-counters", 1),
        "consumed_count is a string, not a whole number"
    );
    assert_eq!(
        message("no-file-path", 0),
        "checkpoint.results: 1 entry without a string file_path at 1 (missing)"
    );
    assert_eq!(
        message("non-string-paths", 0),
        "checkpoint.results: 1 entry without a string file_path at 2 (int)"
    );
    assert_eq!(
        message("non-string-paths", 1),
        "checkpoint.processed_files: 1 entry that is not a string at 2 (int)"
    );
    assert_eq!(reports[&no_job_id]["job_id"], Value::Null);
    assert_eq!(reports[&no_job_id]["id"], no_job_id.as_str());
    assert_eq!(
        reports["string-counters"]["counts"]["consumed_count"],
        Value::Null
    );
    assert_eq!(reports["string-counters"]["counts"]["published_count"], 2);
}

// --------------------------------------------------- server and dump agree

#[tokio::test]
async fn server_and_dump_agree_on_the_sample() {
    let t = TestDb::new("scan_agree_sample").await;
    let docs = sample_docs();
    let reports = assert_agree(&t, &docs).await;
    // The sample has a job for each kind of trouble; make sure the
    // comparison above was not between two empty reports.
    let kinds: BTreeSet<String> = reports
        .values()
        .flat_map(findings)
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect();
    for kind in [
        "duplicate_result",
        "duplicate_error",
        "path_spellings",
        "base_name_collision",
        "malformed",
        "summary_mismatch",
    ] {
        assert!(kinds.contains(kind), "{kind} in {kinds:?}");
    }
    let incident = &reports["6fd2ff5c-a6e7-445c-affd-90d41621d789"]["counts"];
    assert_eq!(incident["results"], 19);
    assert_eq!(incident["distinct_files"], 16);
    assert_eq!(incident["extra_entries"], 3);
}

/// splitmix64: small, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// An index into `weights`, chosen in proportion to them.
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut x = self.below(weights.iter().sum());
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        unreachable!()
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// One file of a generated job, as the generator knows it.
struct FileModel {
    name: String,
    results: u64,
    errors: u64,
    processed: u64,
    spellings: BTreeSet<String>,
}

/// A generated job and what should be found in it, worked out from how it
/// was made rather than from path normalisation.
struct JobModel {
    doc: Document,
    files: Vec<FileModel>,
    /// Every spelling used, to the file it spells.
    spelt: HashMap<String, usize>,
    expected: Vec<String>,
}

const FOLDERS: [&str; 4] = [
    "/data/in/vol1",
    "/data/in/vol2",
    "/mnt/ocr/\u{15a}\u{101}rad\u{101}",
    "in/rel",
];
const NAMES: [&str; 5] = [
    "page-001.jpg",
    "page-002.jpg",
    "caf\u{e9}-3.jpg",
    "\u{1e6d}\u{12b}k\u{101}-4.png",
    "scan 05.tif",
];

fn spell(rng: &mut Rng, folder: &str, name: &str, tidy: bool) -> String {
    let plain = format!("{folder}/{name}");
    if tidy || rng.chance(60) {
        return plain;
    }
    match rng.below(8) {
        0 => format!("{folder}//{name}"),
        1 => format!("{folder}/./{name}"),
        2 => format!("{plain}/"),
        3 => plain.nfd().collect(),
        4 if folder.starts_with('/') => format!("/{plain}"),
        4 => format!("./{plain}"),
        5 => format!("{plain}/."),
        6 => format!("{folder}//{name}").nfd().collect(),
        _ => format!("{folder}/{}", name.nfd().collect::<String>()),
    }
}

fn generate(rng: &mut Rng, j: usize) -> JobModel {
    let job_id = format!("gen-{j:03}");
    // Tidy jobs have one plain spelling a path and at most one outcome a
    // file; some of them also have right counters, so clean jobs (the
    // server's counts-only audit) are among those generated.
    let kind = rng.weighted(&[25, 20, 55]);
    let tidy = kind < 2;
    let right_counters = kind == 0;
    let mut files: Vec<FileModel> = Vec::new();
    let mut used = BTreeSet::new();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    let mut processed = Vec::new();
    let mut spelt = HashMap::new();

    for i in 0..1 + rng.below(10) as usize {
        let folder = FOLDERS[rng.below(4) as usize];
        let name = if rng.chance(50) {
            NAMES[rng.below(5) as usize].to_owned()
        } else {
            format!("f{j}-{i}.jpg")
        };
        if !used.insert(format!("{folder}/{name}")) {
            continue;
        }
        let (nr, ne, np) = if tidy {
            let outcome = rng.weighted(&[80, 15, 5]);
            ((outcome == 0) as u64, (outcome == 1) as u64, 1)
        } else {
            (
                rng.weighted(&[20, 55, 15, 10]) as u64,
                rng.weighted(&[75, 15, 10]) as u64,
                rng.weighted(&[10, 80, 10]) as u64,
            )
        };
        if nr + ne + np == 0 {
            continue;
        }
        let at = files.len();
        let mut model = FileModel {
            name: name.clone(),
            results: nr,
            errors: ne,
            processed: np,
            spellings: BTreeSet::new(),
        };
        let mut entry = |rng: &mut Rng| {
            let s = spell(rng, folder, &name, tidy);
            model.spellings.insert(s.clone());
            spelt.insert(s.clone(), at);
            s
        };
        for _ in 0..nr {
            results.push(result_doc(&entry(rng), i as i32, "ocr-worker-2"));
        }
        for _ in 0..ne {
            errors.push(error_doc(&entry(rng)));
        }
        for _ in 0..np {
            processed.push(entry(rng));
        }
        files.push(model);
    }
    rng.shuffle(&mut results);
    rng.shuffle(&mut errors);
    rng.shuffle(&mut processed);

    let distinct = files.iter().filter(|f| f.results + f.errors > 0).count() as i64;
    let with_result = files.iter().filter(|f| f.results > 0).count() as i64;
    let only_error = files
        .iter()
        .filter(|f| f.results == 0 && f.errors > 0)
        .count() as i64;
    let entries = (results.len() + errors.len()) as i64;
    let near = |rng: &mut Rng, n: i64| {
        if right_counters {
            n
        } else {
            (n + rng.below(3) as i64 - 1).max(0)
        }
    };
    let right = |rng: &mut Rng| right_counters || rng.chance(70);
    let consumed = match rng.weighted(&[60, 25, 15]) {
        _ if right_counters => distinct,
        0 => distinct,
        1 => entries,
        _ => near(rng, distinct),
    };
    let progress = if right(rng) {
        consumed
    } else {
        near(rng, distinct)
    };
    let published = if right(rng) {
        distinct
    } else {
        near(rng, distinct)
    };
    let total = if right(rng) {
        published
    } else {
        near(rng, distinct)
    };
    let status = ["processing", "completed", "completed", "paused"][rng.below(4) as usize];
    let completed = status == "completed";
    let successful = if right(rng) {
        with_result
    } else {
        results.len() as i64
    };
    let failed = if right(rng) {
        only_error
    } else {
        errors.len() as i64
    };
    let message_ids: Option<Vec<String>> = rng.chance(50).then(|| {
        let mut ids: Vec<String> = (0..processed.len())
            .map(|k| format!("{:016x}", (j as u64) << 32 | k as u64))
            .collect();
        if !ids.is_empty() && !right_counters && rng.chance(30) {
            ids.push(ids[0].clone());
        }
        ids
    });

    let mut doc = job_doc(
        &job_id,
        status,
        results,
        errors,
        processed.iter().map(String::as_str).collect(),
    );
    set(&mut doc, "consumed_count", consumed);
    set(&mut doc, "progress.current", progress);
    set(&mut doc, "published_count", published);
    set(&mut doc, "total_files", total);
    if completed {
        set(&mut doc, "results.summary.successful", successful);
        set(&mut doc, "results.summary.failed", failed);
    }
    if let Some(ids) = &message_ids {
        set(&mut doc, "checkpoint.processed_message_ids", ids.clone());
    }

    // What should be found, in the keys `finding_key` gives.
    let mut expected = Vec::new();
    for (at, file) in files.iter().enumerate() {
        if file.results > 1 {
            expected.push(format!("duplicate_result #{at} x{}", file.results));
        }
        if file.errors > 1 {
            expected.push(format!("duplicate_error #{at} x{}", file.errors));
        }
        if file.results > 0 && file.errors > 0 {
            expected.push(format!("result_and_error #{at}"));
        }
        if file.processed > 1 {
            expected.push(format!("repeated_processed_file #{at} x{}", file.processed));
        }
        if file.processed == 0 {
            expected.push(format!("unlisted_path #{at}"));
        }
        if file.processed > 0 && file.results + file.errors == 0 {
            expected.push(format!("unrecorded_processed_file #{at}"));
        }
        if file.spellings.len() > 1 {
            expected.push(format!("path_spellings #{at} x{}", file.spellings.len()));
        }
    }
    let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
    for file in &files {
        *by_name.entry(&file.name).or_default() += 1;
    }
    for (name, n) in by_name.into_iter().filter(|(_, n)| *n > 1) {
        expected.push(format!("base_name_collision {name} x{n}"));
    }
    let mut counter = |kind: &str, field: &str, actual: i64, want: i64| {
        if actual != want {
            expected.push(format!("{kind} {field} {want} {actual}"));
        }
    };
    counter(
        "consumed_count_mismatch",
        "consumed_count",
        consumed,
        distinct,
    );
    counter("progress_mismatch", "progress.current", progress, distinct);
    if completed || published < distinct {
        counter(
            "published_count_mismatch",
            "published_count",
            published,
            distinct,
        );
    }
    if completed {
        counter("total_files_mismatch", "total_files", total, distinct);
        counter(
            "summary_mismatch",
            "results.summary.successful",
            successful,
            with_result,
        );
        counter(
            "summary_mismatch",
            "results.summary.failed",
            failed,
            only_error,
        );
    }
    if let Some(ids) = &message_ids {
        let unique: BTreeSet<&String> = ids.iter().collect();
        if unique.len() < ids.len() {
            expected.push(format!("repeated_message_id x{}", ids.len() - unique.len()));
        }
    }
    expected.sort();

    JobModel {
        doc,
        files,
        spelt,
        expected,
    }
}

/// A finding as a key comparable with the generator's expectations.
fn finding_key(f: &Value, model: &JobModel) -> String {
    let kind = f["kind"].as_str().unwrap();
    let file = || {
        let path = f["path"].as_str().expect("a path");
        model
            .spelt
            .get(path)
            .unwrap_or_else(|| panic!("{path:?} is not a spelling the generator made"))
    };
    let count = || f["count"].as_u64().expect("a count");
    match kind {
        "duplicate_result" | "duplicate_error" | "repeated_processed_file" => {
            format!("{kind} #{} x{}", file(), count())
        }
        "path_spellings" => {
            let at = *file();
            let paths: BTreeSet<String> = f["paths"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(paths, model.files[at].spellings, "spellings of #{at}");
            format!("{kind} #{at} x{}", count())
        }
        "result_and_error" | "unlisted_path" | "unrecorded_processed_file" => {
            format!("{kind} #{}", file())
        }
        "base_name_collision" => format!("{kind} {} x{}", f["path"].as_str().unwrap(), count()),
        "repeated_message_id" => format!("{kind} x{}", count()),
        _ => format!("{kind} {} {} {}", f["field"], f["expected"], f["actual"]).replace('"', ""),
    }
}

// Many generated jobs: duplicates, spellings, shared base names, missing
// processed entries and counters off by a little. Server and dump must
// agree on all of them, and both must match what the generator knows it
// put in. Reproduce a failure with DUPCHECK_TEST_SEED=<seed>.
#[tokio::test]
async fn generated_jobs_server_dump_and_model_agree() {
    let seed = std::env::var("DUPCHECK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Utc::now().timestamp_nanos_opt().unwrap_or(1) as u64);
    println!("generated jobs: DUPCHECK_TEST_SEED={seed}");
    let mut rng = Rng(seed);
    let models: Vec<JobModel> = (0..80).map(|j| generate(&mut rng, j)).collect();
    let docs: Vec<Document> = models.iter().map(|m| m.doc.clone()).collect();

    let t = TestDb::new("scan_generated").await;
    let reports = assert_agree(&t, &docs).await;

    let mut kinds_seen = BTreeSet::new();
    let mut clean = 0;
    for model in &models {
        let name = model.doc.get_str("job_id").unwrap();
        let report = &reports[name];
        let got = sorted(
            findings(report)
                .iter()
                .map(|f| finding_key(f, model))
                .collect(),
        );
        assert_eq!(got, model.expected, "job {name}, seed {seed}");

        let files = &model.files;
        let sum = |get: fn(&FileModel) -> u64| files.iter().map(get).sum::<u64>();
        let c = &report["counts"];
        assert_eq!(c["results"], sum(|f| f.results), "{name}, seed {seed}");
        assert_eq!(c["errors"], sum(|f| f.errors), "{name}, seed {seed}");
        assert_eq!(c["processed_files"], sum(|f| f.processed), "{name}");
        let recorded = files.iter().filter(|f| f.results + f.errors > 0).count();
        assert_eq!(c["distinct_files"], recorded, "{name}, seed {seed}");
        let duplicated = files
            .iter()
            .filter(|f| f.results > 1 || f.errors > 1)
            .count();
        assert_eq!(c["duplicate_files"], duplicated, "{name}, seed {seed}");
        let extra = sum(|f| f.results.saturating_sub(1) + f.errors.saturating_sub(1));
        assert_eq!(c["extra_entries"], extra, "{name}, seed {seed}");

        for f in findings(report) {
            kinds_seen.insert(f["kind"].as_str().unwrap().to_owned());
        }
        if model.expected.is_empty() {
            clean += 1;
        }
    }
    // The generator must have made what this test is about.
    for kind in [
        "duplicate_result",
        "duplicate_error",
        "result_and_error",
        "repeated_processed_file",
        "unlisted_path",
        "unrecorded_processed_file",
        "path_spellings",
        "base_name_collision",
        "consumed_count_mismatch",
    ] {
        assert!(kinds_seen.contains(kind), "no {kind}; seed {seed}");
    }
    assert!(clean > 0, "no clean job; seed {seed}");
}

// ------------------------------------------------------------ dump forms

#[test]
fn every_dump_form_gives_the_same_findings() {
    let docs = sample_docs();
    let dir = tempfile::tempdir().unwrap();
    let (reference, out) = scan_file(&sample_dump(), &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let reference = by_job(&reference);
    assert_eq!(reference.len(), docs.len());

    for (name, form) in [
        ("relaxed.json", Form::RelaxedLines),
        ("canonical.json", Form::CanonicalLines),
        ("array.json", Form::RelaxedArray),
        ("bulk_jobs.bson", Form::Bson),
    ] {
        let path = write_dump(dir.path(), name, &docs, form);
        let (v, out) = scan_file(&path, &[]);
        assert_eq!(code(&out), 1, "{name}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{name}");
        assert_eq!(v["source"]["file"], path.display().to_string());
        assert_eq!(by_job(&v), reference, "{name}");
    }

    // The canonical form really is different text from the relaxed one.
    let canonical = String::from_utf8(dump_bytes(&docs, Form::CanonicalLines)).unwrap();
    assert!(canonical.contains("\"$numberInt\""));
}

#[test]
fn a_bad_line_is_reported_and_the_rest_is_scanned() {
    let docs = sample_docs();
    let text = String::from_utf8(dump_bytes(&docs, Form::RelaxedLines)).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(2, "{\"_id\": {\"$oid\": \"not hex\"}, \"job_id\": ");
    lines.insert(5, "");
    lines.insert(6, "[1, 2, 3]");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, lines.join("\n")).unwrap();

    let (v, out) = scan_file(&path, &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    let shown = path.display().to_string();
    let reported: Vec<&str> = err.lines().collect();
    assert_eq!(reported.len(), 2, "{err}");
    assert!(
        reported[0].starts_with(&format!("dupcheck: {shown}: line 3: ")),
        "{err}"
    );
    assert!(
        reported[1].starts_with(&format!("dupcheck: {shown}: line 7: ")),
        "{err}"
    );
    assert_eq!(v["jobs"].as_array().unwrap().len(), docs.len());
    assert_eq!(v["summary"]["unreadable_records"], 2);
    assert_eq!(v["summary"]["jobs"], docs.len());

    // In a table too: the jobs are shown, and the status still says 2.
    let out = dupcheck(file_args(&path, &[]));
    assert_eq!(code(&out), 2);
    assert!(stdout(&out).contains(&format!("{} jobs audited", docs.len())));
}

#[test]
fn a_truncated_bson_dump_is_reported() {
    let docs = sample_docs();
    let bytes = dump_bytes(&docs, Form::Bson);
    let last = bson::to_vec(docs.last().unwrap()).unwrap().len();
    let start = bytes.len() - last;
    let dir = tempfile::tempdir().unwrap();

    // Cut inside the last document.
    let path = dir.path().join("cut.bson");
    std::fs::write(&path, &bytes[..start + last / 2]).unwrap();
    let (v, out) = scan_file(&path, &[]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("truncated BSON document at byte {start}")),
        "{err}"
    );
    assert_eq!(v["jobs"].as_array().unwrap().len(), docs.len() - 1);
    assert_eq!(v["summary"]["complete"], false);

    // Cut inside the length of the next document.
    let path = dir.path().join("cut2.bson");
    let mut short = bytes.clone();
    short.extend_from_slice(&[0x10, 0x00]);
    std::fs::write(&path, &short).unwrap();
    let (v, out) = scan_file(&path, &[]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("truncated BSON at byte {}", bytes.len())),
        "{err}"
    );
    assert_eq!(v["jobs"].as_array().unwrap().len(), docs.len());
    assert_eq!(v["summary"]["complete"], false);
}

#[test]
fn a_missing_file_is_one_line_and_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dump.json");
    let out = dupcheck(file_args(&path, &[]));
    assert_eq!(code(&out), 2);
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no-such-dump.json"), "{err}");
}

// ---------------------------------------------------------- output forms

#[tokio::test]
async fn table_output_lists_jobs_and_details() {
    let t = TestDb::new("scan_table").await;
    let p = |n| f(n);
    t.insert(&[
        job_doc(
            "tab-dup",
            "processing",
            vec![r(&p(1)), r(&p(1)), r(&p(1)), r(&p(2))],
            vec![],
            vec![&p(1), &p(2)],
        ),
        job_doc(
            "tab-clean",
            "completed",
            vec![r(&p(1))],
            vec![],
            vec![&p(1)],
        ),
    ])
    .await;
    let out = dupcheck(scan_args(&t, &["--all"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let header = lines
        .iter()
        .find(|l| l.contains("job") && l.contains("dup files"))
        .expect("a header row");
    for column in [
        "status",
        "files",
        "results",
        "errors",
        "processed",
        "consumed",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = |name: &str| -> Vec<String> {
        let line = lines.iter().find(|l| l.contains(name)).expect("a row");
        line.split(['│', '┆'])
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect()
    };
    assert_eq!(
        row("tab-dup"),
        strs(&["tab-dup", "processing", "2", "4", "0", "2", "2", "1", "1"])
    );
    assert_eq!(
        row("tab-clean"),
        strs(&["tab-clean", "completed", "1", "1", "0", "1", "1", "0", "0"])
    );

    // Details: the job, then one line a finding.
    let at = lines
        .iter()
        .position(|l| *l == "tab-dup (processing)")
        .expect("a details heading");
    let detail: Vec<&str> = lines[at + 1].split_whitespace().collect();
    assert_eq!(detail[0], "duplicate_result");
    assert_eq!(
        lines[at + 1].trim_start()[..26].trim_end(),
        "duplicate_result"
    );
    assert!(
        lines[at + 1].ends_with(&format!(" {}: 3x in results", p(1))),
        "{}",
        lines[at + 1]
    );
    assert!(!text.contains("tab-clean ("), "a clean job has no details");
    assert_eq!(
        lines.last().unwrap().trim(),
        "2 jobs audited, 1 with findings (1 finding)"
    );
    assert!(!text.contains('\x1b'));

    // Nothing selected.
    let out = dupcheck(scan_args(&t, &["--all", "--status", "no-such-status"]));
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out).trim(), "no jobs selected");

    // A job asked for by id that does not exist is an error, as in repair.
    let out = dupcheck(scan_args(&t, &["--job", "nope"]));
    assert_eq!(code(&out), 2);
    assert_eq!(stderr(&out).trim(), "dupcheck: job nope: no such job_id");
}

#[tokio::test]
async fn json_output_has_the_documented_shape() {
    let t = TestDb::new("scan_json").await;
    let p = |n| f(n);
    t.insert(&[
        job_doc(
            "js-dup",
            "processing",
            vec![r(&p(1)), r(&p(1))],
            vec![],
            vec![&p(1)],
        ),
        job_doc(
            "js-clean",
            "processing",
            vec![r(&p(1))],
            vec![],
            vec![&p(1)],
        ),
    ])
    .await;
    let (v, out) = scan_server(&t, &["--since", "1h", "--status", "processing"]);
    assert_eq!(code(&out), 1);
    assert_eq!(stderr(&out), "");

    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        sorted(keys.into_iter().cloned().collect()),
        strs(&["dupcheck", "jobs", "selection", "source", "summary"])
    );
    assert_eq!(v["dupcheck"], 1);
    assert_eq!(
        v["source"],
        json!({ "db": t.name, "collection": "bulk_jobs" })
    );
    let since = v["selection"]["since"].as_str().expect("since is a time");
    let since = chrono::DateTime::parse_from_rfc3339(since).unwrap();
    let ago = Utc::now().signed_duration_since(since);
    assert!(ago > chrono::Duration::minutes(59) && ago < chrono::Duration::minutes(61));
    assert_eq!(v["selection"]["jobs"], json!([]));
    assert_eq!(v["selection"]["statuses"], json!(["processing"]));
    assert_eq!(v["selection"]["limit"], Value::Null);

    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    for job in jobs {
        let keys: Vec<String> = job.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            sorted(keys),
            strs(&[
                "bytes",
                "counts",
                "created_at",
                "findings",
                "id",
                "job_id",
                "status"
            ])
        );
        let counts: Vec<String> = job["counts"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            sorted(counts),
            sorted(strs(&[
                "total_files",
                "published_count",
                "consumed_count",
                "progress_current",
                "results",
                "errors",
                "processed_files",
                "distinct_files",
                "duplicate_files",
                "extra_entries",
            ]))
        );
        assert!(chrono::DateTime::parse_from_rfc3339(job["created_at"].as_str().unwrap()).is_ok());
        assert!(job["bytes"].as_u64().unwrap() > 500);
    }
    let stored = t.get("js-dup").await;
    let dup = &by_job(&v)["js-dup"];
    assert_eq!(dup["id"], stored.get_object_id("_id").unwrap().to_hex());
    assert_eq!(
        dup["findings"][0],
        json!({
            "kind": "duplicate_result",
            "path": p(1),
            "count": 2,
            "message": format!("{}: 2x in results", p(1)),
        })
    );
    assert_eq!(
        v["summary"],
        json!({
            "jobs": 2, "jobs_with_findings": 1, "findings": 1,
            "unreadable_records": 0, "complete": true,
        })
    );

    // Nothing selected is still a whole document.
    let (v, out) = scan_server(&t, &["--all", "--status", "no-such-status"]);
    assert_eq!(code(&out), 0);
    assert_eq!(v["jobs"], json!([]));
    assert_eq!(v["summary"]["jobs"], 0);
}

#[tokio::test]
async fn csv_output_reads_back() {
    let t = TestDb::new("scan_csv").await;
    let odd = "/data/in/a, \"quoted\"\nname.jpg";
    t.insert(&[
        job_doc(
            "csv-dup",
            "processing",
            vec![r(odd), r(odd), r(&f(2))],
            vec![],
            vec![odd, &f(2)],
        ),
        job_doc(
            "csv-clean",
            "processing",
            vec![r(&f(1))],
            vec![],
            vec![&f(1)],
        ),
    ])
    .await;
    let (v, _) = scan_server(&t, &["--all"]);
    let out = dupcheck(scan_args(&t, &["--all", "--format", "csv"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));

    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        strs(&[
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
        ])
    );
    let rows: Vec<BTreeMap<String, String>> = reader
        .records()
        .map(|rec| {
            let rec = rec.expect("a CSV record");
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect()
        })
        .collect();

    // One row a finding, and one row for a clean job.
    let json = by_job(&v);
    let mut expected_rows = 0;
    for (name, job) in &json {
        let mine: Vec<&BTreeMap<String, String>> =
            rows.iter().filter(|r| r["job_id"] == *name).collect();
        let fs = job["findings"].as_array().unwrap();
        expected_rows += fs.len().max(1);
        assert_eq!(mine.len(), fs.len().max(1), "{name}");
        for row in &mine {
            assert_eq!(row["id"], job["id"].as_str().unwrap());
            assert_eq!(row["status"], "processing");
            assert_eq!(row["results"], job["counts"]["results"].to_string());
            assert_eq!(
                row["distinct_files"],
                job["counts"]["distinct_files"].to_string()
            );
        }
        if fs.is_empty() {
            for col in [
                "finding", "field", "path", "count", "expected", "actual", "message",
            ] {
                assert_eq!(mine[0][col], "", "{name}: {col}");
            }
        }
        for (row, f) in mine.iter().zip(fs) {
            let text = |v: &Value| v.as_str().map(String::from).unwrap_or_default();
            let num = |v: &Value| v.as_i64().map(|n| n.to_string()).unwrap_or_default();
            assert_eq!(row["finding"], text(&f["kind"]));
            assert_eq!(row["path"], text(&f["path"]));
            assert_eq!(row["count"], num(&f["count"]));
            assert_eq!(row["expected"], num(&f["expected"]));
            assert_eq!(row["actual"], num(&f["actual"]));
            assert_eq!(row["message"], text(&f["message"]));
        }
    }
    assert_eq!(rows.len(), expected_rows);
    let dup = rows
        .iter()
        .find(|r| r["finding"] == "duplicate_result")
        .unwrap();
    assert_eq!(
        dup["path"], odd,
        "a path with a comma, quotes and a newline"
    );
    assert_eq!(dup["count"], "2");

    // No jobs: the header alone.
    let out = dupcheck(scan_args(
        &t,
        &["--all", "--status", "no-such-status", "--format", "csv"],
    ));
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out).lines().count(), 1);
    assert!(stdout(&out).starts_with("job_id,id,status,"));
}

/// Runs dupcheck with the environment given (NO_COLOR not forced).
fn dupcheck_env(args: &[String], no_color: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dupcheck"));
    cmd.args(args)
        .env_remove("MONGODB_URI")
        .env_remove("NO_COLOR");
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    cmd.output().expect("run dupcheck")
}

/// Runs dupcheck with stdout on a terminal, through script(1); None when
/// script is not there.
fn dupcheck_on_tty(args: &[String], no_color: Option<&str>) -> Option<String> {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let line: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_dupcheck"))
        .chain(args.iter().map(String::as_str))
        .map(quote)
        .collect();
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line.join(" "), "/dev/null"])
        .env_remove("MONGODB_URI")
        .env_remove("NO_COLOR");
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let out = cmd.output().ok()?;
    out.status.code()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.contains("jobs audited").then_some(text)
}

#[test]
fn no_colour_unless_a_terminal_without_no_color() {
    let args = file_args(&sample_dump(), &[]);
    // Not a terminal: plain, whatever NO_COLOR says.
    for no_color in [None, Some("1"), Some("")] {
        let out = dupcheck_env(&args, no_color);
        assert_eq!(code(&out), 1);
        let text = stdout(&out);
        assert!(text.contains("duplicate_result"));
        assert!(
            !text.contains('\x1b'),
            "colour codes with NO_COLOR={no_color:?}"
        );
        assert!(!stderr(&out).contains('\x1b'));
    }

    // On a terminal: colour, unless NO_COLOR is set.
    let Some(plain) = dupcheck_on_tty(&args, Some("1")) else {
        println!("note: script(1) is not available; terminal colour not tested");
        return;
    };
    assert!(!plain.contains('\x1b'), "colour codes despite NO_COLOR");
    let coloured = dupcheck_on_tty(&args, None).expect("script ran before");
    assert!(coloured.contains("\x1b["), "no colour on a terminal");
}

// ---------------------------------------------------------------- selection

/// A clean job created `hours` ago.
fn aged(job_id: &str, status: &str, hours: i64) -> Document {
    let mut d = job_doc(job_id, status, vec![r(&f(1))], vec![], vec![&f(1)]);
    let at = Utc::now() - chrono::Duration::hours(hours);
    set(&mut d, "created_at", bson::DateTime::from_chrono(at));
    d
}

#[tokio::test]
async fn selection_flags_pick_the_right_jobs() {
    let t = TestDb::new("scan_select").await;
    let docs = vec![
        aged("ancient", "paused", 40 * 24),
        aged("old", "completed", 3 * 24),
        aged("mid", "processing", 10),
        aged("new", "error", 0),
    ];
    t.insert(&docs).await;
    let dir = tempfile::tempdir().unwrap();
    let dump = write_dump(dir.path(), "aged.json", &docs, Form::RelaxedLines);

    let pick = |extra: &[&str]| -> Vec<String> {
        let (v, out) = scan_server(&t, extra);
        assert_eq!(code(&out), 0, "{extra:?}: {}", stderr(&out));
        names(&v)
    };
    let pick_file = |extra: &[&str]| -> Vec<String> {
        let (v, out) = scan_file(&dump, extra);
        assert_eq!(code(&out), 0, "{extra:?}: {}", stderr(&out));
        names(&v)
    };

    // With no selection a server scan looks at the last 24 hours; a dump
    // scan at everything in the file.
    assert_eq!(sorted(pick(&[])), strs(&["mid", "new"]));
    assert_eq!(
        sorted(pick_file(&[])),
        strs(&["ancient", "mid", "new", "old"])
    );

    let ten_days_ago = (Utc::now() - chrono::Duration::days(10))
        .format("%Y-%m-%d")
        .to_string();
    let five_hours_ago = (Utc::now() - chrono::Duration::hours(5)).to_rfc3339();
    // A --job id no document carries is an error on both sources.
    let (_, out) = scan_server(&t, &["--job", "nope"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let (_, out) = scan_file(&dump, &["--job", "nope"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    // ... whatever other filters come with it; a job that exists but is
    // outside them, or cut by --limit, is only noted.
    for flags in [
        vec!["--job", "nope", "--status", "completed"],
        vec!["--job", "nope", "--since", "1h"],
        vec!["--job", "old", "--job", "nope", "--all"],
    ] {
        let (_, out) = scan_server(&t, &flags);
        assert_eq!(code(&out), 2, "server {flags:?}: {}", show(&out));
        assert!(
            stderr(&out).contains("job nope: no such job_id"),
            "{}",
            show(&out)
        );
        let (_, out) = scan_file(&dump, &flags);
        assert_eq!(code(&out), 2, "dump {flags:?}: {}", show(&out));
    }
    for flags in [
        vec!["--job", "new", "--job", "old", "--limit", "1"],
        vec!["--job", "old", "--status", "error"],
    ] {
        let (v, out) = scan_server(&t, &flags);
        assert_eq!(code(&out), 0, "server {flags:?}: {}", show(&out));
        assert!(
            stderr(&out).contains("job old: not selected"),
            "{}",
            show(&out)
        );
        let (v_file, out) = scan_file(&dump, &flags);
        assert_eq!(code(&out), 0, "dump {flags:?}: {}", show(&out));
        assert!(
            stderr(&out).contains("job old: not selected"),
            "{}",
            show(&out)
        );
        assert_eq!(names(&v), names(&v_file), "{flags:?}");
    }

    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--since", "1h"], vec!["new"]),
        (vec!["--since", "90m"], vec!["new"]),
        (vec!["--since", "2d"], vec!["mid", "new"]),
        (vec!["--since", "4d"], vec!["mid", "new", "old"]),
        (vec!["--since", "6w"], vec!["ancient", "mid", "new", "old"]),
        (vec!["--since", &ten_days_ago], vec!["mid", "new", "old"]),
        (vec!["--since", &five_hours_ago], vec!["new"]),
        (vec!["--all"], vec!["ancient", "mid", "new", "old"]),
        (
            vec!["--job", "old", "--job", "ancient"],
            vec!["ancient", "old"],
        ),
        (vec!["--job", "old", "--since", "1h"], vec![]),
        (
            vec!["--status", "completed", "--status", "paused", "--all"],
            vec!["ancient", "old"],
        ),
        // --status alone keeps the 24-hour window.
        (vec!["--status", "completed"], vec![]),
        (vec!["--status", "error"], vec!["new"]),
    ];
    for (flags, want) in &cases {
        assert_eq!(sorted(pick(flags)), strs(want), "server {flags:?}");
        // A dump has no default window: --status alone differs there.
        let windowed = flags[0] == "--status" && !flags.contains(&"--all");
        if !windowed {
            assert_eq!(sorted(pick_file(flags)), strs(want), "dump {flags:?}");
        }
    }
    assert_eq!(pick_file(&["--status", "completed"]), strs(&["old"]));

    // --limit: the newest first, in that order, from either source.
    for flags in [
        vec!["--limit", "2", "--all"],
        vec![
            "--all",
            "--limit",
            "3",
            "--status",
            "completed",
            "--status",
            "paused",
        ],
        vec!["--limit", "1", "--since", "4d", "--status", "completed"],
    ] {
        let want = match flags[1] {
            "2" => strs(&["new", "mid"]),
            "--limit" => strs(&["old", "ancient"]),
            _ => strs(&["old"]),
        };
        assert_eq!(pick(&flags), want, "server {flags:?}");
        assert_eq!(pick_file(&flags), want, "dump {flags:?}");
    }

    // Without --limit the server still lists the newest first.
    assert_eq!(pick(&["--all"]), strs(&["new", "mid", "old", "ancient"]));
}

#[tokio::test]
async fn limit_breaks_ties_the_same_way_on_server_and_dump() {
    let t = TestDb::new("scan_ties").await;
    let at = bson::DateTime::from_millis(1_767_900_000_000);
    let docs: Vec<Document> = ["tie-a", "tie-b", "tie-c", "tie-d"]
        .iter()
        .map(|id| {
            let mut d = job_doc(id, "processing", vec![r(&f(1))], vec![], vec![&f(1)]);
            set(&mut d, "created_at", at);
            d
        })
        .collect();
    // The file lists them oldest _id first: keeping file order among
    // equals would pick tie-a, not tie-d.
    t.insert(&docs).await;
    let dir = tempfile::tempdir().unwrap();
    let dump = write_dump(dir.path(), "ties.json", &docs, Form::RelaxedLines);
    for limit in ["1", "2", "3"] {
        let (s, _) = scan_server(&t, &["--all", "--limit", limit]);
        let (d, _) = scan_file(&dump, &["--all", "--limit", limit]);
        assert_eq!(names(&s), names(&d), "--limit {limit}");
    }
    // ObjectIds made in order: the greatest _id is the last made.
    let (s, _) = scan_server(&t, &["--all", "--limit", "2"]);
    assert_eq!(names(&s), strs(&["tie-d", "tie-c"]));
}

// --------------------------------------------------- exit status, failures

#[tokio::test]
async fn exit_status_is_0_clean_and_1_found() {
    let t = TestDb::new("scan_exit").await;
    t.insert(&[
        job_doc("ok", "completed", vec![r(&f(1))], vec![], vec![&f(1)]),
        job_doc("bad", "processing", vec![r(&f(1))], vec![], vec![]),
    ])
    .await;
    for format in ["table", "json", "csv"] {
        let out = dupcheck(scan_args(&t, &["--job", "ok", "--format", format]));
        assert_eq!(code(&out), 0, "{format}: {}", stderr(&out));
        assert_eq!(stderr(&out), "");
        let out = dupcheck(scan_args(&t, &["--all", "--format", format]));
        assert_eq!(code(&out), 1, "{format}: {}", stderr(&out));
        assert_eq!(stderr(&out), "");
    }
    // A collection that does not exist is a typo until shown otherwise;
    // an empty one is not an error.
    let out = dupcheck(scan_args(&t, &["--all", "--collection", "nothing_here"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no collection \"nothing_here\""),
        "{}",
        stderr(&out)
    );
    t.db.create_collection("nothing_here").await.unwrap();
    let out = dupcheck(scan_args(&t, &["--all", "--collection", "nothing_here"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn bad_flags_exit_2_with_nothing_on_stdout() {
    let dump = sample_dump().display().to_string();
    for bad in [
        vec!["--limit", "0"],
        vec!["--limit", "many"],
        vec!["--format", "xml"],
        vec!["--since", "yesterday"],
        vec!["--since", "24"],
        vec!["--since", "1d", "--all"],
        vec!["--timeout", "0"],
        vec!["--timeout", "-1"],
        vec!["--bogus"],
        vec!["--file"],
    ] {
        let mut args = vec!["scan", "--file", &dump];
        args.extend(&bad);
        let out = dupcheck(&args);
        assert_eq!(code(&out), 2, "{bad:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{bad:?}");
        assert!(!stderr(&out).trim().is_empty(), "{bad:?}");
    }
    let out = dupcheck(["scan", "--file", &dump, "--since", "yesterday"]);
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).starts_with("dupcheck: --since"));
}

#[test]
fn an_unreachable_server_fails_fast_with_one_line() {
    // A port that was free a moment ago and has nothing listening now.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let uri = format!("mongodb://127.0.0.1:{port}");
    // With --job too: the scan never got to look the job up, so it must
    // not be called missing.
    for (format, which) in [("table", "--all"), ("json", "--all"), ("table", "--job")] {
        let started = Instant::now();
        let mut args = vec!["scan", "--uri", &uri, "--timeout", "1", "--format", format];
        args.extend(match which {
            "--job" => vec!["--job", "6fd2ff5c-a6e7-445c-affd-90d41621d789"],
            _ => vec!["--all"],
        });
        let out = dupcheck(&args);
        let took = started.elapsed();
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(took < Duration::from_secs(6), "took {took:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        if format == "table" {
            assert_eq!(stdout(&out), "");
        } else {
            assert_eq!(json_of(&out)["summary"]["complete"], false);
        }
    }
}

#[test]
fn a_bad_uri_exits_2_with_one_line() {
    for uri in [
        "not-a-uri",
        "http://127.0.0.1:27017",
        "mongodb://127.0.0.1:99999",
        "mongodb://",
    ] {
        let started = Instant::now();
        let out = dupcheck(["scan", "--uri", uri, "--timeout", "1", "--all"]);
        assert_eq!(code(&out), 2, "{uri}: {}", stderr(&out));
        assert!(started.elapsed() < Duration::from_secs(6), "{uri}");
        assert_eq!(stdout(&out), "");
        assert_eq!(stderr(&out).lines().count(), 1, "{uri}: {}", stderr(&out));
    }
}

/// The user and password of a connection string.
fn credentials(uri: &str) -> (String, String) {
    let rest = uri.split_once("://").expect("a scheme").1;
    let userinfo = rest.split_once('@').expect("credentials").0;
    let (user, pass) = userinfo.split_once(':').expect("a password");
    (user.to_owned(), pass.to_owned())
}

// Needs a server that requires SCRAM: DUPCHECK_TEST_AUTH_URI, which
// scripts/test.sh provides. Skipped (with a note) without it. The refusal
// comes back as the driver's authentication error from SecantusDB and from
// mongod alike (mongod's wording differs; only "auth" is looked for).
#[tokio::test]
async fn refused_credentials_exit_2_and_never_show_a_password() {
    let Some(good) = auth_uri() else {
        println!("note: DUPCHECK_TEST_AUTH_URI is not set; auth test skipped");
        return;
    };
    let (user, right) = credentials(&good);
    assert!(!right.is_empty());

    // The right password works: an empty collection scans clean.
    mongodb::Client::with_uri_str(&good)
        .await
        .unwrap()
        .database("dc_auth_probe")
        .create_collection("bulk_jobs")
        .await
        .ok();
    let out = dupcheck(["scan", "--uri", &good, "--db", "dc_auth_probe", "--all"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stdout(&out).contains(&right) && !stderr(&out).contains(&right));

    let wrong_raw = "Wr0ng%40pw-17";
    let wrong_decoded = "Wr0ng@pw-17";
    let bad = good.replacen(
        &format!("{user}:{right}@"),
        &format!("{user}:{wrong_raw}@"),
        1,
    );
    assert_ne!(bad, good);
    for format in ["table", "json", "csv"] {
        let started = Instant::now();
        let out = dupcheck([
            "scan",
            "--uri",
            &bad,
            "--db",
            "dc_auth_probe",
            "--all",
            "--timeout",
            "5",
            "--format",
            format,
        ]);
        assert_eq!(code(&out), 2, "{format}: {}", stderr(&out));
        assert!(started.elapsed() < Duration::from_secs(15));
        let all = format!("{}{}", stdout(&out), stderr(&out));
        for secret in [wrong_raw, wrong_decoded, right.as_str()] {
            assert!(!all.contains(secret), "{format}: {secret} shown:\n{all}");
        }
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.to_lowercase().contains("auth"), "{err}");
    }

    // A password given through MONGODB_URI is kept out of messages too.
    let out = Command::new(env!("CARGO_BIN_EXE_dupcheck"))
        .args(["scan", "--all", "--timeout", "5", "--db", "dc_auth_probe"])
        .env("MONGODB_URI", &bad)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !all.contains(wrong_raw) && !all.contains(wrong_decoded),
        "{all}"
    );
}

// ------------------------------------------------------------------ chunks

/// The server digests the selected jobs a chunk at a time
/// (`dupcheck::server::CHUNK`); nothing may be lost, repeated or reordered
/// at the seams, whatever order the `_id`s are in.
#[tokio::test]
async fn jobs_across_many_chunks_come_out_whole_and_newest_first() {
    let t = TestDb::new("scan_chunks").await;
    let n = 2 * dupcheck::server::CHUNK + 17;
    let mut docs = Vec::new();
    for i in 0..n {
        let name = format!("job-{i:03}");
        let results = if i % 7 == 3 {
            vec![r(&f(1)), r(&f(1)), r(&f(2))]
        } else {
            vec![r(&f(1)), r(&f(2))]
        };
        let mut d = job_doc(&name, "completed", results, vec![], vec![&f(1), &f(2)]);
        // Created a minute apart, job-000 newest; the _ids run in another
        // order, and a few are strings, so neither store nor _id order is
        // the output order.
        let at = Utc::now() - chrono::Duration::minutes(i as i64);
        set(&mut d, "created_at", bson::DateTime::from_chrono(at));
        if i % 5 == 0 {
            d.insert("_id", format!("id-{:03}", (i * 37) % n));
        }
        docs.push(d);
    }
    // Inserted oldest first, in two interleaved halves.
    let (even, odd): (Vec<_>, Vec<_>) = docs
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let shuffled: Vec<Document> = even.into_iter().rev().chain(odd).map(|(_, d)| d).collect();
    t.insert(&shuffled).await;

    let expected: Vec<String> = (0..n).map(|i| format!("job-{i:03}")).collect();
    let flagged: Vec<String> = (0..n)
        .filter(|i| i % 7 == 3)
        .map(|i| format!("job-{i:03}"))
        .collect();

    let (v, out) = scan_server(&t, &["--all"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert_eq!(names(&v), expected);
    assert_eq!(v["summary"]["jobs"], n);
    let with_findings: Vec<String> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| !findings(j).is_empty())
        .map(|j| j["job_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(with_findings, flagged);

    // A limit that ends inside a chunk keeps the newest jobs, in order.
    let limit = dupcheck::server::CHUNK + 3;
    let (v, out) = scan_server(&t, &["--all", "--limit", &limit.to_string()]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert_eq!(names(&v), expected[..limit].to_vec());

    // repair lists its candidates through the same chunks.
    let mut args = vec!["repair".to_owned()];
    args.extend(t.flags());
    args.extend(["--since", "1d", "--dry-run", "--format", "json"].map(String::from));
    let out = dupcheck(args);
    let plan: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", show(&out)));
    let planned: Vec<String> = plan["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", show(&out)))
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(planned, flagged, "{}", show(&out));
}

/// A server compares `created_at` with a window only when it is a date; a
/// dump scan must select the same jobs, so a date written as text is in no
/// window there either (and in --all on both).
#[tokio::test]
async fn a_created_at_written_as_text_is_in_no_window() {
    let t = TestDb::new("scan_text_date").await;
    let mut texted = aged("texted", "completed", 0);
    set(&mut texted, "created_at", Utc::now().to_rfc3339());
    let docs = vec![aged("dated", "completed", 0), texted];
    t.insert(&docs).await;
    let dir = tempfile::tempdir().unwrap();
    let dump = write_dump(dir.path(), "text-date.json", &docs, Form::RelaxedLines);

    for (flags, want) in [
        (vec!["--since", "1h"], vec!["dated"]),
        (vec!["--all"], vec!["dated", "texted"]),
    ] {
        let (v, out) = scan_server(&t, &flags);
        assert_eq!(code(&out), 0, "{}", show(&out));
        assert_eq!(sorted(names(&v)), strs(&want), "server {flags:?}");
        let (v, out) = scan_file(&dump, &flags);
        assert_eq!(code(&out), 0, "{}", show(&out));
        assert_eq!(sorted(names(&v)), strs(&want), "dump {flags:?}");
    }
}

/// Message ids are compared as the server's `$setUnion` compares them:
/// 1, 1.0 and NumberLong(1) are one id, "1" another.
#[tokio::test]
async fn numerically_equal_message_ids_are_one_id_on_server_and_in_a_dump() {
    let t = TestDb::new("scan_message_ids").await;
    let mut job = job_doc(
        "numbers",
        "completed",
        vec![r(&f(1)), r(&f(2))],
        vec![],
        vec![&f(1), &f(2)],
    );
    set(
        &mut job,
        "checkpoint.processed_message_ids",
        vec![
            Bson::Int32(1),
            Bson::Double(1.0),
            Bson::Int64(1),
            Bson::String("1".into()),
            Bson::Double(2.5),
        ],
    );
    let reports = assert_agree(&t, &[job]).await;
    assert_eq!(
        findings(&reports["numbers"]),
        vec![json!({
            "kind": "repeated_message_id",
            "count": 2,
            "field": "checkpoint.processed_message_ids",
        })],
    );
}

/// Once connected, a server that stops answering ends the scan with one
/// line and status 2 after --request-timeout, instead of holding it (and
/// a cron job) forever.
#[tokio::test]
async fn a_server_that_stops_answering_ends_the_scan() {
    let Some(upstream) = plain_host_port(&uri()) else {
        println!("skipped: the test server's URI is not a plain mongodb://host:port");
        return;
    };
    let t = TestDb::new("scan_stall").await;
    t.insert(&[aged("one", "completed", 0)]).await;
    let port = stalling_relay(upstream, "find");
    let (out, took) = dupcheck_within(
        [
            "scan",
            "--uri",
            &format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
            "--db",
            &t.name,
            "--all",
            "--request-timeout",
            "2",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code(&out), 2, "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no answer from the server for 2s"),
        "{}",
        show(&out)
    );
    assert_eq!(err.trim().lines().count(), 1, "{}", show(&out));
    assert!(took >= Duration::from_secs(2), "took {took:?}");
}

/// `--limit` keeps the same jobs, in the same order, from a dump as from a
/// server: ties on created_at broken by the greater _id in MongoDB's order
/// of values (10 after 9, an ObjectId after any string), a created_at
/// written as text after every date, a missing one last.
#[tokio::test]
async fn limit_keeps_the_same_jobs_from_a_dump_as_from_a_server() {
    let t = TestDb::new("scan_limit_order").await;
    let at = bson::DateTime::from_chrono(Utc::now() - chrono::Duration::hours(1));
    let mut docs = Vec::new();
    let mut add = |name: &str, id: Bson, created: Option<Bson>| {
        let mut d = aged(name, "completed", 0);
        d.insert("_id", id);
        match created {
            Some(c) => set(&mut d, "created_at", c),
            None => unset(&mut d, "created_at"),
        }
        docs.push(d);
    };
    add("int-9", Bson::Int32(9), Some(Bson::DateTime(at)));
    add("int-10", Bson::Int32(10), Some(Bson::DateTime(at)));
    add("string", Bson::String("z".into()), Some(Bson::DateTime(at)));
    add(
        "oid",
        Bson::ObjectId(bson::oid::ObjectId::new()),
        Some(Bson::DateTime(at)),
    );
    add("double", Bson::Double(9.5), Some(Bson::DateTime(at)));
    add(
        "text-date",
        Bson::Int32(1),
        Some(Bson::String("2099-01-01T00:00:00Z".into())),
    );
    add("no-date", Bson::Int32(2), None);
    add(
        "older",
        Bson::Int32(3),
        Some(Bson::DateTime(bson::DateTime::from_millis(0))),
    );
    // Past 2^53, where a double cannot tell the two apart.
    let ms = |n: i64| Some(Bson::DateTime(bson::DateTime::from_millis(n)));
    add("big-8", Bson::Int64(1_234_567_890_123_456_788), ms(1));
    add("big-9", Bson::Int64(1_234_567_890_123_456_789), ms(1));
    // A descending sort looks at an array's greatest element; an empty
    // array sorts below a missing field.
    let dates = Bson::Array(vec![ms(2).unwrap(), ms(-5).unwrap()]);
    add("array", Bson::Int32(4), Some(dates));
    add("empty-array", Bson::Int32(5), Some(Bson::Array(vec![])));
    t.insert(&docs).await;
    let dir = tempfile::tempdir().unwrap();
    let dump = write_dump(dir.path(), "order.json", &docs, Form::CanonicalLines);

    let want = strs(&[
        "oid",
        "string",
        "int-10",
        "double",
        "int-9",
        "array",
        "big-9",
        "big-8",
        "older",
        "text-date",
        "no-date",
        "empty-array",
    ]);
    for limit in 1..=docs.len() {
        let flags = ["--all", "--limit", &limit.to_string()].map(String::from);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let (v, out) = scan_server(&t, &flags);
        assert!(code(&out) < 2, "{}", show(&out));
        assert_eq!(names(&v), want[..limit].to_vec(), "server --limit {limit}");
        let (v, out) = scan_file(&dump, &flags);
        assert!(code(&out) < 2, "{}", show(&out));
        assert_eq!(names(&v), want[..limit].to_vec(), "dump --limit {limit}");
    }
    // An array of dates is in a window if one of them is.
    let since = "1970-01-01T00:00:00.002Z";
    let (v, _) = scan_server(&t, &["--since", since]);
    let (v_file, _) = scan_file(&dump, &["--since", since]);
    assert!(names(&v).contains(&"array".to_owned()), "{v}");
    assert_eq!(sorted(names(&v)), sorted(names(&v_file)));
}

/// CSV carries values as they are when written to a file or a pipe, but
/// on a terminal escapes control and bidi characters, as the table does.
#[test]
fn csv_on_a_terminal_escapes_what_a_terminal_would_act_on() {
    let path = "/data/in/\u{1b}]0;pwned\u{7}page\u{202e}gpj.tif";
    let docs = vec![job_doc(
        "evil",
        "completed",
        vec![r(path), r(path)],
        vec![],
        vec![path],
    )];
    let dir = tempfile::tempdir().unwrap();
    let dump = write_dump(dir.path(), "evil.json", &docs, Form::RelaxedLines);
    let args = file_args(&dump, &["--format", "csv"]);

    let piped = dupcheck(&args);
    assert_eq!(code(&piped), 1, "{}", show(&piped));
    assert!(
        stdout(&piped).contains(path),
        "CSV to a pipe keeps the value"
    );

    let Some(on_tty) = ({
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let line: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_dupcheck"))
            .chain(args.iter().map(String::as_str))
            .map(quote)
            .collect();
        Command::new("script")
            .args(["-qec", &line.join(" "), "/dev/null"])
            .env_remove("MONGODB_URI")
            .output()
            .ok()
            .filter(|o| o.status.code().is_some())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }) else {
        println!("note: script(1) is not available; CSV on a terminal not tested");
        return;
    };
    assert!(on_tty.contains("evil"), "{on_tty:?}");
    // script(1) turns "\n" into "\r\n"; anything else raw is the path's.
    let text = on_tty.replace("\r\n", "\n");
    assert_eq!(raw_control(&text), None, "{text:?}");
}
