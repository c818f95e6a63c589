//! What `dupcheck repair` costs: one large job, and many small ones.
//!
//! ```text
//! cargo build --release --bin dupcheck --example bench_repair
//! target/release/examples/bench_repair large --uri mongodb://127.0.0.1:PORT
//! target/release/examples/bench_repair many --uri mongodb://127.0.0.1:PORT
//! target/release/examples/bench_repair plan-only --results 10000 --text 2048
//! ```
//!
//! `large` inserts one job of `--results` results, a third of them
//! duplicates, each with `--text` bytes of OCR text, then times `dupcheck
//! repair --job` on it under `/usr/bin/time` (wall time, peak resident
//! memory) and checks the outcome. `many` does the same for `--jobs`
//! small jobs repaired by one `dupcheck repair --since`. `plan-only` runs
//! the in-memory part of a repair (plan, backup, predicted document) with
//! no server, for jobs too large to be stored: MongoDB refuses documents
//! over 16 MiB. Figures and how to reproduce them: docs/repair.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use chrono::Utc;
use clap::{Args, Parser, Subcommand};
use dupcheck::backup;
use dupcheck::dedupe::Policy;
use dupcheck::repair;
use mongodb::Client;

/// Benchmarks of dupcheck repair
#[derive(Parser)]
#[command(name = "bench_repair")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// One large job repaired by `dupcheck repair --job`
    Large(Shape),
    /// Many small jobs repaired by one `dupcheck repair --since`
    Many(Shape),
    /// Plan, backup and predicted document of one job, in memory only
    PlanOnly(Shape),
}

#[derive(Args, Clone)]
struct Shape {
    /// MongoDB URI (not used by plan-only)
    #[arg(long, default_value = "mongodb://127.0.0.1:27017")]
    uri: String,
    /// Database to fill (dropped first)
    #[arg(long, default_value = "dupcheck_bench_repair")]
    db: String,
    /// Jobs to create
    #[arg(long)]
    jobs: Option<usize>,
    /// Results per job, duplicates included
    #[arg(long)]
    results: Option<usize>,
    /// Bytes of OCR text per result
    #[arg(long, default_value_t = 2048)]
    text: usize,
    /// The dupcheck binary to time
    #[arg(long, default_value = "target/release/dupcheck")]
    dupcheck: PathBuf,
}

fn main() {
    let cli = Cli::parse();
    let done = match cli.scenario {
        Scenario::Large(s) => server_run(s, 1, 10_000),
        Scenario::Many(s) => server_run(s, 1_000, 30),
        Scenario::PlanOnly(s) => plan_only(s),
    };
    if let Err(e) = done {
        eprintln!("bench_repair: {e}");
        std::process::exit(2);
    }
}

/// OCR-like text of `len` bytes, different per seed.
fn text(seed: usize, len: usize) -> String {
    let words = [
        "dharma",
        "ksetre",
        "kuru",
        "samaveta",
        "yuyutsavah",
        "mamakah",
    ];
    let mut out = String::with_capacity(len + 12);
    let mut i = seed as u64 + 7;
    while out.len() < len {
        out.push_str(words[(i % 6) as usize]);
        out.push(' ');
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            >> 7;
    }
    out.truncate(len);
    out
}

/// A job of `results` results over `results * 2 / 3` files: every other
/// file recorded twice, so a third of the results are duplicates.
fn job(job_id: &str, results: usize, text_len: usize) -> Document {
    let files = (results * 2).div_ceil(3);
    let mut entries = Vec::with_capacity(results);
    let mut listed = Vec::with_capacity(files);
    for i in 0..files {
        let path = format!("/data/in/{job_id}/page{i:05}.jpg");
        listed.push(Bson::String(path.clone()));
        let copies = if i % 2 == 0 { 2 } else { 1 };
        for copy in 0..copies {
            if entries.len() == results {
                break;
            }
            entries.push(Bson::Document(doc! {
                "file": format!("page{i:05}.jpg"),
                "file_path": &path,
                "file_index": i as i32,
                "status": "success",
                "provider": "google_vision",
                "languages": ["sa", "en"],
                "text": text(i * 3 + copy, text_len),
                "confidence": 0.9,
                "words_count": (text_len / 7) as i32,
                "metadata": { "processing_time": 2.5, "worker_id": format!("w{copy}") },
                "processed_at": "2026-01-09T03:41:00.000000",
            }));
        }
    }
    let n = entries.len() as i32;
    let now = bson::DateTime::now();
    doc! {
        "_id": ObjectId::new(),
        "job_id": job_id,
        "status": "completed",
        "total_files": files as i32,
        "published_count": files as i32,
        "consumed_count": n,
        "progress": { "current": n, "total": files as i32, "percentage": 100.0, "filename": "" },
        "checkpoint": { "results": entries, "errors": [], "processed_files": listed },
        "results": { "summary": { "total_files": files as i32, "successful": n, "failed": 0 } },
        "created_at": now,
        "updated_at": now,
    }
}

fn server_run(shape: Shape, jobs: usize, results: usize) -> Result<(), String> {
    let jobs = shape.jobs.unwrap_or(jobs);
    let results = shape.results.unwrap_or(results);
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let client = rt
        .block_on(Client::with_uri_str(&shape.uri))
        .map_err(|e| e.to_string())?;
    let coll = client
        .database(&shape.db)
        .collection::<Document>("bulk_jobs");

    rt.block_on(async {
        coll.drop().await.map_err(|e| e.to_string())?;
        let mut batch = Vec::new();
        for j in 0..jobs {
            batch.push(job(&format!("bench-{j:05}"), results, shape.text));
            if batch.len() == 100 || j + 1 == jobs {
                coll.insert_many(std::mem::take(&mut batch))
                    .await
                    .map_err(|e| format!("insert: {e}"))?;
            }
        }
        Ok::<_, String>(())
    })?;
    let size = rt
        .block_on(async { coll.find_one(doc! {}).await })
        .map_err(|e| e.to_string())?
        .map(|d| bson::to_vec(&d).map(|v| v.len()).unwrap_or(0))
        .unwrap_or(0);
    println!(
        "{jobs} job(s) of {results} results ({} KiB of text each), {:.1} MiB per document",
        shape.text / 1024,
        size as f64 / 1048576.0
    );

    let backups = std::env::temp_dir().join(format!("bench-repair-{}", std::process::id()));
    let mut args: Vec<String> = ["repair", "--uri", &shape.uri, "--db", &shape.db, "--yes"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--backup-dir".into(), backups.display().to_string()]);
    if jobs == 1 {
        args.extend(["--job".into(), "bench-00000".into()]);
    } else {
        args.extend(["--since".into(), "1d".into()]);
    }
    let (wall, peak_kib, out) = timed(&shape.dupcheck, &args)?;
    let summary = out.lines().last().unwrap_or("").to_owned();
    println!(
        "dupcheck repair: {wall:.2} s wall, {:.1} MiB peak RSS",
        peak_kib as f64 / 1024.0
    );
    println!("  {summary}");

    let after = rt
        .block_on(async { coll.find_one(doc! {}).await })
        .map_err(|e| e.to_string())?
        .ok_or("no job left")?;
    let kept = after
        .get_document("checkpoint")
        .and_then(|c| c.get_array("results"))
        .map(|a| a.len())
        .unwrap_or(0);
    println!("  results kept in the first job: {kept} of {results}");
    let _ = std::fs::remove_dir_all(&backups);
    Ok(())
}

/// Runs a program under /usr/bin/time: wall seconds, peak KiB, stdout.
fn timed(program: &Path, args: &[String]) -> Result<(f64, u64, String), String> {
    let rss = std::env::temp_dir().join(format!("bench-repair-{}.rss", std::process::id()));
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .arg(program)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .map_err(|e| format!("cannot run /usr/bin/time (apt-get install time): {e}"))?;
    let wall = started.elapsed().as_secs_f64();
    if !matches!(out.status.code(), Some(0) | Some(1)) {
        return Err(format!(
            "{} failed ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let peak = std::fs::read_to_string(&rss)
        .ok()
        .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()))
        .ok_or("no peak memory from /usr/bin/time")?;
    let _ = std::fs::remove_file(&rss);
    Ok((
        wall,
        peak,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

fn plan_only(shape: Shape) -> Result<(), String> {
    let results = shape.results.unwrap_or(10_000);
    let mut doc = job("bench-plan", results, shape.text);
    let size = bson::to_vec(&doc).map_err(|e| e.to_string())?.len();

    let started = Instant::now();
    let plan = repair::plan(&doc, Policy::default()).map_err(|e| e.message)?;
    let planned = started.elapsed();
    let _guard = repair::unchanged(&doc);
    let _update = plan.update();
    let dir = std::env::temp_dir().join(format!("bench-plan-{}", std::process::id()));
    let path = backup::new_path(&dir, &doc, Utc::now());
    let meta = backup::Meta {
        db: "bench".into(),
        collection: "bulk_jobs".into(),
        reason: "repair",
        detail: String::new(),
        taken_at: Utc::now(),
    };
    backup::write(&path, &mut doc, &meta, |d| plan.apply(d)).map_err(|e| e.message)?;
    let total = started.elapsed();
    let backup_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "{results} results, {:.1} MiB document: plan {:.0} ms, plan + guard + backup \
         (fsync) + predicted document {:.0} ms, backup {:.1} MiB, {} entries removed",
        size as f64 / 1048576.0,
        planned.as_secs_f64() * 1000.0,
        total.as_secs_f64() * 1000.0,
        backup_bytes as f64 / 1048576.0,
        plan.removed_count()
    );
    Ok(())
}
