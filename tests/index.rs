//! Integration tests of `dupcheck index`, against a real MongoDB wire
//! server (SecantusDB by default, see tests/common and scripts/test.sh; any
//! mongod through DUPCHECK_TEST_URI).
//!
//! `dupcheck index` never sends a createIndexes that could conflict: it
//! lists the indexes first and leaves alone anything on the same field or
//! under the same name. So the server's answer to a conflicting spec
//! matters only for what the listing shows. Checked on SecantusDB 0.7.0b3:
//! listIndexes on a missing collection fails with NamespaceNotFound (26),
//! as on mongod; a second index on the same keys under the same name with
//! other options is refused with IndexKeySpecsConflict (86), as on mongod;
//! under another name SecantusDB tries the build, where mongod refuses
//! with IndexOptionsConflict (85); a unique build over duplicates fails
//! with DuplicateKey (11000), and a missing job_id counts as null, as on
//! mongod.

mod common;

use bson::{doc, Document};
use futures_util::TryStreamExt;
use mongodb::options::IndexOptions;
use mongodb::IndexModel;

use common::*;
use dupcheck::indexes::{self, WANTED};
use dupcheck::ErrorKind;

fn index_cmd(t: &TestDb, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["index".to_owned()];
    args.extend(t.flags());
    args.extend(extra.iter().map(|s| s.to_string()));
    dupcheck(args)
}

/// The indexes as the driver lists them: (name, keys, unique).
async fn listed(t: &TestDb) -> Vec<(String, Document, bool)> {
    let models: Vec<IndexModel> = t
        .jobs
        .list_indexes()
        .await
        .expect("list indexes")
        .try_collect()
        .await
        .expect("read indexes");
    let mut out: Vec<(String, Document, bool)> = models
        .into_iter()
        .map(|m| {
            let options = m.options.unwrap_or_default();
            (
                options.name.unwrap_or_default(),
                m.keys,
                options.unique.unwrap_or(false),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The line of one wanted index in the command's output.
fn line_of<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| l.trim_start().starts_with(name))
        .unwrap_or_else(|| panic!("no line for {name} in:\n{text}"))
}

#[tokio::test]
async fn creates_the_three_indexes_once() {
    let t = TestDb::new("index_twice").await;
    t.insert(&[
        job_doc("a", "completed", vec![], vec![], vec![]),
        job_doc("b", "processing", vec![], vec![], vec![]),
    ])
    .await;

    let dry = index_cmd(&t, &["--dry-run"]);
    assert_eq!(code(&dry), 1, "{}", show(&dry));
    for w in &WANTED {
        assert!(
            line_of(&stdout(&dry), &w.name()).contains("would create"),
            "{}",
            show(&dry)
        );
    }
    assert_eq!(listed(&t).await.len(), 1, "a dry run creates nothing");

    let first = index_cmd(&t, &[]);
    assert_eq!(code(&first), 0, "{}", show(&first));
    for w in &WANTED {
        assert!(line_of(&stdout(&first), &w.name()).ends_with("created"));
    }
    assert_eq!(
        listed(&t).await,
        [
            ("_id_".to_owned(), doc! { "_id": 1 }, false),
            (
                "checkpoint.processed_files_1".to_owned(),
                doc! { "checkpoint.processed_files": 1 },
                false
            ),
            ("created_at_-1".to_owned(), doc! { "created_at": -1 }, false),
            ("job_id_1".to_owned(), doc! { "job_id": 1 }, true),
        ]
    );
    // The listing at the end shows the collection's indexes.
    assert!(
        stdout(&first).contains(r#"job_id_1                      {"job_id":1} {"unique":true}"#)
    );

    let second = index_cmd(&t, &[]);
    assert_eq!(code(&second), 0, "{}", show(&second));
    for w in &WANTED {
        assert!(line_of(&stdout(&second), &w.name()).ends_with("already present"));
    }
    assert_eq!(listed(&t).await.len(), 4);
}

#[tokio::test]
async fn duplicate_job_ids_block_only_the_unique_index() {
    let t = TestDb::new("index_duplicates").await;
    let twice = job_doc("shared-1", "completed", vec![], vec![], vec![]);
    let mut again = twice.clone();
    again.insert("_id", bson::oid::ObjectId::new());
    let mut orphan = job_doc("x", "completed", vec![], vec![], vec![]);
    orphan.remove("job_id");
    let mut orphan2 = orphan.clone();
    orphan2.insert("_id", bson::oid::ObjectId::new());
    t.insert(&[twice, again, orphan, orphan2]).await;

    let out = index_cmd(&t, &[]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let text = stdout(&out);
    assert!(line_of(&text, "job_id_1").contains("not created: 2 job ids"));
    assert!(text.contains("shared-1  (2 documents)"), "{text}");
    assert!(text.contains("(no job_id)  (2 documents)"), "{text}");
    let names: Vec<String> = listed(&t).await.into_iter().map(|i| i.0).collect();
    assert_eq!(
        names,
        ["_id_", "checkpoint.processed_files_1", "created_at_-1"]
    );

    // A build that meets a duplicate anyway (one written after the check)
    // is reported as such.
    let jobs = t.connect().await;
    let e = indexes::create(&jobs, &WANTED[1]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{}", e.message);
    assert!(
        e.message.contains("more than one document"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn an_index_with_other_options_is_reported_not_replaced() {
    let t = TestDb::new("index_other_options").await;
    t.insert(&[job_doc("a", "completed", vec![], vec![], vec![])])
        .await;
    t.jobs
        .create_index(IndexModel::builder().keys(doc! { "job_id": 1 }).build())
        .await
        .expect("plain job_id index");
    t.jobs
        .create_index(
            IndexModel::builder()
                .keys(doc! { "created_at": 1 })
                .options(IndexOptions::builder().name("by_date".to_owned()).build())
                .build(),
        )
        .await
        .expect("ascending created_at index");

    let out = index_cmd(&t, &[]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let text = stdout(&out);
    assert!(
        line_of(&text, "job_id_1").contains("not created: job_id_1 indexes the same field"),
        "{text}"
    );
    // A single-field index serves both directions.
    assert!(line_of(&text, "created_at_-1").ends_with("already present, as by_date"));
    assert!(line_of(&text, "checkpoint.processed_files_1").ends_with("created"));
    let job_id = listed(&t)
        .await
        .into_iter()
        .find(|i| i.0 == "job_id_1")
        .expect("still there");
    assert!(!job_id.2, "left as it was: not unique");
}

#[test]
fn a_dump_file_is_refused() {
    let out = dupcheck(["index", "--file", "jobs.json"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("needs a server"), "{}", show(&out));
}

fn index_args(t: &TestDb, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["index".to_owned()];
    args.extend(t.flags());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A reader that goes away (`| head -1`) stops nothing and panics nothing:
/// the indexes are created and the exit status is the work's.
#[tokio::test]
async fn a_closed_stdout_stops_no_index() {
    let t = TestDb::new("index_pipe").await;
    t.insert(&[job_doc("a", "completed", vec![], vec![], vec![])])
        .await;
    let out = with_stdout_closed(dupcheck_command(index_args(&t, &[])));
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", show(&out));
    assert_eq!(listed(&t).await.len(), 4);

    let again = with_stdout_closed(dupcheck_command(index_args(&t, &["--dry-run"])));
    assert_eq!(code(&again), 0, "{}", show(&again));
}

/// Job ids from the database are escaped on the terminal.
#[tokio::test]
async fn shared_job_ids_are_escaped_on_the_terminal() {
    let t = TestDb::new("index_escape").await;
    let id = "dup\u{1b}[2K\r  job_id_1 (unique)                created";
    let first = job_doc(id, "completed", vec![], vec![], vec![]);
    let mut second = first.clone();
    second.insert("_id", bson::oid::ObjectId::new());
    t.insert(&[first, second]).await;

    let out = index_cmd(&t, &["--dry-run"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let text = stdout(&out);
    assert_eq!(raw_control(&text), None, "{text:?}");
    assert!(
        text.contains("dup\\u{1b}[2K\\r  job_id_1 (unique)                created  (2 documents)"),
        "{text}"
    );
}

/// index needs the collection to exist: a mistyped --db creates nothing.
#[tokio::test]
async fn a_missing_collection_is_refused_not_created() {
    let t = TestDb::new("index_missing").await;
    let typo = format!("{}_typo", t.name);
    let out = dupcheck(["index", "--uri", &uri(), "--db", &typo]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(stderr(&out).contains("no collection"), "{}", show(&out));
    assert!(stderr(&out).contains("check --db"), "{}", show(&out));
    let names = t
        .client
        .list_database_names()
        .await
        .expect("list databases");
    assert!(!names.contains(&typo), "{names:?}");
}
