//! The benchmark harness: what `dupcheck scan` costs next to fetching
//! every document and next to the server's own bare pass, on the same
//! data, in one run.
//!
//! ```text
//! cargo build --release --bin dupcheck --example bench
//! target/release/examples/bench <scenario> --uri mongodb://127.0.0.1:PORT [flags]
//! ```
//!
//! One subcommand per scenario; a new question gets a new subcommand that
//! reuses [`Bench::measure`] and [`Bench::ensure`]:
//!
//! - `generate`: insert synthetic job documents (jobs x results x text
//!   size x duplicate rate, created recently or long ago);
//! - `scan-vs-baseline`: scan, a fetch-every-document client and the bare
//!   pass, at one or more collection sizes: wall time, bytes the server
//!   sent, peak client memory;
//! - `since`: `scan --since` over a few recent jobs among many old ones,
//!   with and without the `created_at` index.
//!
//! Two more subcommands are the children the scenarios time, each in a
//! process of its own so that its peak memory is its own: `fetch` (the
//! baseline) and `bare` (the server's bare pass).
//!
//! Figures and how to reproduce them: docs/benchmarks.md. CI only builds
//! this file; nothing here runs in `cargo test`.

use std::fmt::Write as _;
use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{doc, Bson, Document, RawDocumentBuf};
use chrono::{DateTime, TimeZone, Utc};
use clap::{Args, Parser, Subcommand};
use futures_util::TryStreamExt;
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database};

type Res<T> = Result<T, String>;

/// Benchmarks of dupcheck against a MongoDB-compatible server
#[derive(Parser)]
#[command(name = "bench")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Insert synthetic job documents
    Generate(GenerateArgs),
    /// scan vs fetch-every-document vs the bare pass, on the same data
    ScanVsBaseline(ScanVsBaselineArgs),
    /// scan --since over recent jobs among many old ones
    Since(SinceArgs),
    /// (child) the baseline: find() every selected document and drop it
    Fetch(ChildArgs),
    /// (child) the server's bare pass: sum $bsonSize over the selection
    Bare(ChildArgs),
    /// (child) the bare pass in scan's chunks: the same listing, then one
    /// $bsonSize sum per chunk of jobs
    BareChunked(ChildArgs),
    /// The server's cost of scan's pipeline, and of others from files, next
    /// to the bare pass: run in this process, outputs compared
    Pipelines(PipelinesArgs),
    /// Print the pipeline scan sends (--all), as relaxed Extended JSON
    Pipeline,
}

/// Where the benchmark data lives.
#[derive(Args, Clone, Debug)]
struct Target {
    /// Server to benchmark against (loopback only, a server of your own)
    #[arg(long, env = "DUPCHECK_BENCH_URI")]
    uri: String,

    /// Database for the benchmark data
    #[arg(long, default_value = "dupcheck_bench")]
    db: String,
}

/// The shape of generated jobs. Jobs are numbered; job `k` of a given
/// shape and seed is always the same document.
#[derive(Args, Clone, Debug, PartialEq)]
struct Shape {
    /// Files per job (each gets a result, or an error entry)
    #[arg(long, default_value_t = 200)]
    results: u32,

    /// Bytes of OCR text in each result's `text`
    #[arg(long, default_value_t = 2048)]
    text_bytes: u32,

    /// Fraction of jobs holding duplicate results
    #[arg(long, default_value_t = 0.05)]
    dup_jobs: f64,

    /// Fraction of such a job's files recorded twice (at least one)
    #[arg(long, default_value_t = 0.02)]
    dup_files: f64,

    /// Fraction of files that failed (an error entry, no result)
    #[arg(long, default_value_t = 0.01)]
    errors: f64,

    /// Store the text a second time as `full_text`, as the worker does
    /// (doubles the text per result)
    #[arg(long)]
    full_text: bool,

    /// Seed of the text and id generator
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    target: Target,

    #[command(flatten)]
    shape: Shape,

    /// Collection to fill
    #[arg(long, default_value = "bulk_jobs")]
    collection: String,

    /// Jobs the group should hold when done (more are added, never fewer)
    #[arg(long, default_value_t = 1000)]
    jobs: u64,

    /// Name of the group of jobs (a collection may hold several)
    #[arg(long, default_value = "jobs")]
    group: String,

    /// How long ago the group's newest job was created, in hours; jobs are
    /// 30 s apart going back from there
    #[arg(long, default_value_t = 0.0)]
    age_hours: f64,

    /// Drop the collection first
    #[arg(long)]
    fresh: bool,
}

/// Flags shared by the scenarios that time runs.
#[derive(Args, Clone)]
struct Timing {
    /// Timed runs of each case; the median is reported
    #[arg(long, default_value_t = 5)]
    reps: usize,

    /// The dupcheck binary to time (default: next to this example, i.e.
    /// target/release/dupcheck)
    #[arg(long)]
    dupcheck: Option<PathBuf>,

    /// Where to keep child outputs (default: a temporary folder)
    #[arg(long)]
    work: Option<PathBuf>,

    /// Process id of the server, when it runs on this machine: its CPU time
    /// per run is reported too, a figure less disturbed by other load than
    /// wall time (scripts/test-server.sh keeps it in .secantus/run/NAME/pid)
    #[arg(long)]
    server_pid: Option<u32>,

    /// Send the timed clients through a relay that paces both directions to
    /// this many megabits per second, as a network link would (off: the
    /// clients use loopback directly). Needs a plain mongodb://HOST:PORT URI
    #[arg(long, value_name = "MBIT_PER_S")]
    link_mbps: Option<f64>,
}

#[derive(Args)]
struct ScanVsBaselineArgs {
    #[command(flatten)]
    target: Target,

    #[command(flatten)]
    shape: Shape,

    #[command(flatten)]
    timing: Timing,

    /// Collection sizes to measure at, growing: the data is extended
    /// between steps, so each step measures the same first jobs plus more
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    jobs: Vec<u64>,

    /// Collection to use
    #[arg(long, default_value = "bulk_jobs")]
    collection: String,

    /// Drop the collection first instead of reusing matching data
    #[arg(long)]
    fresh: bool,
}

#[derive(Args)]
struct SinceArgs {
    #[command(flatten)]
    target: Target,

    #[command(flatten)]
    shape: Shape,

    #[command(flatten)]
    timing: Timing,

    /// Jobs created 30 days ago and before
    #[arg(long, default_value_t = 10_000)]
    old: u64,

    /// Jobs created in the last hour
    #[arg(long, default_value_t = 100)]
    recent: u64,

    /// Drop the collections first instead of reusing matching data
    #[arg(long)]
    fresh: bool,
}

#[derive(Args)]
struct PipelinesArgs {
    #[command(flatten)]
    target: Target,

    #[arg(long, default_value = "bulk_jobs")]
    collection: String,

    /// A pipeline to compare, as `bench pipeline` prints it (say, at an
    /// earlier commit); repeatable
    #[arg(long = "file", value_name = "JSON")]
    files: Vec<PathBuf>,

    /// Timed runs of each pipeline; the median is reported
    #[arg(long, default_value_t = 5)]
    reps: usize,

    /// Process id of the server, to report its CPU time
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Args)]
struct ChildArgs {
    #[command(flatten)]
    target: Target,

    #[arg(long, default_value = "bulk_jobs")]
    collection: String,

    /// Only jobs created at or after this RFC 3339 time (as scan --since)
    #[arg(long)]
    since: Option<String>,

    /// (fetch) Also decode each document and audit it here, as scan does
    /// a dump file: what auditing on the client side costs
    #[arg(long)]
    audit: bool,
}

fn main() {
    let cli = Cli::parse();
    let outcome = match cli.scenario {
        Scenario::Generate(a) => generate_main(a),
        Scenario::ScanVsBaseline(a) => scan_vs_baseline(a),
        Scenario::Since(a) => since_scenario(a),
        Scenario::Fetch(a) => child(a, fetch_all),
        Scenario::Bare(a) => child(a, bare_pass),
        Scenario::BareChunked(a) => child(a, bare_chunked),
        Scenario::Pipelines(a) => pipelines(a),
        Scenario::Pipeline => {
            let stages = dupcheck::server::pipeline(&dupcheck::select::Selection::default());
            let json: Vec<_> = stages
                .into_iter()
                .map(|s| Bson::Document(s).into_relaxed_extjson())
                .collect();
            println!("{}", serde_json::Value::Array(json));
            Ok(())
        }
    };
    if let Err(e) = outcome {
        eprintln!("bench: {e}");
        std::process::exit(2);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn connect(uri: &str) -> Res<Client> {
    let mut options = ClientOptions::parse(uri).await.map_err(|e| e.to_string())?;
    options.server_selection_timeout = Some(Duration::from_secs(10));
    options.app_name = Some("dupcheck-bench".into());
    Client::with_options(options).map_err(|e| e.to_string())
}

fn since_filter(since: Option<&str>) -> Res<Document> {
    let Some(spec) = since else {
        return Ok(Document::new());
    };
    let t = DateTime::parse_from_rfc3339(spec).map_err(|e| format!("--since {spec}: {e}"))?;
    Ok(doc! { "created_at": { "$gte": bson::DateTime::from_chrono(t.with_timezone(&Utc)) } })
}

// ---------------------------------------------------------------- children

type ChildFn = fn(
    Collection<Document>,
    Document,
    bool,
) -> futures_util::future::BoxFuture<'static, Res<String>>;

fn child(args: ChildArgs, run: ChildFn) -> Res<()> {
    let filter = since_filter(args.since.as_deref())?;
    let line = runtime().block_on(async {
        let client = connect(&args.target.uri).await?;
        let coll = client
            .database(&args.target.db)
            .collection(&args.collection);
        run(coll, filter, args.audit).await
    })?;
    println!("{line}");
    Ok(())
}

/// The baseline: every selected document crosses the network whole and is
/// dropped undecoded, the least any client that audits on its side does.
fn fetch_all(
    coll: Collection<Document>,
    filter: Document,
    audit: bool,
) -> futures_util::future::BoxFuture<'static, Res<String>> {
    Box::pin(async move {
        let raw = coll.clone_with_type::<RawDocumentBuf>();
        let mut cursor = raw.find(filter).await.map_err(|e| e.to_string())?;
        let (mut jobs, mut bytes, mut flagged) = (0u64, 0u64, 0u64);
        while let Some(doc) = cursor.try_next().await.map_err(|e| e.to_string())? {
            jobs += 1;
            bytes += doc.as_bytes().len() as u64;
            if audit {
                let doc = doc.to_document().map_err(|e| e.to_string())?;
                let digest = dupcheck::digest::JobDigest::from_document(&doc);
                if !dupcheck::audit::audit(&digest).findings.is_empty() {
                    flagged += 1;
                }
            }
        }
        Ok(format!("{jobs} {bytes} {flagged}"))
    })
}

/// The physical limit: the server reads every selected document and sums
/// its size; only one small document comes back.
fn bare_pass(
    coll: Collection<Document>,
    filter: Document,
    _audit: bool,
) -> futures_util::future::BoxFuture<'static, Res<String>> {
    Box::pin(async move {
        let mut cursor = coll
            .aggregate(bare_pipeline(filter))
            .await
            .map_err(|e| e.to_string())?;
        let (mut jobs, mut bytes) = (0i64, 0i64);
        while let Some(d) = cursor.try_next().await.map_err(|e| e.to_string())? {
            jobs = number(d.get("jobs")).unwrap_or(0);
            bytes = number(d.get("bytes")).unwrap_or(0);
        }
        Ok(format!("{jobs} {bytes}"))
    })
}

/// The bare pass's pipeline: the server reads and sizes every job that
/// `filter` selects and sends back one small document.
fn bare_pipeline(filter: Document) -> Vec<Document> {
    vec![
        doc! { "$match": filter },
        doc! { "$group": {
            "_id": null,
            "jobs": { "$sum": 1 },
            "bytes": { "$sum": { "$bsonSize": "$$ROOT" } },
        } },
    ]
}

/// The bare pass as scan reads the jobs: the listing scan makes, then a
/// chunk of jobs at a time by `_id`. What scan costs over this is what its
/// own expressions cost.
fn bare_chunked(
    coll: Collection<Document>,
    filter: Document,
    _audit: bool,
) -> futures_util::future::BoxFuture<'static, Res<String>> {
    Box::pin(async move {
        let (_, options) = dupcheck::server::listing(&dupcheck::select::Selection::default());
        let mut listing = coll
            .find(filter)
            .with_options(options)
            .await
            .map_err(|e| e.to_string())?;
        let (mut jobs, mut bytes) = (0i64, 0i64);
        let mut ids = Vec::new();
        loop {
            let next = listing.try_next().await.map_err(|e| e.to_string())?;
            let end = next.is_none();
            if let Some(d) = next {
                ids.push(d.get("_id").cloned().unwrap_or(Bson::Null));
            }
            if ids.len() == dupcheck::server::CHUNK || (end && !ids.is_empty()) {
                let chunk = doc! { "_id": { "$in": std::mem::take(&mut ids) } };
                let mut cursor = coll
                    .aggregate(bare_pipeline(chunk))
                    .await
                    .map_err(|e| e.to_string())?;
                while let Some(d) = cursor.try_next().await.map_err(|e| e.to_string())? {
                    jobs += number(d.get("jobs")).unwrap_or(0);
                    bytes += number(d.get("bytes")).unwrap_or(0);
                }
            }
            if end {
                break;
            }
        }
        Ok(format!("{jobs} {bytes}"))
    })
}

fn number(b: Option<&Bson>) -> Option<i64> {
    match b? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(x) => Some(*x as i64),
        _ => None,
    }
}

// -------------------------------------------------------------- generation

/// A small, fast, deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn new(seed: u64, a: u64, b: u64) -> Rng {
        let mut r = Rng(seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.rotate_left(29));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const VOCABULARY: [&str; 32] = [
    "tatra",
    "atha",
    "iti",
    "evam",
    "punah",
    "sarva",
    "loka",
    "patra",
    "grantha",
    "likhita",
    "samvat",
    "varsa",
    "masa",
    "paksa",
    "tithi",
    "raja",
    "nagara",
    "desa",
    "pustaka",
    "adhyaya",
    "sloka",
    "pada",
    "artha",
    "tika",
    "bhasya",
    "sutra",
    "vritti",
    "karika",
    "sangraha",
    "sara",
    "nirnaya",
    "prakarana",
];

/// OCR-like text of exactly `len` bytes: words, spaces, line breaks.
fn ocr_text(rng: &mut Rng, len: usize) -> String {
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        out.push_str(VOCABULARY[rng.below(VOCABULARY.len() as u64) as usize]);
        out.push(if rng.below(12) == 0 { '\n' } else { ' ' });
    }
    out.truncate(len);
    out
}

/// Whether item `i` of a run is picked, for picks spread evenly at `rate`.
fn picked(i: u64, rate: f64) -> bool {
    ((i + 1) as f64 * rate).floor() > (i as f64 * rate).floor()
}

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// Job number `k` of a group whose newest job was created at `newest`.
fn job_doc(shape: &Shape, group: u8, k: u64, newest: DateTime<Utc>) -> (Document, bool) {
    let created = newest - chrono::Duration::seconds(30 * k as i64);
    let mut rng = Rng::new(shape.seed, k, u64::from(group));
    let worker = |rng: &mut Rng| format!("ocr-worker-{}", 1 + rng.below(4));
    let job_id = format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        rng.next() as u32,
        rng.next() as u16,
        rng.below(0x1000),
        rng.below(0x1000),
        rng.next() & 0xFFFF_FFFF_FFFF
    );
    let folder = format!("/mnt/scans/user-{}/batch-{group}-{k:06}", rng.below(50));
    let files = u64::from(shape.results);
    let has_dups = picked(k, shape.dup_jobs);

    let mut results = Vec::new();
    let mut errors = Vec::new();
    let mut processed = Vec::new();
    let mut message_ids = Vec::new();
    let mut successful = Vec::new();
    for i in 0..files {
        let path = format!("{folder}/page-{i:04}.tif");
        let name = format!("page-{i:04}.tif");
        let at = iso(created + chrono::Duration::seconds(2 * i as i64));
        processed.push(Bson::String(path.clone()));
        message_ids.push(Bson::String(format!("{:016x}", rng.next())));
        if picked(i, shape.errors) {
            errors.push(Bson::Document(doc! {
                "file": name,
                "file_path": path,
                "error": "OCR provider returned 503: service unavailable",
                "processed_at": at,
            }));
            continue;
        }
        let text = ocr_text(&mut rng, shape.text_bytes as usize);
        let words = text.split_whitespace().count() as i32;
        let mut result = doc! {
            "file": &name,
            "file_path": &path,
            "file_index": i as i32,
            "status": "success",
            "provider": "google_vision",
            "languages": ["sa", "en"],
            "handwriting": false,
            "text": &text,
        };
        if shape.full_text {
            result.insert("full_text", &text);
        }
        result.extend(doc! {
            "confidence": 0.8 + (rng.below(200) as f64) / 1000.0,
            "detected_language": "sa",
            "blocks_count": 1 + rng.below(12) as i32,
            "words_count": words,
            "pages_processed": 1,
            "file_info": { "size": 100_000 + rng.below(400_000) as i64, "extension": ".tif" },
            "metadata": {
                "processing_time": 1.0 + (rng.below(4000) as f64) / 1000.0,
                "worker_id": worker(&mut rng),
            },
            "processed_at": at,
            "retry_count": 0,
        });
        successful.push(results.len());
        results.push(Bson::Document(result));
    }
    if has_dups && !successful.is_empty() {
        // The racy save: a second worker pushes another result for a file
        // already recorded, later, under another worker's name.
        let n = ((successful.len() as f64 * shape.dup_files).round() as usize).max(1);
        for j in 0..n {
            let at = successful[j * successful.len() / n];
            let mut again = results[at].as_document().expect("a result").clone();
            if let Ok(meta) = again.get_document_mut("metadata") {
                meta.insert("worker_id", "ocr-worker-9");
            }
            results.push(Bson::Document(again));
        }
    }

    let distinct = files as i32;
    let failed = errors.len() as i32;
    let completed = created + chrono::Duration::seconds(2 * files as i64 + 30);
    let seconds = created.timestamp() as u32;
    let counter = (k as u32).to_be_bytes();
    let id = ObjectId::from_parts(
        seconds,
        [b'b', b'e', b'n', b'c', group],
        [counter[1], counter[2], counter[3]],
    );
    let job = doc! {
        "_id": id,
        "job_id": &job_id,
        "user_id": ObjectId::from_parts(1_700_000_000, [0, 0, 0, 0, group], [0, 0, 1]),
        "folder_path": &folder,
        "processing_mode": "single",
        "provider": "google_vision",
        "languages": ["sa", "en"],
        "handwriting": false,
        "recursive": true,
        "export_formats": ["json", "csv", "text"],
        "status": "completed",
        "total_files": distinct,
        "published_count": distinct,
        "consumed_count": distinct,
        "progress": {
            "current": distinct,
            "total": distinct,
            "percentage": 100,
            "filename": format!("page-{:04}.tif", files.saturating_sub(1)),
        },
        "checkpoint": {
            "results": results,
            "errors": errors,
            "processed_files": processed,
            "processed_message_ids": message_ids,
            "processed_count": distinct,
            "retry_count": 0,
            "consecutive_errors": 0,
            "last_checkpoint_at": iso(completed),
        },
        "results": {
            "summary": {
                "total_files": distinct,
                "successful": distinct - failed,
                "failed": failed,
                "processed_at": iso(completed),
                "statistics": { "languages": ["sa"] },
            },
            "report_files": {
                "json": format!("bulk_results/{job_id}/{job_id}_results.json"),
                "csv": format!("bulk_results/{job_id}/{job_id}_results.csv"),
            },
            "zip_path": format!("bulk_results/{job_id}/{job_id}_bulk_ocr_results.zip"),
            "download_url": format!("/api/bulk/download/{job_id}"),
        },
        "error": null,
        "created_at": bson::DateTime::from_chrono(created),
        "updated_at": bson::DateTime::from_chrono(completed),
        "completed_at": bson::DateTime::from_chrono(completed),
    };
    (job, has_dups)
}

fn shape_doc(shape: &Shape) -> Document {
    doc! {
        "results": shape.results,
        "text_bytes": shape.text_bytes,
        "dup_jobs": shape.dup_jobs,
        "dup_files": shape.dup_files,
        "errors": shape.errors,
        "full_text": shape.full_text,
        "seed": shape.seed as i64,
    }
}

/// What a collection holds of one group, as the generator left it.
struct Group {
    jobs: u64,
    with_dups: u64,
    newest: DateTime<Utc>,
}

fn generate_main(a: GenerateArgs) -> Res<()> {
    let bench = Bench::new(&a.target, None)?;
    if a.fresh {
        bench.drop_collection(&a.collection)?;
    }
    let g = bench.ensure(&a.collection, &a.group, &a.shape, a.jobs, a.age_hours)?;
    println!(
        "{}.{} group {}: {} jobs, {} with duplicates, newest created {}",
        a.target.db,
        a.collection,
        a.group,
        g.jobs,
        g.with_dups,
        g.newest.to_rfc3339()
    );
    Ok(())
}

// ------------------------------------------------------------ measurement

/// One timed child run.
#[derive(Clone)]
struct Run {
    wall: Duration,
    /// Bytes the server wrote to all its connections during the run, less
    /// the counter's own read; None when the server keeps no such counter.
    bytes_out: Option<i64>,
    /// Peak resident memory of the child, KiB.
    peak_kib: u64,
    /// CPU seconds the server spent during the run, if its pid is known.
    server_cpu: Option<f64>,
    stdout: String,
}

struct Bench {
    rt: tokio::runtime::Runtime,
    client: Client,
    db: Database,
    target: Target,
    /// What one serverStatus read adds to bytesOut by itself.
    status_cost: i64,
    dupcheck: PathBuf,
    work: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    server_pid: Option<u32>,
    /// Clock ticks per second of /proc/PID/stat.
    ticks: f64,
    /// The URI the timed clients use: the server's, or the relay's.
    child_uri: String,
    link_mbps: Option<f64>,
}

impl Bench {
    fn new(target: &Target, timing: Option<&Timing>) -> Res<Bench> {
        let rt = runtime();
        let client = rt.block_on(connect(&target.uri))?;
        let db = client.database(&target.db);
        let (work, tmp) = match timing.and_then(|t| t.work.clone()) {
            Some(w) => {
                std::fs::create_dir_all(&w).map_err(|e| format!("{}: {e}", w.display()))?;
                (w, None)
            }
            None => {
                let t = tempfile::tempdir().map_err(|e| e.to_string())?;
                (t.path().to_owned(), Some(t))
            }
        };
        let here = std::env::current_exe().map_err(|e| e.to_string())?;
        let beside = here
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("dupcheck"))
            .unwrap_or_default();
        let dupcheck = timing.and_then(|t| t.dupcheck.clone()).unwrap_or(beside);
        let link_mbps = timing.and_then(|t| t.link_mbps);
        let child_uri = match link_mbps {
            None => target.uri.clone(),
            Some(mbps) => {
                let port = rt.block_on(relay::start(&target.uri, mbps))?;
                format!("mongodb://127.0.0.1:{port}/?directConnection=true")
            }
        };
        let ticks = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0);
        let mut bench = Bench {
            rt,
            client,
            db,
            target: target.clone(),
            status_cost: 0,
            dupcheck,
            work,
            _tmp: tmp,
            server_pid: timing.and_then(|t| t.server_pid),
            ticks,
            child_uri,
            link_mbps,
        };
        bench.status_cost = bench.calibrate()?;
        Ok(bench)
    }

    /// CPU seconds the server process has used so far.
    fn server_cpu(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.server_pid?)).ok()?;
        // Fields after the command name, which is in parentheses: utime and
        // stime are the 12th and 13th.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let user: f64 = fields.get(11)?.parse().ok()?;
        let system: f64 = fields.get(12)?.parse().ok()?;
        Some((user + system) / self.ticks)
    }

    fn bytes_out(&self) -> Res<Option<i64>> {
        let status = self
            .rt
            .block_on(
                self.client
                    .database("admin")
                    .run_command(doc! { "serverStatus": 1 })
                    .into_future(),
            )
            .map_err(|e| format!("serverStatus: {e}"))?;
        Ok(status
            .get_document("network")
            .ok()
            .and_then(|n| number(n.get("bytesOut"))))
    }

    /// The counter is read with a command whose own reply it then counts:
    /// measure that, to take it off every figure.
    fn calibrate(&self) -> Res<i64> {
        let mut deltas = Vec::new();
        for _ in 0..5 {
            let (a, b) = (self.bytes_out()?, self.bytes_out()?);
            match (a, b) {
                (Some(a), Some(b)) => deltas.push(b - a),
                _ => return Ok(0),
            }
        }
        deltas.sort();
        Ok(deltas[deltas.len() / 2])
    }

    /// Bytes sent during a run, if the server counts them: a counter that
    /// did not move even for its own replies is not counting.
    fn sent(&self, before: Option<i64>, after: Option<i64>) -> Option<i64> {
        if self.status_cost <= 0 {
            return None;
        }
        before.zip(after).map(|(b, a)| a - b - self.status_cost)
    }

    fn drop_collection(&self, name: &str) -> Res<()> {
        self.rt.block_on(async {
            self.db
                .collection::<Document>(name)
                .drop()
                .await
                .map_err(|e| e.to_string())?;
            self.meta()
                .delete_many(doc! { "collection": name })
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
    }

    fn meta(&self) -> Collection<Document> {
        self.db.collection("bench_meta")
    }

    /// Makes the collection hold `jobs` jobs of `shape` in `group`, adding
    /// the missing ones; data of another shape is dropped first. Resumes an
    /// interrupted generation.
    fn ensure(
        &self,
        collection: &str,
        group: &str,
        shape: &Shape,
        jobs: u64,
        age_hours: f64,
    ) -> Res<Group> {
        let key = format!("{collection}/{group}");
        let tag = group
            .bytes()
            .fold(7u8, |h, b| h.wrapping_mul(31).wrapping_add(b));
        let meta = self
            .rt
            .block_on(self.meta().find_one(doc! { "_id": &key }).into_future())
            .map_err(|e| e.to_string())?;
        let same = meta.as_ref().is_some_and(|m| {
            m.get_document("shape").ok() == Some(&shape_doc(shape))
                && m.get_f64("age_hours").ok() == Some(age_hours)
                && number(m.get("jobs")).is_some_and(|n| n as u64 <= jobs)
        });
        if meta.is_some() && !same {
            eprintln!("bench: {key} holds other data; dropping {collection}");
            self.drop_collection(collection)?;
        }
        let meta = if same { meta } else { None };
        let (mut have, newest) = match &meta {
            Some(m) => (
                number(m.get("jobs")).unwrap_or(0) as u64,
                m.get_datetime("newest")
                    .map_err(|e| e.to_string())?
                    .to_chrono(),
            ),
            None => {
                let now = Utc::now() - chrono::Duration::seconds((age_hours * 3600.0) as i64);
                let now = Utc
                    .timestamp_opt(now.timestamp(), 0)
                    .single()
                    .expect("a time");
                (0, now)
            }
        };
        let coll = self.db.collection::<Document>(collection);
        let started = Instant::now();
        let first = have;
        while have < jobs {
            let mut batch = Vec::new();
            let mut size = 0usize;
            while have + (batch.len() as u64) < jobs && batch.len() < 256 && size < 8 << 20 {
                let (job, _) = job_doc(shape, tag, have + batch.len() as u64, newest);
                size += bson::to_vec(&job).map(|v| v.len()).unwrap_or(0);
                batch.push(job);
            }
            let n = batch.len() as u64;
            self.rt.block_on(async {
                coll.insert_many(batch).await.map_err(|e| e.to_string())?;
                self.meta()
                    .update_one(
                        doc! { "_id": &key },
                        doc! { "$set": {
                            "collection": collection,
                            "shape": shape_doc(shape),
                            "age_hours": age_hours,
                            "jobs": (have + n) as i64,
                            "newest": bson::DateTime::from_chrono(newest),
                        } },
                    )
                    .upsert(true)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(())
            })?;
            have += n;
            eprint!("\rbench: {key}: {have}/{jobs} jobs");
        }
        if have > first {
            eprintln!(" ({:.1} s)", started.elapsed().as_secs_f64());
        }
        let with_dups = (0..have).filter(|&k| picked(k, shape.dup_jobs)).count() as u64;
        Ok(Group {
            jobs: have,
            with_dups,
            newest,
        })
    }

    /// Runs `program args` under /usr/bin/time, reading the server's byte
    /// counter before and after.
    fn measure(&self, label: &str, program: &Path, args: &[String]) -> Res<Run> {
        let rss = self.work.join(format!("{label}.rss"));
        let before = self.bytes_out()?;
        let cpu_before = self.server_cpu();
        let started = Instant::now();
        let out = Command::new("/usr/bin/time")
            .arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(&rss)
            .arg(program)
            .args(args)
            .env_remove("MONGODB_URI")
            .env("NO_COLOR", "1")
            .output()
            .map_err(|e| format!("cannot run /usr/bin/time (apt-get install time): {e}"))?;
        let wall = started.elapsed();
        let cpu_after = self.server_cpu();
        let after = self.bytes_out()?;
        // dupcheck exits 1 when it found something: a normal outcome here.
        if !matches!(out.status.code(), Some(0) | Some(1)) {
            return Err(format!(
                "{label}: {} {} failed ({}): {}",
                program.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let peak_kib = std::fs::read_to_string(&rss)
            .ok()
            .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()))
            .ok_or_else(|| format!("{label}: no peak memory from /usr/bin/time"))?;
        Ok(Run {
            wall,
            bytes_out: self.sent(before, after),
            peak_kib,
            server_cpu: cpu_before.zip(cpu_after).map(|(b, a)| a - b),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        })
    }

    fn child_args(&self, which: &str, collection: &str, since: Option<&str>) -> Vec<String> {
        let mut args = vec![
            which.to_owned(),
            "--uri".into(),
            self.child_uri.clone(),
            "--db".into(),
            self.target.db.clone(),
            "--collection".into(),
            collection.to_owned(),
        ];
        if let Some(s) = since {
            args.extend(["--since".into(), s.to_owned()]);
        }
        args
    }

    fn scan_args(&self, collection: &str, since: Option<&str>) -> Vec<String> {
        let mut args = vec![
            "scan".to_owned(),
            "--uri".into(),
            self.child_uri.clone(),
            "--db".into(),
            self.target.db.clone(),
            "--collection".into(),
            collection.to_owned(),
            "--format".into(),
            "json".into(),
        ];
        match since {
            Some(s) => args.extend(["--since".into(), s.to_owned()]),
            None => args.push("--all".into()),
        }
        args
    }

    fn check_dupcheck(&self) -> Res<()> {
        if self.dupcheck.is_file() {
            return Ok(());
        }
        Err(format!(
            "no dupcheck binary at {}: run `cargo build --release --bin dupcheck \
             --example bench` first, or pass --dupcheck",
            self.dupcheck.display()
        ))
    }

    fn server_facts(&self) -> Res<String> {
        let info = self
            .rt
            .block_on(
                self.client
                    .database("admin")
                    .run_command(doc! { "buildInfo": 1 })
                    .into_future(),
            )
            .map_err(|e| e.to_string())?;
        let version = info.get_str("version").unwrap_or("?");
        Ok(match info.get_str("secantusVersion") {
            Ok(s) => format!("SecantusDB {s} (reports MongoDB {version})"),
            Err(_) => format!("MongoDB {version}"),
        })
    }
}

/// A case of a scenario: a label and the command that runs it.
struct Case {
    label: String,
    program: PathBuf,
    args: Vec<String>,
}

/// Runs every case `reps` times after one untimed warm-up, rotating the
/// order each round so that no case always runs first or last.
fn rounds(bench: &Bench, cases: &[Case], reps: usize) -> Res<Vec<Vec<Run>>> {
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); cases.len()];
    for round in 0..=reps {
        for j in 0..cases.len() {
            let i = (j + round) % cases.len();
            let c = &cases[i];
            let run = bench.measure(&format!("{i}"), &c.program, &c.args)?;
            if round > 0 {
                runs[i].push(run);
            }
        }
        if round > 0 {
            eprint!("\rbench: round {round}/{reps}");
        }
    }
    eprintln!();
    Ok(runs)
}

fn median<T: Copy + PartialOrd>(mut xs: Vec<T>) -> T {
    xs.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    xs[xs.len() / 2]
}

/// Medians (and the spread of wall time) of some runs.
struct Summary {
    wall: f64,
    wall_min: f64,
    wall_max: f64,
    server_cpu: Option<f64>,
    bytes: Option<i64>,
    peak_mib: f64,
    peak_max_mib: f64,
}

fn summarise(runs: &[Run]) -> Summary {
    let walls: Vec<f64> = runs.iter().map(|r| r.wall.as_secs_f64()).collect();
    let bytes: Option<Vec<i64>> = runs.iter().map(|r| r.bytes_out).collect();
    let cpu: Option<Vec<f64>> = runs.iter().map(|r| r.server_cpu).collect();
    let peaks: Vec<u64> = runs.iter().map(|r| r.peak_kib).collect();
    Summary {
        wall: median(walls.clone()),
        wall_min: walls.iter().cloned().fold(f64::INFINITY, f64::min),
        wall_max: walls.iter().cloned().fold(0.0, f64::max),
        server_cpu: cpu.map(median),
        bytes: bytes.map(median),
        peak_mib: median(peaks.clone()) as f64 / 1024.0,
        peak_max_mib: peaks.iter().copied().max().unwrap_or(0) as f64 / 1024.0,
    }
}

fn human_bytes(b: Option<i64>) -> String {
    match b {
        None => "n/a".into(),
        Some(b) if b.abs() < 10 * 1024 => format!("{b} B"),
        Some(b) if b.abs() < 10 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        Some(b) => format!("{:.1} MiB", b as f64 / 1048576.0),
    }
}

fn seconds(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |x| format!("{x:.2}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    }
}

fn machine_facts() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or("?".into(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1048576.0)
        });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    format!("{cores} cores ({cpu}), {mem} memory, load average {load} at the end")
}

/// The lines every report starts with.
fn preamble(bench: &Bench, shape: &Shape, timing: &Timing) -> Res<String> {
    let mut out = String::new();
    writeln!(out, "machine: {}", machine_facts()).ok();
    writeln!(out, "server: {}", bench.server_facts()?).ok();
    let link = match bench.link_mbps {
        Some(m) => format!("a relay paced to {m} Mbit/s each way"),
        None => "loopback".into(),
    };
    writeln!(out, "clients reach it through: {link}").ok();
    writeln!(
        out,
        "shape: {} files per job, {} B of text per result{}, {:.0}% of jobs with \
         duplicates ({:.0}% of their files twice), {:.0}% failed files",
        shape.results,
        shape.text_bytes,
        if shape.full_text {
            " (and again as full_text)"
        } else {
            ""
        },
        shape.dup_jobs * 100.0,
        shape.dup_files * 100.0,
        shape.errors * 100.0,
    )
    .ok();
    writeln!(
        out,
        "{} timed runs of each case after one untimed, in rotating order; medians",
        timing.reps
    )
    .ok();
    Ok(out)
}

/// The `jobs` count a child or scan printed, to check every case saw the
/// same jobs.
fn jobs_seen(label: &str, run: &Run) -> Option<u64> {
    if label.starts_with("scan") {
        let v: serde_json::Value = serde_json::from_str(&run.stdout).ok()?;
        v["summary"]["jobs"].as_u64()
    } else {
        run.stdout.split_whitespace().next()?.parse().ok()
    }
}

fn scan_findings(run: &Run) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(&run.stdout).ok()?;
    v["summary"]["jobs_with_findings"].as_u64()
}

// -------------------------------------------------------- scan vs baseline

fn scan_vs_baseline(a: ScanVsBaselineArgs) -> Res<()> {
    let bench = Bench::new(&a.target, Some(&a.timing))?;
    bench.check_dupcheck()?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    if a.fresh {
        bench.drop_collection(&a.collection)?;
    }
    let mut table = String::new();
    writeln!(
        table,
        "| jobs | case | wall s (min-max) | server CPU s | bytes sent | peak RSS (max) \
         | wall vs bare | CPU vs bare | wall vs fetch | bytes vs fetch |"
    )
    .ok();
    writeln!(table, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|").ok();

    for &jobs in &a.jobs {
        let group = bench.ensure(&a.collection, "jobs", &a.shape, jobs, 0.0)?;
        if group.jobs != jobs {
            return Err(format!(
                "expected {jobs} jobs, the group holds {}",
                group.jobs
            ));
        }
        let cases = [
            Case {
                label: "bare".into(),
                program: me.clone(),
                args: bench.child_args("bare", &a.collection, None),
            },
            Case {
                label: "scan".into(),
                program: bench.dupcheck.clone(),
                args: bench.scan_args(&a.collection, None),
            },
            Case {
                label: "fetch".into(),
                program: me.clone(),
                args: bench.child_args("fetch", &a.collection, None),
            },
            Case {
                label: "fetch+audit".into(),
                program: me.clone(),
                args: {
                    let mut args = bench.child_args("fetch", &a.collection, None);
                    args.push("--audit".into());
                    args
                },
            },
            Case {
                label: "bare, chunked".into(),
                program: me.clone(),
                args: bench.child_args("bare-chunked", &a.collection, None),
            },
        ];
        let runs = rounds(&bench, &cases, a.timing.reps)?;
        for (c, r) in cases.iter().zip(&runs) {
            let seen = jobs_seen(&c.label, &r[0]);
            if seen != Some(jobs) {
                return Err(format!("{} saw {seen:?} jobs, not {jobs}", c.label));
            }
        }
        let flagged = scan_findings(&runs[1][0]);
        let client_flagged = runs[3][0].stdout.split_whitespace().nth(2);
        if client_flagged != flagged.map(|n| n.to_string()).as_deref() {
            eprintln!(
                "bench: warning: scan flagged {flagged:?} jobs, the client-side audit \
                 {client_flagged:?}"
            );
        }
        if flagged != Some(group.with_dups) {
            eprintln!(
                "bench: warning: scan flagged {flagged:?} jobs, {} were generated with \
                 duplicates",
                group.with_dups
            );
        }
        let s: Vec<Summary> = runs.iter().map(|r| summarise(r)).collect();
        let (bare, fetch) = (&s[0], &s[2]);
        for (c, x) in cases.iter().zip(&s) {
            let bytes_vs_fetch = match (x.bytes, fetch.bytes) {
                (Some(b), Some(f)) if f > 0 => format!("{:.2}%", 100.0 * b as f64 / f as f64),
                _ => "n/a".into(),
            };
            writeln!(
                table,
                "| {jobs} | {} | {:.2} ({:.2}-{:.2}) | {} | {} | {:.1} MiB ({:.1}) | {} | {} \
                 | {} | {} |",
                c.label,
                x.wall,
                x.wall_min,
                x.wall_max,
                seconds(x.server_cpu),
                human_bytes(x.bytes),
                x.peak_mib,
                x.peak_max_mib,
                ratio(Some(x.wall), Some(bare.wall)),
                ratio(x.server_cpu, bare.server_cpu),
                ratio(Some(x.wall), Some(fetch.wall)),
                bytes_vs_fetch,
            )
            .ok();
        }
        eprintln!(
            "bench: {jobs} jobs ({} flagged): scan {:.2} s, bare {:.2} s, fetch {:.2} s",
            flagged.unwrap_or(0),
            s[1].wall,
            bare.wall,
            fetch.wall
        );
    }
    print!("{}\n{table}", preamble(&bench, &a.shape, &a.timing)?);
    Ok(())
}

// ------------------------------------------------------------------ since

fn since_scenario(a: SinceArgs) -> Res<()> {
    let bench = Bench::new(&a.target, Some(&a.timing))?;
    bench.check_dupcheck()?;
    let (all, window) = ("since_all", "since_window");
    if a.fresh {
        bench.drop_collection(all)?;
        bench.drop_collection(window)?;
    }
    // The old jobs first, so that insertion order, too, runs old to new.
    let old = bench.ensure(all, "old", &a.shape, a.old, 30.0 * 24.0)?;
    let recent = bench.ensure(all, "recent", &a.shape, a.recent, 0.0)?;
    // The same recent jobs alone: what a scan of the window alone costs.
    let mut alone = bench.ensure(window, "recent", &a.shape, a.recent, 0.0)?;
    if alone.newest != recent.newest {
        // Generated at another time: regenerate so both hold the same jobs.
        bench.drop_collection(window)?;
        alone = bench.ensure(window, "recent", &a.shape, a.recent, 0.0)?;
    }
    let oldest_recent = alone.newest - chrono::Duration::seconds(30 * a.recent as i64);
    let since = (oldest_recent - chrono::Duration::hours(1)).to_rfc3339();
    let coll = bench.db.collection::<Document>(all);

    let index_name = "created_at_-1";
    let names = bench
        .rt
        .block_on(coll.list_index_names().into_future())
        .map_err(|e| e.to_string())?;
    if names.iter().any(|n| n == index_name) {
        bench
            .rt
            .block_on(coll.drop_index(index_name).into_future())
            .map_err(|e| e.to_string())?;
    }

    let scan = |c: &str, s: Option<&str>| Case {
        label: "scan".into(),
        program: bench.dupcheck.clone(),
        args: bench.scan_args(c, s),
    };
    let unindexed = [
        scan(window, Some(&since)),
        scan(all, Some(&since)),
        scan(all, None),
    ];
    let labels = [
        format!(
            "scan --since, a collection of only the {} recent jobs",
            a.recent
        ),
        format!(
            "scan --since, {} old + {} recent, no index",
            a.old, a.recent
        ),
        format!("scan --all, {} old + {} recent", a.old, a.recent),
        format!(
            "scan --since, {} old + {} recent, index {{created_at: -1}}",
            a.old, a.recent
        ),
    ];
    let filter = since_filter(Some(&since))?;
    let examined_before = explain_examined(&bench, all, &filter);
    let runs_before = rounds(&bench, &unindexed, a.timing.reps)?;

    let model = mongodb::IndexModel::builder()
        .keys(doc! { "created_at": -1 })
        .options(
            mongodb::options::IndexOptions::builder()
                .name(index_name.to_owned())
                .build(),
        )
        .build();
    bench
        .rt
        .block_on(coll.create_index(model).into_future())
        .map_err(|e| e.to_string())?;
    let examined_after = explain_examined(&bench, all, &filter);
    let indexed = [scan(all, Some(&since))];
    let runs_after = rounds(&bench, &indexed, a.timing.reps)?;

    let expect = [
        recent.jobs,
        recent.jobs,
        old.jobs + recent.jobs,
        recent.jobs,
    ];
    let runs: Vec<&Vec<Run>> = runs_before.iter().chain(runs_after.iter()).collect();
    for ((l, r), want) in labels.iter().zip(&runs).zip(expect) {
        let seen = jobs_seen("scan", &r[0]);
        if seen != Some(want) {
            return Err(format!("{l}: saw {seen:?} jobs, not {want}"));
        }
    }
    let examined = [None, examined_before, None, examined_after];

    let mut report = preamble(&bench, &a.shape, &a.timing)?;
    writeln!(report, "--since {since}").ok();
    writeln!(report).ok();
    writeln!(
        report,
        "| case | jobs out | explain: keys / docs examined | wall s (min-max) | server CPU s \
         | bytes sent | peak RSS | wall vs window alone | CPU vs window alone |"
    )
    .ok();
    writeln!(report, "|---|---:|---|---:|---:|---:|---:|---:|---:|").ok();
    let base = summarise(runs[0]);
    for (((l, r), want), ex) in labels.iter().zip(&runs).zip(expect).zip(&examined) {
        let s = summarise(r);
        writeln!(
            report,
            "| {l} | {want} | {} | {:.2} ({:.2}-{:.2}) | {} | {} | {:.1} MiB | {} | {} |",
            ex.clone().unwrap_or_else(|| "-".into()),
            s.wall,
            s.wall_min,
            s.wall_max,
            seconds(s.server_cpu),
            human_bytes(s.bytes),
            s.peak_mib,
            ratio(Some(s.wall), Some(base.wall)),
            ratio(s.server_cpu, base.server_cpu),
        )
        .ok();
    }
    print!("{report}");
    Ok(())
}

/// What the server's explain says scan's listing of the selected jobs
/// examines, as "keys / docs (plan)"; None if it will not say.
fn explain_examined(bench: &Bench, collection: &str, filter: &Document) -> Option<String> {
    let (_, options) = dupcheck::server::listing(&dupcheck::select::Selection::default());
    let command = doc! {
        "explain": {
            "find": collection,
            "filter": filter.clone(),
            "sort": options.sort.unwrap_or_default(),
            "projection": options.projection.unwrap_or_default(),
        },
        "verbosity": "executionStats",
    };
    let reply = bench
        .rt
        .block_on(bench.db.run_command(command).into_future())
        .ok()?;
    let keys = find_number(&reply, "totalKeysExamined");
    let docs = find_number(&reply, "totalDocsExamined")?;
    let plan = find_stage(&reply).unwrap_or_else(|| "?".into());
    Some(format!(
        "{} / {docs} ({plan})",
        keys.map_or("?".into(), |k| k.to_string())
    ))
}

fn find_number(d: &Document, key: &str) -> Option<i64> {
    if let Some(n) = number(d.get(key)) {
        return Some(n);
    }
    d.values().find_map(|v| match v {
        Bson::Document(inner) => find_number(inner, key),
        Bson::Array(items) => items.iter().find_map(|i| match i {
            Bson::Document(inner) => find_number(inner, key),
            _ => None,
        }),
        _ => None,
    })
}

/// The innermost stage of the winning plan (COLLSCAN, IXSCAN, ...).
fn find_stage(d: &Document) -> Option<String> {
    let plan = find_doc(d, "winningPlan")?;
    let mut at = plan;
    loop {
        match at.get_document("inputStage") {
            Ok(inner) => at = inner,
            Err(_) => {
                return at
                    .get_document("queryPlan")
                    .ok()
                    .and_then(find_stage_in)
                    .or_else(|| at.get_str("stage").ok().map(str::to_owned))
            }
        }
    }
}

fn find_stage_in(d: &Document) -> Option<String> {
    let mut at = d;
    while let Ok(inner) = at.get_document("inputStage") {
        at = inner;
    }
    at.get_str("stage").ok().map(str::to_owned)
}

fn find_doc<'a>(d: &'a Document, key: &str) -> Option<&'a Document> {
    if let Ok(found) = d.get_document(key) {
        return Some(found);
    }
    d.values().find_map(|v| match v {
        Bson::Document(inner) => find_doc(inner, key),
        Bson::Array(items) => items.iter().find_map(|i| match i {
            Bson::Document(inner) => find_doc(inner, key),
            _ => None,
        }),
        _ => None,
    })
}

// ------------------------------------------------------------------ relay

/// A TCP relay on loopback that paces each direction of each connection to
/// a link speed: what a network between client and server costs, without
/// touching the machine's network settings. Every chunk is held for the
/// time a link of that speed takes to carry it; no latency is added.
mod relay {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::Instant;

    /// Starts relaying to the server of `uri`; returns the relay's port.
    pub async fn start(uri: &str, mbps: f64) -> Result<u16, String> {
        let upstream = host_port(uri)?;
        if !(mbps > 0.0 && mbps.is_finite()) {
            return Err(format!("--link-mbps {mbps}: must be a positive number"));
        }
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("relay: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("relay: {e}"))?
            .port();
        let rate = mbps * 1e6 / 8.0;
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = tokio::spawn(pace(client_read, server_write, rate));
                    pace(server_read, client_write, rate).await;
                    up.abort();
                });
            }
        });
        Ok(port)
    }

    async fn pace(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, bytes_per_s: f64) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut free_at = Instant::now();
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // The link is free again once this chunk has crossed it. The
            // timer ticks in milliseconds: wait only when that is ahead by
            // more than a few, so small chunks are not each rounded up.
            let now = Instant::now();
            free_at = free_at.max(now) + Duration::from_secs_f64(n as f64 / bytes_per_s);
            if free_at > now + Duration::from_millis(3) {
                tokio::time::sleep_until(free_at).await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }

    /// HOST:PORT of a plain `mongodb://HOST:PORT` URI.
    fn host_port(uri: &str) -> Result<String, String> {
        let rest = uri
            .strip_prefix("mongodb://")
            .ok_or("--link-mbps needs a mongodb:// URI")?;
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if authority.contains(['@', ',']) || !authority.contains(':') {
            return Err("--link-mbps needs a plain mongodb://HOST:PORT URI".into());
        }
        Ok(authority.to_owned())
    }
}

// -------------------------------------------------------------- pipelines

fn pipelines(a: PipelinesArgs) -> Res<()> {
    let timing = Timing {
        reps: a.reps,
        dupcheck: None,
        work: None,
        server_pid: a.server_pid,
        link_mbps: None,
    };
    let bench = Bench::new(&a.target, Some(&timing))?;
    let coll = bench.db.collection::<Document>(&a.collection);
    let bare = vec![doc! { "$group": {
        "_id": null,
        "jobs": { "$sum": 1 },
        "bytes": { "$sum": { "$bsonSize": "$$ROOT" } },
    } }];
    let mut cases: Vec<(String, Vec<Document>)> = vec![
        ("bare pass".into(), bare),
        (
            "scan's pipeline (this build)".into(),
            dupcheck::server::pipeline(&dupcheck::select::Selection::default()),
        ),
    ];
    for f in &a.files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        let stages = match Bson::try_from(json) {
            Ok(Bson::Array(items)) => items
                .into_iter()
                .map(|b| match b {
                    Bson::Document(d) => Ok(d),
                    _ => Err(format!("{}: a stage is not a document", f.display())),
                })
                .collect::<Res<Vec<_>>>()?,
            _ => return Err(format!("{}: not a JSON array of stages", f.display())),
        };
        cases.push((f.display().to_string(), stages));
    }

    let run = |stages: &[Document]| -> Res<(f64, Option<f64>, Vec<Document>)> {
        let cpu = bench.server_cpu();
        let started = Instant::now();
        let out = bench.rt.block_on(async {
            let cursor = coll
                .aggregate(stages.to_vec())
                .await
                .map_err(|e| e.to_string())?;
            cursor
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| e.to_string())
        })?;
        let wall = started.elapsed().as_secs_f64();
        let cpu = cpu.zip(bench.server_cpu()).map(|(b, a)| a - b);
        Ok((wall, cpu, out))
    };

    let mut walls: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut cpus: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut outputs: Vec<Option<Vec<Document>>> = vec![None; cases.len()];
    for round in 0..=a.reps {
        for j in 0..cases.len() {
            let i = (j + round) % cases.len();
            let (wall, cpu, out) = run(&cases[i].1)?;
            if round == 0 {
                outputs[i] = Some(out);
            } else {
                walls[i].push(wall);
                cpus[i].extend(cpu);
            }
        }
        if round > 0 {
            eprint!("\rbench: round {round}/{}", a.reps);
        }
    }
    eprintln!();

    let mut report = String::new();
    writeln!(report, "machine: {}", machine_facts()).ok();
    writeln!(report, "server: {}", bench.server_facts()?).ok();
    writeln!(
        report,
        "{}.{}: {} jobs; {} timed runs of each after one untimed; medians\n",
        a.target.db,
        a.collection,
        outputs[1].as_ref().map_or(0, Vec::len),
        a.reps
    )
    .ok();
    writeln!(
        report,
        "| pipeline | wall s (min-max) | server CPU s | wall vs bare | CPU vs bare \
         | wall vs bare, run by run | same output as this build's |"
    )
    .ok();
    writeln!(report, "|---|---:|---:|---:|---:|---:|---|").ok();
    let bare_wall = median(walls[0].clone());
    let bare_cpu = (!cpus[0].is_empty()).then(|| median(cpus[0].clone()));
    for (i, (label, _)) in cases.iter().enumerate() {
        let wall = median(walls[i].clone());
        let cpu = (!cpus[i].is_empty()).then(|| median(cpus[i].clone()));
        let same = match i {
            0 => "-",
            _ if outputs[i] == outputs[1] => "yes",
            _ => "NO",
        };
        // Each run against the bare pass of the same round, which ran just
        // before or after it: the median of those ratios, and their range.
        let paired: Vec<f64> = walls[i].iter().zip(&walls[0]).map(|(x, b)| x / b).collect();
        let lo = paired.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = paired.iter().cloned().fold(0.0, f64::max);
        writeln!(
            report,
            "| {label} | {wall:.2} ({:.2}-{:.2}) | {} | {} | {} | {:.2}x ({lo:.2}-{hi:.2}) \
             | {same} |",
            walls[i].iter().cloned().fold(f64::INFINITY, f64::min),
            walls[i].iter().cloned().fold(0.0, f64::max),
            seconds(cpu),
            ratio(Some(wall), Some(bare_wall)),
            ratio(cpu, bare_cpu),
            median(paired.clone()),
        )
        .ok();
    }
    print!("{report}");
    Ok(())
}
