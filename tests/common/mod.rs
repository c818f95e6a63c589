//! Shared test support: the real server the suite talks to, the binary,
//! and job documents in the shapes the OCR system writes.
//!
//! Every test gets a database of its own on the server named by
//! `DUPCHECK_TEST_URI` (scripts/test.sh starts one), so tests run in
//! parallel without seeing each other's jobs.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bson::{doc, Bson, Document};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database};

/// The server under test. Tests fail, not skip, without one: the suite's
/// promise is that it ran against a real server.
pub fn uri() -> String {
    std::env::var("DUPCHECK_TEST_URI").unwrap_or_else(|_| {
        panic!("DUPCHECK_TEST_URI is not set: run the suite with scripts/test.sh")
    })
}

/// A URI with valid credentials on a server that requires them, if any.
pub fn auth_uri() -> Option<String> {
    std::env::var("DUPCHECK_TEST_AUTH_URI")
        .ok()
        .filter(|s| !s.is_empty())
}

/// A database of this test's own, empty, with its `bulk_jobs` collection.
pub struct TestDb {
    pub client: Client,
    pub db: Database,
    pub jobs: Collection<Document>,
    pub name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    pub async fn new(label: &str) -> TestDb {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let label: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(30)
            .collect();
        let name = format!("dc_{label}_{}_{n}", std::process::id());
        let mut options = ClientOptions::parse(uri()).await.expect("test URI parses");
        options.server_selection_timeout = Some(Duration::from_secs(20));
        let client = Client::with_options(options).expect("client");
        let db = client.database(&name);
        db.drop().await.expect("drop test database");
        // dupcheck refuses a collection that does not exist (a mistyped
        // --db or --collection), so every test starts with an empty one.
        db.create_collection("bulk_jobs")
            .await
            .expect("create bulk_jobs");
        let jobs = db.collection("bulk_jobs");
        TestDb {
            client,
            db,
            jobs,
            name,
        }
    }

    /// Flags that point dupcheck at this database.
    pub fn flags(&self) -> Vec<String> {
        vec!["--uri".into(), uri(), "--db".into(), self.name.clone()]
    }

    pub async fn insert(&self, docs: &[Document]) {
        self.jobs
            .insert_many(docs.to_vec())
            .await
            .expect("insert jobs");
    }

    /// This database's jobs, connected as dupcheck's commands connect.
    pub async fn connect(&self) -> dupcheck::connect::Jobs {
        dupcheck::connect::Jobs::connect(&dupcheck::connect::Target {
            uri: uri(),
            db: self.name.clone(),
            collection: "bulk_jobs".into(),
            timeout: std::time::Duration::from_secs(20),
            request_timeout: std::time::Duration::from_secs(300),
        })
        .await
        .expect("connect")
    }

    pub async fn get(&self, job_id: &str) -> Document {
        self.jobs
            .find_one(doc! { "job_id": job_id })
            .await
            .expect("find job")
            .expect("job exists")
    }
}

/// Runs the dupcheck binary with these arguments.
pub fn dupcheck<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    dupcheck_in(None, args)
}

/// Runs the dupcheck binary in a working directory.
pub fn dupcheck_in<I, S>(dir: Option<&Path>, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = dupcheck_command(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    cmd.output().expect("run dupcheck")
}

/// Runs a command with its stdout a pipe whose reader has already gone,
/// as after `| head` or `| true`: every write to stdout fails with a broken
/// pipe. Stderr is captured; stdin is empty.
pub fn with_stdout_closed(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run the command");
    // Dropped before the program has connected to anything, so before its
    // first line of output.
    drop(child.stdout.take());
    child.wait_with_output().expect("wait for the command")
}

/// The dupcheck binary with these arguments, not yet run.
pub fn dupcheck_command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dupcheck"));
    cmd.args(args)
        .env_remove("MONGODB_URI")
        .env("NO_COLOR", "1");
    cmd
}

/// Whether a program's output holds a raw control or bidi character that
/// a terminal would act on (a newline ends a line, and is allowed).
pub fn raw_control(text: &str) -> Option<char> {
    text.chars().find(|&c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A run's exit status and output, for an assertion's message.
pub fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    )
}

pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

/// The sample dump shipped in docs/examples.
pub fn sample_dump() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/jobs.json")
}

/// OCR text of about `len` bytes, different per path.
pub fn text(path: &str, len: usize) -> String {
    let seed = path
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    let words = [
        "dharma",
        "ksetre",
        "kuru",
        "samaveta",
        "yuyutsavah",
        "mamakah",
    ];
    let mut out = String::with_capacity(len + 16);
    let mut i = seed;
    while out.len() < len {
        out.push_str(words[(i % 6) as usize]);
        out.push(if i % 11 == 0 { '\n' } else { ' ' });
        i = i.wrapping_mul(1103515245).wrapping_add(12345) >> 3;
    }
    out
}

/// A result document as the worker writes it.
pub fn result_doc(path: &str, index: i32, worker: &str) -> Document {
    let name = path.rsplit('/').next().unwrap_or(path);
    let body = text(path, 300);
    doc! {
        "file": name,
        "file_path": path,
        "file_index": index,
        "status": "success",
        "provider": "google_vision",
        "languages": ["sa", "en"],
        "handwriting": false,
        "text": &body,
        "full_text": &body,
        "confidence": 0.9,
        "detected_language": "sa",
        "blocks_count": 4,
        "words_count": body.split_whitespace().count() as i32,
        "pages_processed": 1,
        "file_info": { "size": 123456, "extension": ".jpg" },
        "metadata": { "processing_time": 2.5, "worker_id": worker },
        "processed_at": "2026-01-09T03:41:00.000000",
        "retry_count": 0,
    }
}

/// An error document as the worker writes it.
pub fn error_doc(path: &str) -> Document {
    let name = path.rsplit('/').next().unwrap_or(path);
    doc! {
        "file": name,
        "file_path": path,
        "error": "OCR provider returned 503",
        "processed_at": "2026-01-09T03:41:00.000000",
    }
}

/// A job document with the given checkpoint arrays; counters are set as a
/// healthy job would have them, from the distinct paths given.
pub fn job_doc(
    job_id: &str,
    status: &str,
    results: Vec<Document>,
    errors: Vec<Document>,
    processed: Vec<&str>,
) -> Document {
    let mut distinct: Vec<String> = results
        .iter()
        .chain(errors.iter())
        .filter_map(|d| d.get_str("file_path").ok().map(str::to_owned))
        .collect();
    distinct.sort();
    distinct.dedup();
    let n = distinct.len() as i32;
    let ok = results.len() as i32;
    let failed = errors.len() as i32;
    let now = bson::DateTime::now();
    let mut job = doc! {
        "_id": bson::oid::ObjectId::new(),
        "job_id": job_id,
        "user_id": bson::oid::ObjectId::new(),
        "folder_path": "/data/in",
        "processing_mode": "single",
        "provider": "google_vision",
        "languages": ["sa"],
        "handwriting": false,
        "recursive": true,
        "export_formats": ["json", "csv", "text"],
        "status": status,
        "total_files": n,
        "published_count": n,
        "consumed_count": n,
        "progress": { "current": n, "total": n, "percentage": 100.0, "filename": "" },
        "checkpoint": {
            "results": results,
            "errors": errors,
            "processed_files": processed.iter().map(|p| Bson::String(p.to_string())).collect::<Vec<_>>(),
            "processed_count": n,
            "retry_count": 0,
            "consecutive_errors": 0,
            "last_checkpoint_at": "2026-01-09T03:45:00.000000",
        },
        "results": Bson::Null,
        "error": Bson::Null,
        "created_at": now,
        "updated_at": now,
        "completed_at": Bson::Null,
    };
    if status == "completed" {
        job.insert("completed_at", now);
        job.insert(
            "results",
            doc! { "summary": {
                "total_files": n, "successful": ok, "failed": failed,
                "processed_at": "2026-01-09T03:46:00.000000",
                "statistics": { "total_characters": 0, "average_confidence": 0.9 },
            } },
        );
    }
    job
}

/// A fresh processing job with nothing recorded yet, expecting `files`.
pub fn empty_job(job_id: &str, files: i32) -> Document {
    let mut job = job_doc(job_id, "processing", vec![], vec![], vec![]);
    job.insert("total_files", files);
    job.insert("published_count", files);
    job.insert("consumed_count", 0);
    job.insert(
        "progress",
        doc! { "current": 0, "total": files, "percentage": 0.0, "filename": "" },
    );
    job
}

/// The save as it was before the fix: read, check, then write. Two
/// workers that both read before either writes both record the file.
pub async fn racy_save(jobs: &Collection<Document>, job_id: &str, result: Document) -> bool {
    let path = result
        .get_str("file_path")
        .expect("result has a path")
        .to_owned();
    let job = jobs
        .find_one(doc! { "job_id": job_id })
        .await
        .expect("read job")
        .expect("job exists");
    let done = job
        .get_document("checkpoint")
        .and_then(|c| c.get_array("processed_files"))
        .map(|a| a.iter().any(|p| p.as_str() == Some(path.as_str())))
        .unwrap_or(false);
    if done {
        return false;
    }
    // The OCR call happens here; yielding lets the other writers in.
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    jobs.update_one(
        doc! { "job_id": job_id },
        doc! {
            "$push": { "checkpoint.results": result },
            "$addToSet": { "checkpoint.processed_files": &path },
            "$inc": { "consumed_count": 1 },
        },
    )
    .await
    .expect("racy save");
    true
}

/// The save after the fix: one conditional update.
pub async fn fixed_save(jobs: &Collection<Document>, job_id: &str, result: Document) -> bool {
    let path = result
        .get_str("file_path")
        .expect("result has a path")
        .to_owned();
    let r = jobs
        .update_one(
            doc! { "job_id": job_id, "checkpoint.processed_files": { "$ne": &path } },
            doc! {
                "$push": { "checkpoint.results": result },
                "$addToSet": { "checkpoint.processed_files": &path },
                "$inc": { "consumed_count": 1 },
            },
        )
        .await
        .expect("fixed save");
    r.modified_count == 1
}

/// Which save the workers of [`race_with`] use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Save {
    /// Before the fix: read, check, then write.
    Racy,
    /// After the fix: one conditional update.
    Fixed,
}

/// Runs `writers` concurrent workers over `files` paths with the racy save,
/// each worker trying every file, as redelivery and the race allow. Returns
/// how many results were pushed.
pub async fn race(
    jobs: &Collection<Document>,
    job_id: &str,
    files: &[String],
    writers: usize,
) -> u64 {
    race_with(jobs, job_id, files, writers, Save::Racy).await
}

/// [`race`] with the save of your choice.
pub async fn race_with(
    jobs: &Collection<Document>,
    job_id: &str,
    files: &[String],
    writers: usize,
    save: Save,
) -> u64 {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let jobs = jobs.clone();
        let job_id = job_id.to_owned();
        let files = files.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut pushed = 0u64;
            for (i, path) in files.iter().enumerate() {
                let r = result_doc(path, i as i32, &format!("ocr-worker-{w}"));
                let saved = match save {
                    Save::Racy => racy_save(&jobs, &job_id, r).await,
                    Save::Fixed => fixed_save(&jobs, &job_id, r).await,
                };
                if saved {
                    pushed += 1;
                }
            }
            pushed
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("writer task");
    }
    total
}

/// `host:port` of a plain `mongodb://host:port` URI; None for anything
/// more (credentials, options, several hosts).
pub fn plain_host_port(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("mongodb://")?.trim_end_matches('/');
    (!rest.contains(['@', '?', ',', '/'])).then(|| rest.to_owned())
}

/// A relay to `upstream` that passes everything until the client sends
/// the command `command`, and from then on drops what the client sends: a
/// server that stops answering once connected. Runs on threads of its
/// own, since a test blocks while dupcheck runs.
pub fn stalling_relay(upstream: String, command: &str) -> u16 {
    // The command's name opens its document as a string element.
    let marker: Vec<u8> = [&[2u8][..], command.as_bytes(), &[0u8][..]].concat();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut s_read, mut c_write) = (server, client);
            let marker = marker.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = vec![0u8; 64 * 1024];
                let mut stalled = false;
                while let Ok(n) = c_read.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    stalled = stalled || buf[..n].windows(marker.len()).any(|w| w == marker);
                    if !stalled && s_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_read, &mut c_write);
            });
        }
    });
    port
}

/// Runs dupcheck with `args` and its output captured, and fails the test
/// if it is still running after `limit`: for tests of what must not hang,
/// which would otherwise hang the suite instead of failing. Gives the
/// output and how long it took.
pub fn dupcheck_within<I, S>(args: I, limit: std::time::Duration) -> (Output, std::time::Duration)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let started = std::time::Instant::now();
    let mut child = dupcheck_command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("dupcheck starts");
    while child.try_wait().expect("dupcheck runs").is_none() {
        if started.elapsed() > limit {
            child.kill().ok();
            panic!("dupcheck still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let took = started.elapsed();
    (child.wait_with_output().expect("dupcheck's output"), took)
}
