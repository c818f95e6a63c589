//! Integration tests of `dupcheck export`, against a real MongoDB wire
//! server (SecantusDB by default, see tests/common and scripts/test.sh; any
//! mongod through DUPCHECK_TEST_URI), and offline from the sample dump.
//!
//! Golden files for the sample's jobs are in tests/golden/export/; after a
//! deliberate change of output, `DUPCHECK_BLESS=1 cargo test --test export`
//! rewrites them. Where a test passes here but mongod could behave
//! differently, a comment at the test says so.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bson::{Bson, Document};
use serde_json::Value;

use common::*;
use dupcheck::dedupe::{self, Policy};
use dupcheck::export::{self, Format, Options, Report, UpdateJob, CSV_COLUMNS};
use dupcheck::{backup, ErrorKind};

const INCIDENT: &str = "6fd2ff5c-a6e7-445c-affd-90d41621d789";
const BASE_NAMES: &str = "16112818-1bce-42a5-a81c-ad27b2dc1552";
const ERRORS: &str = "eec0b831-6d21-4230-ae8d-8139ab083969";
/// Fixed so that reports compare byte for byte.
const GENERATED_AT: &str = "2026-01-10T08:00:00Z";

// ------------------------------------------------------------------ helpers

/// A job of the sample dump, by job_id.
fn sample_job(job_id: &str) -> Document {
    let mut found = None;
    dupcheck::dump::read(&sample_dump(), |_, doc| {
        if let Ok(doc) = doc {
            if doc.get_str("job_id") == Ok(job_id) {
                found = Some(doc);
            }
        }
    })
    .expect("read the sample dump");
    found.unwrap_or_else(|| panic!("{job_id} is in the sample"))
}

/// Runs `dupcheck export` with the generated-at time fixed.
fn export_cmd(args: &[String]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dupcheck"));
    cmd.arg("export")
        .args(args)
        .env_remove("MONGODB_URI")
        .env("NO_COLOR", "1")
        .env("DUPCHECK_GENERATED_AT", GENERATED_AT);
    cmd.output().expect("run dupcheck")
}

/// `dupcheck export` on this test's database into `out`, with `extra`.
fn export_server(t: &TestDb, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = t.flags();
    args.extend(["--out".into(), out.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    export_cmd(&args)
}

fn assert_code(out: &std::process::Output, want: i32) {
    assert_eq!(code(out), want, "{}", show(out));
}

fn report_path(out: &Path, job_id: &str, format: Format) -> PathBuf {
    out.join(job_id).join(format.file_name(job_id))
}

/// Every file of a job's report folder except the ZIP, by relative path.
fn report_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in fs::read_dir(&at).expect("read report folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_none_or(|e| e != "zip") {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                files.insert(rel, fs::read(&path).expect("read report"));
            }
        }
    }
    files
}

/// The ZIP's entries, in order, with their contents.
fn zip_entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let file = fs::File::open(path).expect("open zip");
    let mut zip = zip::ZipArchive::new(file).expect("a zip archive");
    (0..zip.len())
        .map(|i| {
            let mut entry = zip.by_index(i).expect("zip entry");
            let mut body = Vec::new();
            entry.read_to_end(&mut body).expect("read zip entry");
            (entry.name().to_owned(), body)
        })
        .collect()
}

/// Compares a job's reports with its golden files, or writes them when
/// DUPCHECK_BLESS is set.
fn assert_golden(dir: &Path, job_id: &str) {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/export")
        .join(job_id);
    let got = report_files(dir);
    if std::env::var_os("DUPCHECK_BLESS").is_some() {
        let _ = fs::remove_dir_all(&golden);
        for (rel, body) in &got {
            let path = golden.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, body).unwrap();
        }
        return;
    }
    let want = report_files(&golden);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "files of {job_id}"
    );
    for (rel, body) in &want {
        assert!(
            &got[rel] == body,
            "{rel} differs from tests/golden/export/{job_id}/{rel}"
        );
    }
}

/// The CSV report read back with a CSV parser: header and rows.
fn csv_rows(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .expect("open csv");
    let header = reader
        .headers()
        .expect("csv header")
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|r| r.expect("csv record").iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).expect("read json")).expect("valid JSON")
}

/// The job as a repair leaves it: its clean view written back.
fn repaired(job: &Document) -> Document {
    let clean = dedupe::clean(job, Policy::default()).expect("clean view");
    let mut job = job.clone();
    let n = clean.recorded() as i32;
    let checkpoint = job.get_document_mut("checkpoint").unwrap();
    checkpoint.insert("results", clean.results.clone());
    checkpoint.insert("errors", clean.errors.clone());
    checkpoint.insert("processed_files", clean.processed_files.clone());
    job.insert("consumed_count", n);
    job.get_document_mut("progress")
        .unwrap()
        .insert("current", n);
    let summary = job
        .get_document_mut("results")
        .unwrap()
        .get_document_mut("summary")
        .unwrap();
    summary.insert("successful", clean.successful as i32);
    summary.insert("failed", clean.failed as i32);
    job
}

// -------------------------------------------------------------------- tests

/// The incident's job, as it is (19 results for 16 files) and as a repair
/// leaves it, exports to the same reports: the golden files, which match
/// what the aggregator itself writes for the 16 distinct results.
#[tokio::test]
async fn unrepaired_and_repaired_jobs_export_the_same_golden_reports() {
    let job = sample_job(INCIDENT);
    for (label, doc) in [("unrepaired", job.clone()), ("repaired", repaired(&job))] {
        let t = TestDb::new(&format!("export_golden_{label}")).await;
        t.insert(&[doc]).await;
        let out = tempfile::tempdir().unwrap();
        let run = export_server(&t, out.path(), &["--job", INCIDENT]);
        assert_code(&run, 0);
        assert!(
            stdout(&run).contains("16 results and 0 errors"),
            "{}",
            show(&run)
        );
        if label == "unrepaired" {
            assert!(stdout(&run).contains("left out 3 duplicate results"));
        }
        let dir = out.path().join(INCIDENT);
        assert_golden(&dir, INCIDENT);

        let (header, rows) = csv_rows(&report_path(out.path(), INCIDENT, Format::Csv));
        assert_eq!(header, CSV_COLUMNS);
        assert_eq!(rows.len(), 16, "{label}: one row per file");
        let paths: std::collections::BTreeSet<&String> = rows.iter().map(|r| &r[1]).collect();
        assert_eq!(paths.len(), 16);

        let report = json_file(&report_path(out.path(), INCIDENT, Format::Json));
        assert_eq!(report["metadata"]["successful"], 16);
        assert_eq!(report["metadata"]["total_files"], 16);
        assert_eq!(report["metadata"]["generated_at"], "2026-01-10T08:00:00");
        assert_eq!(report["results"].as_array().unwrap().len(), 16);
        let chars: u64 = report["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["text"].as_str().unwrap().chars().count() as u64)
            .sum();
        assert_eq!(report["summary"]["total_characters"], chars);

        let entries = zip_entries(&report_path(out.path(), INCIDENT, Format::Zip));
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), 3 + 16);
        assert_eq!(
            names[..3],
            [
                format!("{INCIDENT}_results.json"),
                format!("{INCIDENT}_results.csv"),
                format!("{INCIDENT}_results.txt"),
            ]
        );
        assert!(names[3..]
            .iter()
            .all(|n| n.starts_with("individual_files/")));
        for (name, body) in &entries {
            let on_disk = fs::read(dir.join(name)).expect("zipped file is on disk too");
            assert!(&on_disk == body, "{name} in the zip differs from the file");
        }
    }
}

/// With --file no server is needed, and the reports are the same as from
/// the server.
#[test]
fn offline_export_from_the_dump_matches_the_golden_files() {
    let out = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "--file",
        &sample_dump().display().to_string(),
        "--uri",
        "mongodb://127.0.0.1:9",
        "--timeout",
        "0.2",
        "--out",
        &out.path().display().to_string(),
        "--job",
        INCIDENT,
        "--job",
        BASE_NAMES,
        "--job",
        ERRORS,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = export_cmd(&args);
    assert_code(&run, 0);
    for job_id in [INCIDENT, BASE_NAMES, ERRORS] {
        assert_golden(&out.path().join(job_id), job_id);
    }
    // A file with both a result and an error keeps the result; an error
    // recorded twice is reported once.
    let (_, rows) = csv_rows(&report_path(out.path(), ERRORS, Format::Csv));
    let statuses: Vec<&str> = rows.iter().map(|r| r[2].as_str()).collect();
    assert_eq!(
        statuses,
        ["Success", "Success", "Success", "Success", "Success", "Error"]
    );
}

/// Two different files with the same base name both stay, in every
/// report, and their individual files do not overwrite each other.
#[tokio::test]
async fn base_name_collisions_keep_both_files() {
    let t = TestDb::new("export_base_names").await;
    t.insert(&[sample_job(BASE_NAMES)]).await;
    let out = tempfile::tempdir().unwrap();
    let run = export_server(&t, out.path(), &["--job", BASE_NAMES]);
    assert_code(&run, 0);

    let (_, rows) = csv_rows(&report_path(out.path(), BASE_NAMES, Format::Csv));
    let files: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    assert_eq!(
        files,
        [
            ("page-001.tif", "/data/batch7/vol1/page-001.tif"),
            ("page-001.tif", "/data/batch7/vol2/page-001.tif"),
            ("page-002.tif", "/data/batch7/vol2/page-002.tif"),
        ]
    );

    let dir = out.path().join(BASE_NAMES).join("individual_files");
    let first = json_file(&dir.join("page-001.json"));
    let second = json_file(&dir.join("page-001~2.json"));
    assert_eq!(first["file_path"], "/data/batch7/vol1/page-001.tif");
    assert_eq!(second["file_path"], "/data/batch7/vol2/page-001.tif");

    let names: Vec<String> = zip_entries(&report_path(out.path(), BASE_NAMES, Format::Zip))
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("individual_files/"))
        .collect();
    assert_eq!(
        names,
        [
            "individual_files/page-001.json",
            "individual_files/page-001~2.json",
            "individual_files/page-002.json"
        ]
    );
    let report = json_file(&report_path(out.path(), BASE_NAMES, Format::Json));
    assert_eq!(report["metadata"]["successful"], 3);
}

/// OCR text with everything that breaks naive CSV, JSON or text writers
/// reads back unchanged from every report.
#[tokio::test]
async fn hostile_ocr_text_reads_back_unchanged() {
    let texts: Vec<String> = vec![
        "comma, separated, text".into(),
        "\"quoted\" and \"\"doubled\"\" quotes".into(),
        "line one\r\nline two\nline three\rline four\n".into(),
        "nul \u{0} byte, bell \u{7}, escape \u{1b}[31m".into(),
        "\ttab first and trailing space ".into(),
        "emoji 👩🏽‍💻, RTL \u{202e}override\u{202c}, zero width \u{200b}".into(),
        "cafe\u{301} and धर्मक्षेत्रे कुरुक्षेत्रे समवेता युयुत्सवः".into(),
        "=HYPERLINK(\"http://example.invalid\",\"x\")".into(),
        "separators \u{2028} and \u{2029}".into(),
        "\"".into(),
        String::new(),
        "\u{feff}byte order mark first".into(),
        "\\ backslashes \\\\ and \\n not a newline".into(),
        format!("{}\n", "long, \"line\" ".repeat(5000)),
    ];
    let results: Vec<Document> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let path = format!("/data/hostile/dir {i}/scan, \"{i}\" ñ.jpg");
            let mut r = result_doc(&path, i as i32, "ocr-worker-1");
            r.insert("text", text.clone());
            r.insert("full_text", text.clone());
            r
        })
        .collect();
    let paths: Vec<String> = results
        .iter()
        .map(|r| r.get_str("file_path").unwrap().to_owned())
        .collect();
    let job = job_doc(
        "hostile-1",
        "completed",
        results,
        vec![error_doc("/data/hostile/bad, \"one\".jpg")],
        paths.iter().map(String::as_str).collect(),
    );
    let t = TestDb::new("export_hostile").await;
    t.insert(&[job]).await;
    let out = tempfile::tempdir().unwrap();
    let run = export_server(&t, out.path(), &["--job", "hostile-1"]);
    assert_code(&run, 0);

    let (header, rows) = csv_rows(&report_path(out.path(), "hostile-1", Format::Csv));
    assert_eq!(header, CSV_COLUMNS);
    assert_eq!(rows.len(), texts.len() + 1);
    for (row, text) in rows.iter().zip(&texts) {
        assert_eq!(&row[17], text, "OCR Text of {}", row[1]);
        assert_eq!(row[8], text.chars().count().to_string(), "Character Count");
        assert_eq!(row.len(), CSV_COLUMNS.len());
    }
    assert_eq!(rows[texts.len()][18], "OCR provider returned 503");
    assert_eq!(rows[texts.len()][2], "Error");

    let report = json_file(&report_path(out.path(), "hostile-1", Format::Json));
    for (result, text) in report["results"].as_array().unwrap().iter().zip(&texts) {
        assert_eq!(result["text"].as_str().unwrap(), text);
    }
    let dir = out.path().join("hostile-1").join("individual_files");
    let mut individual = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let back = json_file(&entry.unwrap().path());
        let i = back["file_index"].as_i64().unwrap() as usize;
        assert_eq!(back["text"].as_str().unwrap(), texts[i]);
        individual += 1;
    }
    assert_eq!(individual, texts.len());

    let txt = fs::read_to_string(report_path(out.path(), "hostile-1", Format::Txt)).unwrap();
    for text in &texts {
        assert!(txt.contains(&format!("Extracted Text:\n{text}\n")));
    }
}

/// Reports already there are kept unless --force; with it they are
/// replaced whole, stale individual files included.
#[tokio::test]
async fn existing_reports_need_force() {
    let t = TestDb::new("export_force").await;
    t.insert(&[sample_job(BASE_NAMES)]).await;
    let out = tempfile::tempdir().unwrap();
    assert_code(&export_server(&t, out.path(), &["--job", BASE_NAMES]), 0);
    let json = report_path(out.path(), BASE_NAMES, Format::Json);
    fs::write(&json, "kept").unwrap();
    let stale = out
        .path()
        .join(BASE_NAMES)
        .join("individual_files/stale.json");
    fs::write(&stale, "{}").unwrap();

    let again = export_server(&t, out.path(), &["--job", BASE_NAMES]);
    assert_code(&again, 2);
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        show(&again)
    );
    assert!(stderr(&again).contains("--force"));
    assert_eq!(fs::read_to_string(&json).unwrap(), "kept");

    let forced = export_server(&t, out.path(), &["--job", BASE_NAMES, "--force"]);
    assert_code(&forced, 0);
    assert_ne!(fs::read_to_string(&json).unwrap(), "kept");
    assert!(
        !stale.exists(),
        "the individual files folder is replaced whole"
    );
    let left: Vec<String> = fs::read_dir(out.path().join(BASE_NAMES))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// --format picks the files; the ZIP always holds all the reports.
#[tokio::test]
async fn formats_choose_the_files_written() {
    let t = TestDb::new("export_formats").await;
    t.insert(&[sample_job(INCIDENT)]).await;
    let out = tempfile::tempdir().unwrap();
    let run = export_server(&t, out.path(), &["--job", INCIDENT, "--format", "csv,zip"]);
    assert_code(&run, 0);
    let mut names: Vec<String> = fs::read_dir(out.path().join(INCIDENT))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            format!("{INCIDENT}_bulk_ocr_results.zip"),
            format!("{INCIDENT}_results.csv"),
        ]
    );
    assert_eq!(
        zip_entries(&report_path(out.path(), INCIDENT, Format::Zip)).len(),
        3 + 16
    );

    let bad = export_server(&t, out.path(), &["--job", INCIDENT, "--format", "pdf"]);
    assert_code(&bad, 2);
    assert!(
        stderr(&bad).contains("not a report format"),
        "{}",
        show(&bad)
    );
}

/// Several jobs in one run: each is exported; an unknown one is reported,
/// the others still go, and the exit status says something failed.
#[tokio::test]
async fn several_jobs_and_an_unknown_one() {
    let t = TestDb::new("export_several").await;
    t.insert(&[sample_job(INCIDENT), sample_job(BASE_NAMES)])
        .await;
    let out = tempfile::tempdir().unwrap();
    let run = export_server(
        &t,
        out.path(),
        &[
            "--job",
            INCIDENT,
            "--job",
            "no-such-job",
            "--job",
            BASE_NAMES,
        ],
    );
    assert_code(&run, 2);
    let err = stderr(&run);
    assert!(
        err.contains(&format!(
            "job no-such-job not found in {}.bulk_jobs",
            t.name
        )),
        "{}",
        show(&run)
    );
    assert_eq!(err.lines().count(), 1, "{}", show(&run));
    for job_id in [INCIDENT, BASE_NAMES] {
        assert!(report_path(out.path(), job_id, Format::Zip).exists());
    }
    assert!(!out.path().join("no-such-job").exists());
}

/// A folder that cannot be created is a clear error, and leaves nothing.
/// (Tests may run as root, for whom permissions do not stop a write; a
/// regular file in the way stops everyone.)
#[tokio::test]
async fn unwritable_output_folder_is_a_clear_error() {
    let t = TestDb::new("export_unwritable").await;
    t.insert(&[sample_job(INCIDENT)]).await;
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-folder");
    fs::write(&blocker, "x").unwrap();
    let run = export_server(&t, &blocker.join("reports"), &["--job", INCIDENT]);
    assert_code(&run, 2);
    let err = stderr(&run);
    assert!(err.contains("cannot create"), "{}", show(&run));
    assert!(err.contains("not-a-folder/reports"), "{}", show(&run));
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

    let hostile = export_server(&t, dir.path(), &["--job", "../escape"]);
    assert_code(&hostile, 2);
    assert!(stderr(&hostile).contains("cannot name a report folder"));
}

/// --update-job writes the clean counts, statistics and report paths into
/// the job's summary, after a backup that `restore` can read; the backup's
/// fingerprint of the updated job matches what the server holds, so a
/// restore can tell nothing else wrote since.
///
/// mongod applies a `$set`'s new fields in lexicographic order of their
/// names (5.0 and later); the fingerprint check relies on that, and
/// SecantusDB does the same.
#[tokio::test]
async fn update_job_writes_the_clean_summary_after_a_backup() {
    let t = TestDb::new("export_update").await;
    let before = sample_job(INCIDENT);
    t.insert(std::slice::from_ref(&before)).await;
    let out = tempfile::tempdir().unwrap();
    let backups = tempfile::tempdir().unwrap();
    let run = export_server(
        &t,
        out.path(),
        &[
            "--job",
            INCIDENT,
            "--update-job",
            "--backup-dir",
            &backups.path().display().to_string(),
        ],
    );
    assert_code(&run, 0);
    assert!(
        stdout(&run).contains("job summary updated"),
        "{}",
        show(&run)
    );

    let after = t.get(INCIDENT).await;
    let results = after.get_document("results").unwrap();
    let summary = results.get_document("summary").unwrap();
    assert_eq!(summary.get_i32("successful").unwrap(), 16);
    assert_eq!(summary.get_i32("failed").unwrap(), 0);
    let stats = summary.get_document("statistics").unwrap();
    let report = json_file(&report_path(out.path(), INCIDENT, Format::Json));
    assert_eq!(
        stats
            .get("total_characters")
            .and_then(Bson::as_i32)
            .map(i64::from),
        report["summary"]["total_characters"].as_i64()
    );
    assert_eq!(
        results
            .get_document("results_preview")
            .unwrap()
            .get_i32("total_results")
            .unwrap(),
        16
    );
    let zip = results.get_str("zip_path").unwrap();
    assert!(Path::new(zip).is_absolute() && Path::new(zip).exists());
    let files = results.get_document("report_files").unwrap();
    for name in ["json", "csv", "txt", "zip"] {
        assert!(Path::new(files.get_str(name).unwrap()).exists(), "{name}");
    }
    // Nothing outside `results` changed.
    for field in [
        "checkpoint",
        "consumed_count",
        "progress",
        "status",
        "total_files",
    ] {
        assert_eq!(after.get(field), before.get(field), "{field}");
    }

    let saved: Vec<PathBuf> = fs::read_dir(backups.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(saved.len(), 1);
    let back = backup::read(&saved[0]).expect("a backup restore can read");
    assert_eq!(
        bson::to_vec(&back.original).unwrap(),
        bson::to_vec(&before).unwrap()
    );
    assert_eq!(
        back.repaired_sha256.as_deref(),
        Some(backup::fingerprint(&after).unwrap().as_str()),
        "the backup predicts the updated document exactly"
    );
}

/// A job that is still running has no final summary to update: reports
/// are written, the job is left alone, and the exit status is 1.
#[tokio::test]
async fn update_job_leaves_a_running_job_alone() {
    let t = TestDb::new("export_update_running").await;
    let mut job = sample_job(INCIDENT);
    job.insert("status", "processing");
    job.insert("results", Bson::Null);
    t.insert(&[job.clone()]).await;
    let out = tempfile::tempdir().unwrap();
    let backups = tempfile::tempdir().unwrap();
    let run = export_server(
        &t,
        out.path(),
        &[
            "--job",
            INCIDENT,
            "--update-job",
            "--backup-dir",
            &backups.path().display().to_string(),
        ],
    );
    assert_code(&run, 1);
    assert!(
        stderr(&run).contains("no final summary yet"),
        "{}",
        show(&run)
    );
    assert!(report_path(out.path(), INCIDENT, Format::Zip).exists());
    assert_eq!(t.get(INCIDENT).await, job);
    assert_eq!(fs::read_dir(backups.path()).unwrap().count(), 0);

    let offline = export_cmd(&[
        "--file".into(),
        sample_dump().display().to_string(),
        "--job".into(),
        INCIDENT.into(),
        "--update-job".into(),
    ]);
    assert_code(&offline, 2);
    assert!(
        stderr(&offline).contains("cannot be used with"),
        "{}",
        show(&offline)
    );
}

/// A worker that saves an outcome between the read and the write makes
/// the summary update miss: nothing is written and no backup is kept.
#[tokio::test]
async fn update_job_misses_when_a_worker_saves_in_between() {
    let t = TestDb::new("export_update_race").await;
    t.insert(&[sample_job(INCIDENT)]).await;
    let jobs = t.connect().await;
    let out = tempfile::tempdir().unwrap();
    let backups = tempfile::tempdir().unwrap();
    let options = Options {
        out: out.path().to_owned(),
        formats: Format::ALL.to_vec(),
        force: false,
        generated_at: export::parse_generated_at(GENERATED_AT).unwrap(),
        policy: Policy::default(),
    };

    let job = export::fetch(&jobs, INCIDENT).await.expect("fetch");
    let report = Report::of(&job, Policy::default()).expect("report");
    let written = export::write(&report, &options).expect("write");
    let late = result_doc(
        "/data/manuscripts/MSALTMEBA001/late.jpg",
        99,
        "ocr-worker-9",
    );
    assert!(fixed_save(&t.jobs, INCIDENT, late).await);
    let between = t.get(INCIDENT).await;

    let update = UpdateJob {
        backup_dir: backups.path().to_owned(),
    };
    let e = export::update_summary(&jobs, job, &report, &written, &update)
        .await
        .expect_err("the job changed");
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(
        e.message.contains("changed since it was read"),
        "{}",
        e.message
    );
    assert_eq!(t.get(INCIDENT).await, between, "nothing written");
    assert_eq!(fs::read_dir(backups.path()).unwrap().count(), 0);
}

/// A job of 10,000 results with their text, near the 16 MiB document
/// limit, exports within seconds; every result is in every report.
#[tokio::test]
async fn a_big_job_exports() {
    const FILES: usize = 10_000;
    let paths: Vec<String> = (0..FILES)
        .map(|i| format!("/data/big/vol{}/page-{i:05}.jpg", i % 7))
        .collect();
    let results: Vec<Document> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut r = result_doc(p, i as i32, "ocr-worker-1");
            let body = text(p, 520);
            r.insert("text", body.clone());
            r.insert("full_text", body);
            r
        })
        .collect();
    let job = job_doc(
        "big-1",
        "completed",
        results,
        vec![],
        paths.iter().map(String::as_str).collect(),
    );
    let bytes = bson::to_vec(&job).unwrap().len();
    assert!(bytes > 12 << 20 && bytes < 16 << 20, "{bytes} bytes");
    let t = TestDb::new("export_big").await;
    t.insert(&[job]).await;

    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let run = export_server(&t, out.path(), &["--job", "big-1"]);
    let took = started.elapsed();
    assert_code(&run, 0);
    eprintln!("exported a {bytes}-byte job of {FILES} results in {took:?}");
    assert!(took.as_secs() < 30, "took {took:?}");

    let (_, rows) = csv_rows(&report_path(out.path(), "big-1", Format::Csv));
    assert_eq!(rows.len(), FILES);
    let zip = zip_entries(&report_path(out.path(), "big-1", Format::Zip));
    assert_eq!(zip.len(), 3 + FILES);
    let report = json_file(&report_path(out.path(), "big-1", Format::Json));
    assert_eq!(report["metadata"]["successful"], FILES);
}

/// A job id on two documents is ambiguous: neither is exported.
#[tokio::test]
async fn a_job_id_on_two_documents_is_refused() {
    let t = TestDb::new("export_two_docs").await;
    let first = sample_job(BASE_NAMES);
    let mut second = first.clone();
    second.insert("_id", bson::oid::ObjectId::new());
    t.insert(&[first, second]).await;
    let out = tempfile::tempdir().unwrap();
    let run = export_server(&t, out.path(), &["--job", BASE_NAMES]);
    assert_code(&run, 2);
    assert!(
        stderr(&run).contains("is on more than one document"),
        "{}",
        show(&run)
    );
    assert!(!out.path().join(BASE_NAMES).exists());
}

/// The report keeps exactly the results and errors of the clean view,
/// under every keep policy, for every job of the sample dump.
#[test]
fn reports_keep_what_the_clean_view_keeps() {
    let mut jobs = Vec::new();
    dupcheck::dump::read(&sample_dump(), |_, doc| jobs.extend(doc.ok())).unwrap();
    assert!(jobs.len() > 5);
    for job in &jobs {
        for keep in [dedupe::Keep::First, dedupe::Keep::Last, dedupe::Keep::Best] {
            let policy = Policy {
                keep,
                keep_errors: false,
            };
            match (
                dedupe::clean(job, policy),
                Report::from_job(job.clone(), policy),
            ) {
                (Ok(clean), Ok(report)) => {
                    assert_eq!(report.results, clean.results);
                    assert_eq!(report.errors, clean.errors);
                }
                (Err(_), Err(_)) => {}
                (a, b) => panic!("clean view {:?} but report {:?}", a.is_ok(), b.is_ok()),
            }
        }
    }
}

/// `dupcheck export` with the generated-at time fixed, not yet run.
fn export_command(args: &[String]) -> std::process::Command {
    let mut cmd = dupcheck_command(["export"]);
    cmd.args(args).env("DUPCHECK_GENERATED_AT", GENERATED_AT);
    cmd
}

/// A reader that goes away (`| true`) stops no export and panics nothing:
/// every job is exported and the exit status is the work's.
#[tokio::test]
async fn a_closed_stdout_stops_no_export() {
    let t = TestDb::new("export_pipe").await;
    t.insert(&[
        sample_job(INCIDENT),
        sample_job(BASE_NAMES),
        sample_job(ERRORS),
    ])
    .await;
    let out = tempfile::tempdir().unwrap();
    let mut args = t.flags();
    args.extend(["--out".into(), out.path().display().to_string()]);
    for job_id in [INCIDENT, BASE_NAMES, ERRORS] {
        args.extend(["--job".into(), job_id.into()]);
    }
    let run = with_stdout_closed(export_command(&args));
    assert_code(&run, 0);
    assert!(!stderr(&run).contains("panicked"), "{}", show(&run));
    for job_id in [INCIDENT, BASE_NAMES, ERRORS] {
        assert_golden(&out.path().join(job_id), job_id);
    }
}

/// A job id that cannot name a folder fails that job only: the others are
/// exported, and the exit status says something failed.
#[test]
fn a_bad_job_id_fails_only_itself() {
    let out = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "--file",
        &sample_dump().display().to_string(),
        "--out",
        &out.path().display().to_string(),
        "--job",
        INCIDENT,
        "--job",
        "",
        "--job",
        BASE_NAMES,
        "--job",
        "../escape",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = export_cmd(&args);
    assert_code(&run, 2);
    let err = stderr(&run);
    assert!(
        err.contains("job id \"\" cannot name a report folder"),
        "{}",
        show(&run)
    );
    assert!(err.contains("\"../escape\" cannot name"), "{}", show(&run));
    assert_eq!(err.lines().count(), 2, "{}", show(&run));
    for job_id in [INCIDENT, BASE_NAMES] {
        assert_golden(&out.path().join(job_id), job_id);
    }
    assert!(!out.path().parent().unwrap().join("escape").exists());
}

/// An export that fails part-way (here: the file size limit, as a full
/// disk would) removes the folders it created, and leaves alone a job
/// folder that was there before.
#[test]
fn a_failed_export_leaves_no_empty_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("reports");
    // A shell sets a file size limit of a few KiB for dupcheck, which then
    // gets "File too large" (the signal that would kill it is ignored).
    let limited = |args: &[&str]| {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg("trap '' XFSZ; ulimit -f 8; exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_dupcheck"))
            .arg("export")
            .args(["--file", &sample_dump().display().to_string()])
            .args(["--out", &out.display().to_string()])
            .args(args)
            .env_remove("MONGODB_URI")
            .env("DUPCHECK_GENERATED_AT", GENERATED_AT);
        cmd.output().expect("run dupcheck under sh")
    };

    let run = limited(&["--job", INCIDENT]);
    assert_code(&run, 2);
    assert!(stderr(&run).contains("File too large"), "{}", show(&run));
    assert!(!out.join(INCIDENT).exists(), "{}", show(&run));
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "{}",
        show(&run)
    );

    // A folder that was there stays, with what it held.
    fs::create_dir_all(out.join(INCIDENT)).unwrap();
    fs::write(out.join(INCIDENT).join("notes.txt"), "mine").unwrap();
    let run = limited(&["--job", INCIDENT]);
    assert_code(&run, 2);
    let left: Vec<String> = fs::read_dir(out.join(INCIDENT))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["notes.txt"], "{}", show(&run));
}

/// Text from the database is escaped on the terminal; a record dedupe
/// cannot read is reported with export's own word for what it did.
#[tokio::test]
async fn job_ids_are_escaped_and_malformed_jobs_skipped() {
    let t = TestDb::new("export_escape").await;
    let sneaky = "report\u{202e}fdp.exe";
    let mut job = sample_job(ERRORS);
    job.insert("job_id", sneaky);
    let mut broken = sample_job(BASE_NAMES);
    broken
        .get_document_mut("checkpoint")
        .unwrap()
        .insert("results", "oops");
    t.insert(&[job, broken]).await;
    let out = tempfile::tempdir().unwrap();
    let run = export_server(&t, out.path(), &["--job", sneaky, "--job", BASE_NAMES]);
    assert_code(&run, 2);
    assert_eq!(raw_control(&stdout(&run)), None, "{}", show(&run));
    assert!(
        stdout(&run).contains("report\\u{202e}fdp.exe: "),
        "{}",
        show(&run)
    );
    assert!(out
        .path()
        .join(sneaky)
        .join(format!("{sneaky}_results.json"))
        .exists());
    let err = stderr(&run);
    assert!(
        err.contains(&format!(
            "job {BASE_NAMES}: skipped: checkpoint.results is a string, not an array"
        )),
        "{}",
        show(&run)
    );
    assert!(!err.contains("left as it is"), "{}", show(&run));
}
