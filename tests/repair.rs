//! `dupcheck repair` and `dupcheck restore` against a real server: jobs
//! made by the racy writer, the keep policies, path spellings, the safety
//! rules, writers appending during repairs, repairs killed midway, and
//! backups put back.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, Decimal128, Document, Regex, Timestamp};
use common::*;
use dupcheck::dedupe::{Keep, Policy};
use dupcheck::repair::{self, Options, Repairer, Verdict};
use serde_json::Value;

/// Runs `dupcheck repair` on this test's database, backups in `dir`.
fn repair_cmd(t: &TestDb, dir: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["repair".into()];
    args.extend(t.flags());
    args.push("--backup-dir".into());
    args.push(dir.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    dupcheck(args)
}

fn repair_json(t: &TestDb, dir: &Path, extra: &[&str]) -> (Value, Output) {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(extra);
    let out = repair_cmd(t, dir, &all);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("json ({e}): {}\n{}", stdout(&out), stderr(&out)));
    (v, out)
}

fn scan_json(t: &TestDb, job: &str) -> Value {
    let mut args = vec!["scan".to_string()];
    args.extend(t.flags());
    args.extend(["--job".into(), job.into(), "--format".into(), "json".into()]);
    let out = dupcheck(args);
    serde_json::from_slice(&out.stdout).expect("scan json")
}

/// The finding kinds a repair must leave none of.
const REPAIRED_KINDS: [&str; 9] = [
    "duplicate_result",
    "duplicate_error",
    "repeated_processed_file",
    "unlisted_path",
    "consumed_count_mismatch",
    "progress_mismatch",
    "summary_mismatch",
    "repeated_message_id",
    "malformed",
];

fn assert_scan_clean(t: &TestDb, job: &str, allowed: &[&str]) {
    let v = scan_json(t, job);
    let findings = v["jobs"][0]["findings"].as_array().expect("findings");
    for f in findings {
        let kind = f["kind"].as_str().unwrap();
        assert!(
            !REPAIRED_KINDS.contains(&kind) || allowed.contains(&kind),
            "after repair, scan still finds {f}"
        );
    }
}

fn paths_of(job: &Document, field: &str) -> Vec<String> {
    job.get_document("checkpoint")
        .unwrap()
        .get_array(field)
        .unwrap()
        .iter()
        .map(|b| match b {
            Bson::Document(d) => d.get_str("file_path").unwrap().to_owned(),
            Bson::String(s) => s.clone(),
            other => panic!("unexpected {other}"),
        })
        .collect()
}

fn texts(job: &Document) -> Vec<String> {
    job.get_document("checkpoint")
        .unwrap()
        .get_array("results")
        .unwrap()
        .iter()
        .map(|b| b.as_document().unwrap().get_str("text").unwrap().to_owned())
        .collect()
}

fn number(doc: &Document, path: &str) -> i64 {
    let mut at = doc;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        at = at.get_document(p).unwrap();
    }
    match at.get(parts[parts.len() - 1]) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(x)) => *x as i64,
        other => panic!("{path} is {other:?}"),
    }
}

fn bytes(doc: &Document) -> Vec<u8> {
    bson::to_vec(doc).unwrap()
}

fn backups(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    found.sort();
    found
}

fn with_text(mut d: Document, text: &str, status: &str, confidence: f64) -> Document {
    d.insert("text", text);
    d.insert("status", status);
    d.insert("confidence", confidence);
    d
}

#[tokio::test]
async fn racy_jobs_are_repaired_and_scan_finds_nothing() {
    let t = TestDb::new("repair_race").await;
    t.insert(&[empty_job("race-1", 30)]).await;
    let files: Vec<String> = (0..30).map(|i| format!("/data/in/p{i:03}.jpg")).collect();
    let pushed = race(&t.jobs, "race-1", &files, 8).await;
    assert!(
        pushed > 30,
        "the race should make duplicates, pushed {pushed}"
    );
    // As the aggregator would: complete the job with counts from the
    // duplicated results.
    t.jobs
        .update_one(
            doc! { "job_id": "race-1" },
            doc! { "$set": {
                "status": "completed",
                "progress.current": pushed as i64,
                "progress.percentage": pushed as f64 * 100.0 / 30.0,
                "results": { "summary": {
                    "total_files": pushed as i64, "successful": pushed as i64, "failed": 0,
                } },
            } },
        )
        .await
        .unwrap();
    let before = t.get("race-1").await;

    let dir = tempfile::tempdir().unwrap();
    let (v, out) = repair_json(&t, dir.path(), &["--job", "race-1", "--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(v["summary"]["repaired"], 1);
    assert_eq!(v["summary"]["entries_removed"], pushed - 30);
    assert_eq!(v["summary"]["backups_written"], 1);

    let after = t.get("race-1").await;
    let mut results = paths_of(&after, "results");
    results.sort();
    assert_eq!(results, files);
    assert_eq!(paths_of(&after, "processed_files").len(), 30);
    for field in [
        "consumed_count",
        "progress.current",
        "results.summary.successful",
    ] {
        assert_eq!(number(&after, field), 30, "{field}");
    }
    assert_eq!(number(&after, "results.summary.failed"), 0);
    assert_eq!(
        after
            .get_document("progress")
            .unwrap()
            .get_f64("percentage"),
        Ok(100.0)
    );
    // Untouched: what a repair does not own.
    for key in before.keys() {
        if !["checkpoint", "consumed_count", "progress", "results"].contains(&key.as_str()) {
            assert_eq!(before.get(key), after.get(key), "{key}");
        }
    }
    assert_eq!(
        before
            .get_document("results")
            .unwrap()
            .get_document("summary")
            .unwrap()
            .get("total_files"),
        after
            .get_document("results")
            .unwrap()
            .get_document("summary")
            .unwrap()
            .get("total_files"),
    );
    assert_scan_clean(&t, "race-1", &[]);

    // The backup holds the document as it was.
    let saved = dupcheck::backup::read(&backups(dir.path())[0]).unwrap();
    assert_eq!(bytes(&saved.original), bytes(&before));

    // Again: nothing to do, nothing written.
    let (v, out) = repair_json(&t, dir.path(), &["--job", "race-1", "--yes"]);
    assert_eq!(code(&out), 0);
    assert_eq!(v["jobs"][0]["outcome"], "consistent");
    assert_eq!(backups(dir.path()).len(), 1);
    assert_eq!(bytes(&t.get("race-1").await), bytes(&after));
}

#[tokio::test]
async fn each_keep_policy_keeps_its_result() {
    let t = TestDb::new("repair_keep").await;
    let p = "/data/in/k.jpg";
    let results = vec![
        with_text(result_doc(p, 0, "w1"), "first, failed", "error", 0.99),
        with_text(result_doc(p, 0, "w2"), "second", "success", 0.5),
        with_text(result_doc(p, 0, "w3"), "third", "success", 0.8),
        with_text(
            result_doc(p, 0, "w4"),
            "fourth, the longest",
            "success",
            0.8,
        ),
        with_text(result_doc(p, 0, "w5"), "fifth", "success", 0.1),
    ];
    let errors = vec![error_doc(p), error_doc(p)];
    let mut jobs = Vec::new();
    for name in ["first", "last", "best", "errors"] {
        jobs.push(job_doc(
            &format!("keep-{name}"),
            "completed",
            results.clone(),
            errors.clone(),
            vec![p],
        ));
    }
    t.insert(&jobs).await;
    let dir = tempfile::tempdir().unwrap();

    let run = |job: &str, extra: &[&str]| {
        let mut args = vec!["--job", job, "--yes"];
        args.extend_from_slice(extra);
        let out = repair_cmd(&t, dir.path(), &args);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    };
    run("keep-first", &[]);
    run("keep-last", &["--keep", "last"]);
    run("keep-best", &["--keep", "best"]);
    run("keep-errors", &["--keep", "best", "--keep-errors"]);

    let first = t.get("keep-first").await;
    // The first result failed, so its file keeps an error too.
    assert_eq!(texts(&first), ["first, failed"]);
    assert_eq!(paths_of(&first, "errors"), [p]);
    assert_eq!(texts(&t.get("keep-last").await), ["fifth"]);
    assert_eq!(
        paths_of(&t.get("keep-last").await, "errors"),
        Vec::<String>::new()
    );
    let best = t.get("keep-best").await;
    assert_eq!(texts(&best), ["fourth, the longest"]);
    assert!(paths_of(&best, "errors").is_empty());
    let kept = t.get("keep-errors").await;
    assert_eq!(texts(&kept), ["fourth, the longest"]);
    assert_eq!(paths_of(&kept, "errors"), [p]);

    for job in [&first, &best, &kept] {
        assert_eq!(number(job, "consumed_count"), 1);
        assert_eq!(number(job, "results.summary.successful"), 1);
        assert_eq!(number(job, "results.summary.failed"), 0);
    }
    assert_scan_clean(&t, "keep-best", &[]);
    assert_scan_clean(&t, "keep-first", &["result_and_error"]);
}

#[tokio::test]
async fn spellings_are_one_file_and_shared_names_stay_two() {
    let t = TestDb::new("repair_paths").await;
    let composed = "/data/in/caf\u{e9}.jpg";
    let decomposed = "/data/in/cafe\u{301}.jpg";
    let results = vec![
        result_doc("/data/in/x.jpg", 0, "w1"),
        result_doc("/data//in/x.jpg", 0, "w2"),
        result_doc("/data/./in/x.jpg", 0, "w3"),
        result_doc("/data/other/x.jpg", 1, "w1"),
        result_doc(composed, 2, "w1"),
        result_doc(decomposed, 2, "w2"),
        result_doc("/data/in/unlisted.jpg", 3, "w1"),
    ];
    let mut job = job_doc(
        "paths",
        "completed",
        results,
        vec![error_doc("/data/in/broken.jpg")],
        vec![
            "/data/in/x.jpg",
            "/data//in/x.jpg",
            "/data/other/x.jpg",
            decomposed,
            composed,
            "/data/in/lost.jpg",
            "/data/in/broken.jpg",
        ],
    );
    job.get_document_mut("checkpoint").unwrap().insert(
        "processed_message_ids",
        vec!["0a1b", "0a1c", "0a1b", "0a1d"],
    );
    t.insert(&[job]).await;
    let dir = tempfile::tempdir().unwrap();

    let (plan, out) = repair_json(&t, dir.path(), &["--job", "paths", "--dry-run"]);
    assert_eq!(code(&out), 1, "a dry run with work to do: {}", stderr(&out));
    assert_eq!(plan["jobs"][0]["outcome"], "would_repair");
    assert_eq!(
        plan["jobs"][0]["added"],
        serde_json::json!(["/data/in/unlisted.jpg"])
    );
    assert_eq!(
        plan["jobs"][0]["unrecorded"],
        serde_json::json!(["/data/in/lost.jpg"])
    );
    assert!(backups(dir.path()).is_empty());

    let out = repair_cmd(&t, dir.path(), &["--job", "paths", "--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let after = t.get("paths").await;
    assert_eq!(
        paths_of(&after, "results"),
        [
            "/data/in/x.jpg",
            "/data/other/x.jpg",
            composed,
            "/data/in/unlisted.jpg"
        ]
    );
    assert_eq!(
        paths_of(&after, "processed_files"),
        [
            "/data/in/x.jpg",
            "/data/other/x.jpg",
            decomposed,
            "/data/in/lost.jpg",
            "/data/in/broken.jpg",
            "/data/in/unlisted.jpg",
        ]
    );
    assert_eq!(
        paths_of(&after, "processed_message_ids"),
        ["0a1b", "0a1c", "0a1d"]
    );
    // Five files have an outcome; the listed file without one is reported,
    // not counted.
    assert_eq!(number(&after, "consumed_count"), 5);
    assert_eq!(number(&after, "results.summary.successful"), 4);
    assert_eq!(number(&after, "results.summary.failed"), 1);
    assert_scan_clean(&t, "paths", &[]);
}

#[tokio::test]
async fn the_safety_rules_hold() {
    let t = TestDb::new("repair_safety").await;
    let dup = |id: &str, status: &str| {
        let r = result_doc("/data/in/a.jpg", 0, "w");
        job_doc(
            id,
            status,
            vec![r.clone(), r],
            vec![],
            vec!["/data/in/a.jpg"],
        )
    };
    let mut old = dup("old", "completed");
    old.insert(
        "created_at",
        bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 30 * 86_400_000),
    );
    let clean = job_doc(
        "clean",
        "completed",
        vec![result_doc("/data/in/a.jpg", 0, "w")],
        vec![],
        vec!["/data/in/a.jpg"],
    );
    t.insert(&[
        dup("done", "completed"),
        dup("paused", "paused"),
        dup("running", "processing"),
        clean,
        old,
    ])
    .await;
    let originals: HashMap<String, Vec<u8>> = {
        let mut m = HashMap::new();
        for id in ["done", "paused", "running", "clean", "old"] {
            m.insert(id.to_owned(), bytes(&t.get(id).await));
        }
        m
    };
    let dir = tempfile::tempdir().unwrap();
    let backup_dir = dir.path().join("b");

    // Not on a terminal, without --yes: refused before anything is read.
    let out = repair_cmd(&t, &backup_dir, &["--since", "7d"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));

    // A dry run plans and writes nothing, not even the backup folder.
    let out = repair_cmd(&t, &backup_dir, &["--since", "7d", "--dry-run"]);
    assert_eq!(code(&out), 1);
    let text = stdout(&out);
    assert!(
        text.contains("job done (completed): would be repaired"),
        "{text}"
    );
    assert!(
        text.contains("checkpoint.results") && text.contains("2 -> 1"),
        "{text}"
    );
    assert!(text.contains("nothing written (dry run)"), "{text}");
    assert!(!backup_dir.exists());
    for (id, b) in &originals {
        assert_eq!(&bytes(&t.get(id).await), b, "{id}");
    }

    // --since: jobs in the window with findings; running jobs skipped.
    let (v, out) = repair_json(&t, &backup_dir, &["--since", "7d", "--yes"]);
    assert_eq!(code(&out), 1, "a running job was left: {}", stderr(&out));
    assert_eq!(v["summary"]["repaired"], 2);
    assert_eq!(v["summary"]["skipped"], 1);
    assert!(stderr(&out).contains("running"), "{}", stderr(&out));
    assert_eq!(backups(&backup_dir).len(), 2);
    for id in ["running", "clean", "old"] {
        assert_eq!(bytes(&t.get(id).await), originals[id], "{id} untouched");
    }
    for id in ["done", "paused"] {
        assert_eq!(paths_of(&t.get(id).await, "results").len(), 1, "{id}");
    }

    let (v, out) = repair_json(
        &t,
        &backup_dir,
        &["--job", "running", "--include-running", "--yes"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(v["summary"]["repaired"], 1);

    // Everything repaired: a repeat finds nothing and writes nothing.
    let (v, out) = repair_json(&t, &backup_dir, &["--since", "7d", "--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(v["summary"]["jobs"], 0);
    assert_eq!(backups(&backup_dir).len(), 3);

    // An unknown job is a failure, reported.
    let out = repair_cmd(&t, &backup_dir, &["--job", "nope", "--yes"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("no job with job_id nope"));
}

#[tokio::test]
async fn malformed_records_are_skipped_with_a_clear_message() {
    let t = TestDb::new("repair_malformed").await;
    let r = result_doc("/data/in/a.jpg", 0, "w");
    let good = job_doc(
        "good",
        "completed",
        vec![r.clone(), r.clone()],
        vec![],
        vec![],
    );
    let mut not_array = good.clone();
    not_array.insert("_id", bson::oid::ObjectId::new());
    not_array.insert("job_id", "not-array");
    not_array
        .get_document_mut("checkpoint")
        .unwrap()
        .insert("results", "oops");
    let mut no_path = good.clone();
    no_path.insert("_id", bson::oid::ObjectId::new());
    no_path.insert("job_id", "no-path");
    no_path
        .get_document_mut("checkpoint")
        .unwrap()
        .insert("results", vec![doc! { "file": "a.jpg" }, r.clone()]);
    let mut odd_counter = good.clone();
    odd_counter.insert("_id", bson::oid::ObjectId::new());
    odd_counter.insert("job_id", "odd-counter");
    odd_counter.insert("consumed_count", "two");
    t.insert(&[good, not_array, no_path, odd_counter]).await;
    let before: Vec<Vec<u8>> = {
        let mut v = Vec::new();
        for id in ["not-array", "no-path", "odd-counter"] {
            v.push(bytes(&t.get(id).await));
        }
        v
    };

    let dir = tempfile::tempdir().unwrap();
    let out = repair_cmd(&t, dir.path(), &["--since", "1d", "--yes"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("job not-array: skipped: checkpoint.results is a string, not an array"),
        "{err}"
    );
    assert!(
        err.contains("job no-path: skipped: checkpoint.results[0] has no string file_path"),
        "{err}"
    );
    assert!(
        err.contains("job odd-counter: skipped: consumed_count is a string"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // The reason says what is wrong; "skipped" says what repair did.
    assert!(!err.contains("left as it is"), "{err}");
    for (id, b) in ["not-array", "no-path", "odd-counter"].iter().zip(&before) {
        assert_eq!(&bytes(&t.get(id).await), b, "{id}");
    }
    assert_eq!(paths_of(&t.get("good").await, "results").len(), 1);
    assert_eq!(backups(dir.path()).len(), 1);
}

fn exotic_job() -> Document {
    let r = result_doc("/data/in/a.jpg", 0, "w");
    let mut job = job_doc(
        "exotic",
        "completed",
        vec![r.clone(), r, result_doc("/data/in/b.jpg", 1, "w")],
        vec![],
        vec!["/data/in/a.jpg", "/data/in/b.jpg"],
    );
    job.insert("total_files", 2i64);
    job.insert(
        "extras",
        doc! {
            "decimal": Bson::Decimal128("12.50".parse::<Decimal128>().unwrap()),
            "long": 7i64,
            "int": 7i32,
            "double": 7.0,
            "neg_zero": -0.0,
            "binary": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 254, 255] },
            "timestamp": Timestamp { time: 1_767_930_000, increment: 3 },
            "regex": Regex { pattern: "^/data".into(), options: "i".into() },
            "date": bson::DateTime::from_millis(1_767_930_000_123),
            "null": Bson::Null,
            "min": Bson::MinKey,
            "max": Bson::MaxKey,
            "nested": { "z": 1, "a": [1i64, "two", { "b": 2.5 }] },
        },
    );
    job
}

#[tokio::test]
async fn backup_then_restore_gives_back_the_identical_document() {
    let t = TestDb::new("repair_restore").await;
    t.insert(&[exotic_job()]).await;
    let original = t.get("exotic").await;
    let dir = tempfile::tempdir().unwrap();

    let out = repair_cmd(&t, dir.path(), &["--job", "exotic", "--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let repaired = t.get("exotic").await;
    assert_ne!(bytes(&repaired), bytes(&original));
    assert_eq!(repaired.get("extras"), original.get("extras"));
    let file = backups(dir.path()).pop().unwrap();
    assert!(file
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("exotic."));

    let restore = |extra: &[&str]| {
        let mut args = vec!["restore".to_string()];
        args.extend(t.flags());
        args.extend(["--backup-dir".into(), dir.path().display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(file.display().to_string());
        dupcheck(args)
    };
    let out = restore(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(bytes(&t.get("exotic").await), bytes(&original));
    // Restoring twice changes nothing.
    let out = restore(&[]);
    assert_eq!(code(&out), 0);
    assert!(
        stdout(&out).contains("already is as in"),
        "{}",
        stdout(&out)
    );

    // Repair again, then let a worker append: the restore now refuses.
    let out = repair_cmd(&t, dir.path(), &["--job", "exotic", "--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let file2 = backups(dir.path())
        .into_iter()
        .filter(|p| dupcheck::backup::read(p).unwrap().original == original)
        .max()
        .unwrap();
    assert!(fixed_save(&t.jobs, "exotic", result_doc("/data/in/new.jpg", 2, "w9")).await);
    let appended = t.get("exotic").await;
    let mut args = vec!["restore".to_string()];
    args.extend(t.flags());
    args.extend(["--backup-dir".into(), dir.path().display().to_string()]);
    args.push(file2.display().to_string());
    let out = dupcheck(&args);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("changed since"), "{}", stderr(&out));
    assert_eq!(bytes(&t.get("exotic").await), bytes(&appended));

    // --force puts it back, after backing up the state it replaces.
    args.insert(1, "--force".into());
    let out = dupcheck(&args);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(bytes(&t.get("exotic").await), bytes(&original));
    let kept = backups(dir.path())
        .iter()
        .any(|p| bytes(&dupcheck::backup::read(p).unwrap().original) == bytes(&appended));
    assert!(
        kept,
        "the appended state was backed up before the forced restore"
    );

    // Not a backup: a clear message, exit 2.
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{}").unwrap();
    let mut args = vec!["restore".to_string()];
    args.extend(t.flags());
    args.push(junk.display().to_string());
    let out = dupcheck(&args);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("not a dupcheck backup"),
        "{}",
        stderr(&out)
    );
}

/// A job with duplicates for the concurrency and kill tests: `files`
/// files, every third one recorded twice.
fn job_with_duplicates(job_id: &str, files: usize, status: &str, text_len: usize) -> Document {
    let mut results = Vec::new();
    let mut listed = Vec::new();
    for i in 0..files {
        let p = format!("/data/{job_id}/f{i:04}.jpg");
        let mut r = result_doc(&p, i as i32, "w1");
        r.insert("text", text(&p, text_len));
        results.push(r.clone());
        if i % 3 == 0 {
            r.insert(
                "metadata",
                doc! { "processing_time": 3.0, "worker_id": "w2" },
            );
            results.push(r);
        }
        listed.push(p);
    }
    let listed: Vec<&str> = listed.iter().map(String::as_str).collect();
    let mut job = job_doc(job_id, status, results, vec![], listed);
    let n = job
        .get_document("checkpoint")
        .unwrap()
        .get_array("results")
        .unwrap()
        .len();
    job.insert("consumed_count", n as i32);
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_appending_during_repairs_lose_nothing() {
    let t = TestDb::new("repair_concurrent").await;
    let jobs = t.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let trials: usize = std::env::var("DUPCHECK_REPAIR_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let mut outcomes: BTreeMap<&str, u32> = BTreeMap::new();
    let mut retried = 0;

    for trial in 0..trials {
        let job_id = format!("busy-{trial}");
        t.insert(&[job_with_duplicates(&job_id, 30, "processing", 200)])
            .await;
        let id = t.get(&job_id).await.get("_id").cloned().unwrap();

        // The writer appends new files with the fixed save, as workers of a
        // running job do, while repairs of the job run.
        let writer = {
            let coll = t.jobs.clone();
            let job_id = job_id.clone();
            tokio::spawn(async move {
                let mut appended = Vec::new();
                for i in 0..25 {
                    let p = format!("/data/{job_id}/new{i:03}.jpg");
                    assert!(fixed_save(&coll, &job_id, result_doc(&p, 1000 + i, "w9")).await);
                    appended.push(p);
                    if i % 4 == trial as i32 % 4 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                appended
            })
        };
        let options = Options {
            include_running: true,
            backup_dir: dir.path().to_path_buf(),
            attempts: 4,
            policy: Policy {
                keep: if trial % 2 == 0 {
                    Keep::First
                } else {
                    Keep::Best
                },
                keep_errors: false,
            },
            ..Options::default()
        };
        let repairer = Repairer::new(&jobs, options);
        for _ in 0..3 {
            let done = repairer.repair(&id).await;
            let name = match &done.verdict {
                Verdict::Repaired { attempts, .. } => {
                    if *attempts > 1 {
                        retried += 1;
                    }
                    "repaired"
                }
                Verdict::Consistent => "consistent",
                Verdict::Failed(e) if e.kind == dupcheck::ErrorKind::Conflict => "gave_up",
                other => panic!("unexpected {other:?}"),
            };
            *outcomes.entry(name).or_default() += 1;
        }
        let appended = writer.await.unwrap();

        let job = t.get(&job_id).await;
        let results = paths_of(&job, "results");
        for p in &appended {
            let n = results.iter().filter(|r| *r == p).count();
            assert_eq!(n, 1, "trial {trial}: {p} recorded {n} times");
        }
        for i in 0..30 {
            let p = format!("/data/{job_id}/f{i:04}.jpg");
            assert!(results.contains(&p), "trial {trial}: {p} lost");
        }

        // Once the writer is done, a repair leaves the job consistent.
        let done = repairer.repair(&id).await;
        assert!(
            matches!(done.verdict, Verdict::Repaired { .. } | Verdict::Consistent),
            "{:?}",
            done.verdict
        );
        let job = t.get(&job_id).await;
        assert_eq!(paths_of(&job, "results").len(), 55, "trial {trial}");
        assert_eq!(number(&job, "consumed_count"), 55, "trial {trial}");
    }
    eprintln!("repairs during appends: {outcomes:?}, {retried} needed a re-read");
    assert!(outcomes.get("repaired").copied().unwrap_or(0) > 0);

    // Every backup left behind is whole and readable.
    for file in backups(dir.path()) {
        dupcheck::backup::read(&file).unwrap();
    }
}

#[tokio::test]
async fn the_binary_repairs_while_a_writer_appends() {
    let t = TestDb::new("repair_concurrent_bin").await;
    let dir = tempfile::tempdir().unwrap();
    for trial in 0..4 {
        let job_id = format!("bin-{trial}");
        t.insert(&[job_with_duplicates(&job_id, 30, "processing", 200)])
            .await;
        let writer = {
            let coll = t.jobs.clone();
            let job_id = job_id.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    let p = format!("/data/{job_id}/new{i:03}.jpg");
                    fixed_save(&coll, &job_id, result_doc(&p, 1000 + i, "w9")).await;
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            })
        };
        let mut args = vec!["repair".to_string()];
        args.extend(t.flags());
        args.extend(
            [
                "--job",
                &job_id,
                "--yes",
                "--include-running",
                "--backup-dir",
                &dir.path().display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let out = tokio::task::spawn_blocking(move || dupcheck(args))
            .await
            .unwrap();
        writer.await.unwrap();
        assert!(code(&out) == 0 || code(&out) == 2, "{}", stderr(&out));
        let job = t.get(&job_id).await;
        let results = paths_of(&job, "results");
        for i in 0..40 {
            let p = format!("/data/{job_id}/new{i:03}.jpg");
            assert_eq!(results.iter().filter(|r| **r == p).count(), 1, "{p}");
        }
        for i in 0..30 {
            assert!(results.contains(&format!("/data/{job_id}/f{i:04}.jpg")));
        }
    }
}

#[tokio::test]
async fn killed_repairs_leave_each_job_whole() {
    let t = TestDb::new("repair_killed").await;
    let ids: Vec<String> = (0..6).map(|i| format!("kill-{i}")).collect();
    let originals: Vec<Document> = ids
        .iter()
        .map(|id| job_with_duplicates(id, 60, "completed", 1500))
        .collect();
    let expected: HashMap<String, Vec<u8>> = originals
        .iter()
        .map(|d| {
            let plan = repair::plan(d, Policy::default()).unwrap();
            let mut fixed = d.clone();
            plan.apply(&mut fixed);
            (d.get_str("job_id").unwrap().to_owned(), bytes(&fixed))
        })
        .collect();
    let before: HashMap<String, Vec<u8>> = originals
        .iter()
        .map(|d| (d.get_str("job_id").unwrap().to_owned(), bytes(d)))
        .collect();

    let start = |dir: &Path| {
        let mut args = vec!["repair".to_string()];
        args.extend(t.flags());
        args.extend(
            ["--since", "1d", "--yes", "--backup-dir"]
                .iter()
                .map(|s| s.to_string()),
        );
        args.push(dir.display().to_string());
        Command::new(env!("CARGO_BIN_EXE_dupcheck"))
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dupcheck")
    };

    // How long an undisturbed run takes sets the range of kill times.
    t.insert(&originals).await;
    let dir = tempfile::tempdir().unwrap();
    let began = Instant::now();
    let status = start(dir.path()).wait().unwrap();
    let full = began.elapsed();
    assert!(status.success());
    for id in &ids {
        assert_eq!(
            &bytes(&t.get(id).await),
            &expected[id],
            "{id} fully repaired"
        );
    }

    let trials = 16u64;
    let mut states: BTreeMap<&str, u32> = BTreeMap::new();
    for trial in 0..trials {
        t.jobs.delete_many(doc! {}).await.unwrap();
        t.insert(&originals).await;
        let dir = tempfile::tempdir().unwrap();
        let mut child = start(dir.path());
        // Spread the kills over the whole run, a little past its end.
        let at = full.mul_f64((trial as f64 + 0.5) / trials as f64 * 1.1);
        tokio::time::sleep(at).await;
        let _ = child.kill();
        let _ = child.wait();

        for id in &ids {
            let now = bytes(&t.get(id).await);
            let state = if now == before[id] {
                "as it was"
            } else if now == expected[id] {
                // No write without its backup.
                let saved = backups(dir.path()).iter().any(|p| {
                    dupcheck::backup::read(p)
                        .map(|b| bytes(&b.original) == before[id])
                        .unwrap_or(false)
                });
                assert!(saved, "trial {trial}: {id} repaired without a backup");
                "repaired"
            } else {
                panic!("trial {trial}: {id} is neither as it was nor repaired");
            };
            *states.entry(state).or_default() += 1;
        }
        for file in backups(dir.path()) {
            dupcheck::backup::read(&file).expect("a backup in place is whole");
        }
    }
    eprintln!("jobs after killed repairs: {states:?} (a full run takes {full:?})");
}

#[tokio::test]
async fn passwords_stay_out_of_messages() {
    let Some(good) = auth_uri() else {
        eprintln!("DUPCHECK_TEST_AUTH_URI not set: skipped");
        return;
    };
    let Some(pw) = dupcheck::connect::password(&good) else {
        return;
    };
    let bad = good.replacen(&format!(":{pw}@"), ":wrong-Secret-42@", 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dupcheck([
        "repair",
        "--uri",
        &bad,
        "--job",
        "x",
        "--yes",
        "--backup-dir",
        &dir.path().display().to_string(),
    ]);
    assert_eq!(code(&out), 2);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains("wrong-Secret-42"), "{all}");
    assert!(!all.is_empty());
}

/// A completed job whose one file was recorded twice.
fn twice(job_id: &str) -> Document {
    let r = result_doc(&format!("/data/{job_id}/a.jpg"), 0, "w");
    let path = format!("/data/{job_id}/a.jpg");
    job_doc(job_id, "completed", vec![r.clone(), r], vec![], vec![&path])
}

fn results_of(job: &Document) -> usize {
    paths_of(job, "results").len()
}

/// `dupcheck restore` with these backups, state it replaces in `dir`.
fn restore_cmd(t: &TestDb, dir: &Path, extra: &[&str], files: &[PathBuf]) -> Vec<String> {
    let mut args = vec!["restore".to_string()];
    args.extend(t.flags());
    args.extend(["--backup-dir".into(), dir.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(files.iter().map(|f| f.display().to_string()));
    args
}

fn repair_args(t: &TestDb, dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["repair".into()];
    args.extend(t.flags());
    args.extend(["--backup-dir".into(), dir.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A reader that goes away (`| head`, `| true`) stops no repair and no
/// restore: every job is done, and the exit status is the work's, in text
/// and JSON alike.
#[tokio::test]
async fn a_closed_stdout_stops_no_repair_and_no_restore() {
    let t = TestDb::new("repair_pipe").await;
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<String> = (1..=6).map(|i| format!("text-{i}")).collect();
    let docs: Vec<Document> = texts.iter().map(|id| twice(id)).collect();
    t.insert(&docs).await;

    let args = repair_args(&t, dir.path(), &["--since", "1970-01-01", "--yes"]);
    let out = with_stdout_closed(dupcheck_command(&args));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for id in &texts {
        assert_eq!(results_of(&t.get(id).await), 1, "{id} repaired");
    }
    assert_eq!(backups(dir.path()).len(), 6);

    let jsons: Vec<String> = (1..=3).map(|i| format!("json-{i}")).collect();
    let docs: Vec<Document> = jsons.iter().map(|id| twice(id)).collect();
    t.insert(&docs).await;
    let mut originals = Vec::new();
    for id in &jsons {
        originals.push(bytes(&t.get(id).await));
    }
    let args = repair_args(
        &t,
        dir.path(),
        &["--since", "1970-01-01", "--yes", "--format", "json"],
    );
    let out = with_stdout_closed(dupcheck_command(&args));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for id in &jsons {
        assert_eq!(results_of(&t.get(id).await), 1, "{id} repaired");
    }

    // A dry run's status comes from its plan, whatever the format.
    t.insert(&[twice("dry")]).await;
    for format in ["text", "json"] {
        let extra = ["--job", "dry", "--dry-run", "--format", format];
        let out = with_stdout_closed(dupcheck_command(repair_args(&t, dir.path(), &extra)));
        assert_eq!(code(&out), 1, "{format}: {}", stderr(&out));
    }
    assert_eq!(results_of(&t.get("dry").await), 2);

    // Restore: every backup of the JSON run goes back.
    let files: Vec<PathBuf> = backups(dir.path())
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("json-")
        })
        .collect();
    assert_eq!(files.len(), 3);
    let restored = tempfile::tempdir().unwrap();
    let args = restore_cmd(&t, restored.path(), &[], &files);
    let out = with_stdout_closed(dupcheck_command(&args));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for (id, original) in jsons.iter().zip(&originals) {
        assert_eq!(&bytes(&t.get(id).await), original, "{id} restored");
    }
}

/// Text from the database is escaped in text output, on stdout and
/// stderr, so it cannot rewrite the terminal or forge a line; JSON keeps
/// it as it is.
#[tokio::test]
async fn database_text_is_escaped_on_the_terminal() {
    let t = TestDb::new("repair_escape").await;
    let id = "evil\u{1b}[2J\r\njob ok (completed): consistent";
    let path = "/data/in/\u{1b}]0;pwned\u{7}page\u{202e}gpj.tif";
    let r = result_doc(path, 0, "w");
    let mut job = job_doc(id, "completed", vec![r.clone(), r], vec![], vec![path]);
    job.insert("status", "paused\r\n");
    let mut malformed = job_doc("bad\u{1b}[31m", "completed", vec![], vec![], vec![]);
    malformed
        .get_document_mut("checkpoint")
        .unwrap()
        .insert("errors", "oops\u{1b}[0m");
    t.insert(&[job, malformed]).await;
    let dir = tempfile::tempdir().unwrap();

    let out = repair_cmd(&t, dir.path(), &["--since", "1d", "--dry-run"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    for text in [stdout(&out), stderr(&out)] {
        assert_eq!(raw_control(&text), None, "{text:?}");
    }
    let text = stdout(&out);
    assert!(
        text.contains("job evil\\u{1b}[2J\\r\\njob ok (completed): consistent (paused\\r\\n)"),
        "{text}"
    );
    assert!(
        text.contains("/data/in/\\u{1b}]0;pwned\\u{7}page\\u{202e}gpj.tif"),
        "{text}"
    );
    assert!(
        stderr(&out).contains("job bad\\u{1b}[31m: skipped"),
        "{}",
        stderr(&out)
    );

    let (v, out) = repair_json(&t, dir.path(), &["--since", "1d", "--yes"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(raw_control(&stderr(&out)), None, "{}", stderr(&out));
    let jobs = v["jobs"].as_array().unwrap();
    let done = jobs.iter().find(|j| j["outcome"] == "repaired").unwrap();
    assert_eq!(done["job_id"], id);
    assert_eq!(done["status"], "paused\r\n");
    assert_eq!(done["removed"][0]["value"], path);

    let files = backups(dir.path());
    let out = dupcheck(restore_cmd(&t, dir.path(), &[], &files));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(raw_control(&stdout(&out)), None, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("restored job evil\\u{1b}"),
        "{}",
        stdout(&out)
    );
}

/// `repair --format json` names a job's `_id` as scan does: the hex of an
/// ObjectId, not Extended JSON.
#[tokio::test]
async fn repair_json_shows_ids_as_scan_does() {
    let t = TestDb::new("repair_ids").await;
    t.insert(&[twice("oid")]).await;
    let hex = t.get("oid").await.get_object_id("_id").unwrap().to_hex();
    let dir = tempfile::tempdir().unwrap();

    let scanned = scan_json(&t, "oid");
    assert_eq!(scanned["jobs"][0]["id"], hex.as_str());
    for extra in [&["--dry-run"][..], &["--yes"][..]] {
        let mut all = vec!["--job", "oid"];
        all.extend_from_slice(extra);
        let (v, out) = repair_json(&t, dir.path(), &all);
        assert!(code(&out) < 2, "{}", stderr(&out));
        assert_eq!(v["jobs"][0]["id"], scanned["jobs"][0]["id"], "{v}");
    }
}

/// A backup whose header names another job than the document it holds is
/// refused without --force: which job it would put back is in doubt.
#[tokio::test]
async fn a_backup_whose_header_disagrees_is_refused() {
    let t = TestDb::new("repair_header").await;
    t.insert(&[twice("real")]).await;
    let original = bytes(&t.get("real").await);
    let dir = tempfile::tempdir().unwrap();
    let out = repair_cmd(&t, dir.path(), &["--job", "real", "--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let repaired = bytes(&t.get("real").await);
    let file = backups(dir.path()).pop().unwrap();
    let body: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();

    let edits: [(&str, Value); 2] = [
        ("job_id", Value::from("someone-else")),
        (
            "_id",
            serde_json::json!({ "$oid": "0123456789abcdef01234567" }),
        ),
    ];
    for (field, value) in edits {
        let mut edited = body.clone();
        edited[field] = value;
        let path = dir
            .path()
            .join(format!("edited-{}.json", field.trim_start_matches('_')));
        std::fs::write(&path, edited.to_string()).unwrap();
        let out = dupcheck(restore_cmd(
            &t,
            dir.path(),
            &[],
            std::slice::from_ref(&path),
        ));
        assert_eq!(code(&out), 2, "{field}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("its header names"), "{err}");
        assert!(err.contains("--force"), "{err}");
        assert_eq!(bytes(&t.get("real").await), repaired, "{field}: untouched");
    }

    let path = dir.path().join("edited-job_id.json");
    let out = dupcheck(restore_cmd(&t, dir.path(), &["--force"], &[path]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(bytes(&t.get("real").await), original);
}

/// Mistakes in the flags are explained in their own words.
#[tokio::test]
async fn flag_mistakes_are_explained() {
    let t = TestDb::new("repair_flags").await;
    t.insert(&[twice("j")]).await;
    let before = bytes(&t.get("j").await);
    let dir = tempfile::tempdir().unwrap();

    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = repair_cmd(&t, &file, &["--job", "j", "--yes"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not a directory"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("os error"), "{}", stderr(&out));
    assert_eq!(bytes(&t.get("j").await), before);

    let out = repair_cmd(&t, dir.path(), &["--yes"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("--job") && err.contains("--since"), "{err}");
}

/// Once connected, a server that stops answering ends repair, export and
/// index with one line and status 2 after --request-timeout, before they
/// write anything, instead of holding them forever.
#[tokio::test]
async fn every_command_gives_up_on_a_server_that_stops_answering() {
    let Some(upstream) = plain_host_port(&uri()) else {
        println!("skipped: the test server's URI is not a plain mongodb://host:port");
        return;
    };
    let t = TestDb::new("repair_stall").await;
    let path = "/data/in/a.jpg";
    t.insert(&[job_doc(
        "stalled",
        "completed",
        vec![result_doc(path, 0, "w1"), result_doc(path, 1, "w2")],
        vec![],
        vec![path],
    )])
    .await;
    let before = t.get("stalled").await;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("reports");
    let backups = dir.path().join("backups");

    let cases: [(&str, Vec<String>); 3] = [
        (
            "find",
            ["repair", "--job", "stalled", "--yes", "--backup-dir"]
                .map(String::from)
                .into_iter()
                .chain([backups.display().to_string()])
                .collect(),
        ),
        (
            "find",
            ["export", "--job", "stalled", "--out"]
                .map(String::from)
                .into_iter()
                .chain([out_dir.display().to_string()])
                .collect(),
        ),
        ("listIndexes", vec!["index".to_owned()]),
    ];
    for (command, args) in cases {
        let port = stalling_relay(upstream.clone(), command);
        let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
        let mut all = args.clone();
        all.extend(["--uri", &uri, "--db", &t.name, "--request-timeout", "2"].map(String::from));
        let (out, _) = dupcheck_within(&all, Duration::from_secs(30));
        assert_eq!(code(&out), 2, "{}: {}", args[0], show(&out));
        assert!(
            stderr(&out).contains("no answer from the server for 2s"),
            "{}: {}",
            args[0],
            show(&out)
        );
    }
    assert_eq!(t.get("stalled").await, before, "nothing was written");
    assert!(!out_dir.exists() || std::fs::read_dir(&out_dir).unwrap().next().is_none());
}
