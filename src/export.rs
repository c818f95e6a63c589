//! Clean reports for one job, in the layout the OCR system's result
//! aggregator writes, so that whatever reads its reports reads these.
//!
//! The reports are rendered from the deduplicated view of the job
//! ([`crate::dedupe`]): one result or error per file, files told apart by
//! their normalised path, never by base name. The aggregator's own
//! formatting is matched where a consumer could tell the difference:
//! Python's float and boolean spellings, its rounding, text lengths in
//! characters rather than bytes, CRLF line ends and minimal quoting in the
//! CSV, two-space indented JSON with no final newline.
//!
//! Everything is streamed to files in the job's folder under temporary
//! names and renamed into place only once every requested file is whole,
//! so a failed export leaves the previous reports as they were. Only the
//! job itself is held in memory; the ZIP is filled from the files on disk.
//!
//! With `--update-job` the clean counts, statistics and report paths also
//! go into the job's final summary (`results`), as repair writes: after a
//! backup ([`crate::backup`]), by one update that applies only while the
//! job is as it was read ([`crate::repair::unchanged`]).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::future::IntoFuture;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use bson::{doc, Bson, Document};
use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc};
use futures_util::StreamExt;
use unicode_normalization::UnicodeNormalization;

use crate::backup;
use crate::connect::Jobs;
use crate::dedupe::{self, Policy};
use crate::error::{Error, ErrorKind, Result};
use crate::{paths, repair};

/// The files an export can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// `<job_id>_results.json`
    Json,
    /// `<job_id>_results.csv`
    Csv,
    /// `<job_id>_results.txt`
    Txt,
    /// `individual_files/`, one JSON file per result.
    Individual,
    /// `<job_id>_bulk_ocr_results.zip`, always with all of the above.
    Zip,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Json,
        Format::Csv,
        Format::Txt,
        Format::Individual,
        Format::Zip,
    ];

    /// The name used by `--format` and in `results.report_files`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Txt => "txt",
            Format::Individual => "individual",
            Format::Zip => "zip",
        }
    }

    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The file (or folder) name inside the job's folder.
    pub fn file_name(self, job_id: &str) -> String {
        match self {
            Format::Json => format!("{job_id}_results.json"),
            Format::Csv => format!("{job_id}_results.csv"),
            Format::Txt => format!("{job_id}_results.txt"),
            Format::Individual => INDIVIDUAL_DIR.to_owned(),
            Format::Zip => format!("{job_id}_bulk_ocr_results.zip"),
        }
    }
}

/// The folder of per-result files, in the job's folder and in the ZIP.
pub const INDIVIDUAL_DIR: &str = "individual_files";

/// The CSV header, in the aggregator's column order.
pub const CSV_COLUMNS: [&str; 19] = [
    "File",
    "File Path",
    "Status",
    "Provider",
    "Languages",
    "Confidence",
    "Detected Language",
    "Handwriting",
    "Character Count",
    "Blocks Count",
    "Words Count",
    "Pages Processed",
    "Processed At",
    "File Size",
    "File Extension",
    "Processing Time",
    "Worker ID",
    "OCR Text",
    "Error",
];

/// How and where to export.
#[derive(Debug, Clone)]
pub struct Options {
    /// The folder that holds one folder per job (`bulk_results`).
    pub out: PathBuf,
    /// What to write; the order does not matter.
    pub formats: Vec<Format>,
    /// Replace reports that already exist.
    pub force: bool,
    /// The time the reports say they were generated, in UTC.
    pub generated_at: NaiveDateTime,
    /// Which of a file's several results the reports keep.
    pub policy: Policy,
}

/// The statistics the aggregator puts in `summary`, over kept results.
#[derive(Debug, Clone, PartialEq)]
pub struct Statistics {
    /// Characters (Unicode code points) of all `text`.
    pub total_characters: u64,
    /// Rounded to two places; `None` when there are no results, for which
    /// the aggregator writes integer zeros.
    pub average_confidence: Option<f64>,
    pub average_words: Option<f64>,
    pub average_blocks: Option<f64>,
    /// Distinct non-empty `detected_language`s, sorted.
    pub languages: Vec<String>,
}

impl Statistics {
    pub fn of(results: &[Document]) -> Statistics {
        let mut languages: Vec<String> = results
            .iter()
            .filter_map(|r| r.get_str("detected_language").ok())
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        languages.sort();
        languages.dedup();

        let average = |field: &str| -> Option<f64> {
            if results.is_empty() {
                return None;
            }
            let sum: f64 = results.iter().map(|r| number(r.get(field))).sum();
            Some(round2(sum / results.len() as f64))
        };

        Statistics {
            total_characters: results.iter().map(|r| chars(r.get("text"))).sum(),
            average_confidence: average("confidence"),
            average_words: average("words_count"),
            average_blocks: average("blocks_count"),
            languages,
        }
    }

    /// As stored in the JSON report and in `results.summary.statistics`.
    pub fn to_document(&self) -> Document {
        let avg = |x: Option<f64>| x.map(Bson::Double).unwrap_or(Bson::Int32(0));
        doc! {
            "total_characters": int(self.total_characters),
            "average_confidence": avg(self.average_confidence),
            "average_words": avg(self.average_words),
            "average_blocks": avg(self.average_blocks),
            "languages": self.languages.clone(),
        }
    }
}

/// What a job's reports are made of: its clean results and errors.
#[derive(Debug, Clone)]
pub struct Report {
    pub job_id: String,
    pub results: Vec<Document>,
    pub errors: Vec<Document>,
    pub statistics: Statistics,
    /// The name of each result's file in `individual_files/`, in order.
    pub individual_names: Vec<String>,
    /// Entries of `checkpoint.results` and `checkpoint.errors` left out.
    pub dropped_results: usize,
    pub dropped_errors: usize,
}

impl Report {
    /// The report of a job document, deduplicated under `policy`.
    pub fn of(job: &Document, policy: Policy) -> Result<Report> {
        Report::from_job(job.clone(), policy)
    }

    /// [`Report::of`], consuming the document: the kept results and errors
    /// are moved out of it, not copied, so a job near the 16 MiB limit is
    /// held once.
    pub fn from_job(mut job: Document, policy: Policy) -> Result<Report> {
        let job_id = job
            .get_str("job_id")
            .map_err(|_| Error::input("the job has no string job_id"))?
            .to_owned();
        check_job_id(&job_id)?;

        // Dedupe sees light copies: what it decides by, not the OCR text.
        let mut full = Vec::new();
        for field in ["results", "errors"] {
            let entries = match job
                .get_document_mut("checkpoint")
                .ok()
                .and_then(|c| c.get_mut(field))
            {
                Some(Bson::Array(items)) => items,
                _ => {
                    full.push(Vec::new());
                    continue;
                }
            };
            let light = entries.iter().map(|e| light(e, policy)).collect();
            full.push(std::mem::replace(entries, light));
        }
        let clean = dedupe::clean(&job, policy)?;
        drop(job);

        let mut kept = full
            .into_iter()
            .zip(["checkpoint.results", "checkpoint.errors"])
            .map(|(entries, field)| {
                let dropped: HashSet<usize> = clean
                    .dropped
                    .iter()
                    .filter(|d| d.field == field)
                    .map(|d| d.index)
                    .collect();
                let count = dropped.len();
                let kept: Vec<Document> = entries
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !dropped.contains(i))
                    .filter_map(|(_, e)| match e {
                        Bson::Document(d) => Some(d),
                        _ => None,
                    })
                    .collect();
                (kept, count)
            });
        let (results, dropped_results) = kept.next().unwrap_or_default();
        let (errors, dropped_errors) = kept.next().unwrap_or_default();

        Ok(Report {
            job_id,
            statistics: Statistics::of(&results),
            individual_names: individual_names(&results),
            results,
            errors,
            dropped_results,
            dropped_errors,
        })
    }
}

/// The part of a result or error that [`dedupe`] decides by: its path,
/// and for ranking, status, confidence and (under `--keep best`) text.
fn light(entry: &Bson, policy: Policy) -> Bson {
    let Bson::Document(d) = entry else {
        return entry.clone();
    };
    let mut fields = vec!["file_path", "status", "confidence"];
    if policy.keep == dedupe::Keep::Best {
        fields.push("text");
    }
    Bson::Document(
        fields
            .into_iter()
            .filter_map(|f| d.get(f).map(|v| (f.to_owned(), v.clone())))
            .collect(),
    )
}

/// Refuses a job id that cannot safely name a folder and files.
pub fn check_job_id(job_id: &str) -> Result<()> {
    let bad = job_id.is_empty()
        || job_id.len() > 200
        || job_id == "."
        || job_id == ".."
        || job_id.starts_with('.')
        || job_id
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        return Err(Error::usage(format!(
            "job id {job_id:?} cannot name a report folder: it must be a plain name \
             (no slashes, no leading dot, at most 200 bytes)"
        )));
    }
    Ok(())
}

/// The names of the per-result files: the aggregator's name (the result's
/// `file` without its extension, plus `.json`), and for a name already
/// taken, compared without regard to case or Unicode form, `~2`, `~3`, ...
/// before `.json`, in result order. So `vol1/page-001.tif` and
/// `vol2/page-001.tif` become `page-001.json` and `page-001~2.json`.
pub fn individual_names(results: &[Document]) -> Vec<String> {
    let mut taken: HashSet<String> = HashSet::new();
    let fold = |name: &str| name.nfc().collect::<String>().to_lowercase();
    results
        .iter()
        .map(|result| {
            let stem = stem_of(result);
            let mut name = format!("{stem}.json");
            let mut n = 1;
            while !taken.insert(fold(&name)) {
                n += 1;
                name = format!("{stem}~{n}.json");
            }
            name
        })
        .collect()
}

/// A result's file name without extension, safe as a single path segment.
fn stem_of(result: &Document) -> String {
    let raw = match result.get_str("file") {
        Ok(name) if !name.is_empty() => name,
        _ => match result.get_str("file_path") {
            Ok(path) if !paths::base_name(path).is_empty() => paths::base_name(path),
            _ => "unknown",
        },
    };
    let safe: String = raw
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();

    // As Python's os.path.splitext: leading dots start no extension.
    let lead = safe.len() - safe.trim_start_matches('.').len();
    let stem = match safe[lead..].rfind('.') {
        Some(at) => &safe[..lead + at],
        None => &safe[..],
    };
    let mut end = stem.len().min(200);
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    match &stem[..end] {
        "" => "unknown".to_owned(),
        s => s.to_owned(),
    }
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The job's folder.
    pub dir: PathBuf,
    /// Each file (or folder, for individual files) written, by format.
    pub files: Vec<(Format, PathBuf)>,
}

impl Written {
    pub fn path(&self, format: Format) -> Option<&Path> {
        self.files
            .iter()
            .find(|(f, _)| *f == format)
            .map(|(_, p)| p.as_path())
    }
}

/// Writes the requested reports into `<out>/<job_id>/`.
pub fn write(report: &Report, options: &Options) -> Result<Written> {
    check_job_id(&report.job_id)?;
    let wanted: Vec<Format> = Format::ALL
        .into_iter()
        .filter(|f| options.formats.contains(f))
        .collect();
    if wanted.is_empty() {
        return Err(Error::usage("no report format asked for"));
    }

    let dir = options.out.join(&report.job_id);
    // The folders this export creates, deepest first: removed again if it
    // fails, so a failed export of a new job leaves no empty folder.
    let created: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && fs::symlink_metadata(d).is_err())
        .map(Path::to_path_buf)
        .collect();
    fs::create_dir_all(&dir)
        .map_err(|e| Error::io(&format!("cannot create {}", dir.display()), e))?;
    let written = write_into(&dir, report, options, &wanted);
    if written.is_err() {
        for folder in &created {
            // Only an empty folder goes: another export may have put
            // something in it meanwhile.
            if fs::remove_dir(folder).is_err() {
                break;
            }
        }
    }
    written
}

/// [`write`] once the job's folder is there.
fn write_into(
    dir: &Path,
    report: &Report,
    options: &Options,
    wanted: &[Format],
) -> Result<Written> {
    let target = |f: Format| dir.join(f.file_name(&report.job_id));

    if !options.force {
        let existing: Vec<PathBuf> = wanted
            .iter()
            .map(|f| target(*f))
            .filter(|p| fs::symlink_metadata(p).is_ok())
            .collect();
        if let Some(first) = existing.first() {
            let more = match existing.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            return Err(Error::usage(format!(
                "{} already exists{more}; use --force to replace",
                first.display()
            )));
        }
    }

    let mut stage = Staging::new(dir);
    let zip = wanted.contains(&Format::Zip);
    // The ZIP holds all three reports and the individual files, whatever
    // else was asked for, as the aggregator's does.
    let needed = |f: Format| zip || wanted.contains(&f);
    let mut staged: Vec<(Format, PathBuf)> = Vec::new();

    for format in [Format::Json, Format::Csv, Format::Txt] {
        if !needed(format) {
            continue;
        }
        let tmp = stage.file(&format.file_name(&report.job_id));
        write_file(&tmp, |out| match format {
            Format::Json => write_json_report(out, report, options.generated_at),
            Format::Csv => write_csv_report(out, report),
            _ => write_txt_report(out, report, options.generated_at),
        })?;
        staged.push((format, tmp));
    }
    if needed(Format::Individual) {
        let tmp = stage.file(INDIVIDUAL_DIR);
        fs::create_dir(&tmp)
            .map_err(|e| Error::io(&format!("cannot create {}", tmp.display()), e))?;
        for (result, name) in report.results.iter().zip(&report.individual_names) {
            let path = tmp.join(name);
            let mut out = BufWriter::new(
                File::create(&path)
                    .map_err(|e| Error::io(&format!("cannot write {}", path.display()), e))?,
            );
            write_document(&mut out, result, 0)
                .and_then(|()| out.flush())
                .map_err(|e| Error::io(&format!("cannot write {}", path.display()), e))?;
        }
        staged.push((Format::Individual, tmp));
    }
    if zip {
        let tmp = stage.file(&Format::Zip.file_name(&report.job_id));
        write_zip(&tmp, report, &staged, options.generated_at)?;
        staged.push((Format::Zip, tmp));
    }

    let mut files = Vec::new();
    for (format, tmp) in staged {
        if wanted.contains(&format) {
            let path = target(format);
            stage.commit(&tmp, &path)?;
            files.push((format, path));
        }
    }
    Ok(Written {
        dir: dir.to_path_buf(),
        files,
    })
}

/// Temporary files and folders of one export, removed unless renamed
/// into place.
struct Staging {
    dir: PathBuf,
    temps: Vec<PathBuf>,
}

impl Staging {
    fn new(dir: &Path) -> Staging {
        Staging {
            dir: dir.to_owned(),
            temps: Vec::new(),
        }
    }

    /// A temporary name for `name`, hidden, and distinct per process so
    /// that two exports of one job cannot write into each other's files.
    fn file(&mut self, name: &str) -> PathBuf {
        let path = self
            .dir
            .join(format!(".{name}.{}.dupcheck-tmp", std::process::id()));
        remove(&path);
        self.temps.push(path.clone());
        path
    }

    fn commit(&mut self, tmp: &Path, path: &Path) -> Result<()> {
        let failed = |e| Error::io(&format!("cannot move {} into place", path.display()), e);
        if tmp.is_dir() {
            // A folder cannot replace a folder in one rename: move the old
            // one aside first, and back if the new one cannot go in.
            let old = self.file(&format!(
                "{}.old",
                path.file_name().unwrap_or_default().to_string_lossy()
            ));
            let had_old = fs::symlink_metadata(path).is_ok();
            if had_old {
                fs::rename(path, &old).map_err(failed)?;
            }
            if let Err(e) = fs::rename(tmp, path) {
                if had_old {
                    let _ = fs::rename(&old, path);
                }
                return Err(failed(e));
            }
            remove(&old);
            Ok(())
        } else {
            if path.is_dir() {
                fs::remove_dir_all(path).map_err(failed)?;
            }
            fs::rename(tmp, path).map_err(failed)
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        for path in &self.temps {
            remove(path);
        }
    }
}

fn remove(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// Creates a file that must not exist yet: a temporary name is never
/// followed through a link someone else put there.
fn create_new(path: &Path) -> io::Result<File> {
    File::options().write(true).create_new(true).open(path)
}

fn write_file(path: &Path, body: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<()> {
    let failed = |e| Error::io(&format!("cannot write {}", path.display()), e);
    let file = create_new(path).map_err(failed)?;
    let mut out = BufWriter::with_capacity(1 << 16, file);
    body(&mut out).map_err(failed)?;
    let file = out.into_inner().map_err(|e| failed(e.into_error()))?;
    file.sync_all().map_err(failed)
}

/// `<job_id>_results.json`: metadata, statistics, results, errors.
fn write_json_report(
    out: &mut dyn Write,
    report: &Report,
    generated_at: NaiveDateTime,
) -> io::Result<()> {
    let metadata = doc! {
        "job_id": &report.job_id,
        "generated_at": python_time(generated_at),
        "total_files": int((report.results.len() + report.errors.len()) as u64),
        "successful": int(report.results.len() as u64),
        "failed": int(report.errors.len() as u64),
    };
    out.write_all(b"{\n  \"metadata\": ")?;
    write_document(out, &metadata, 1)?;
    out.write_all(b",\n  \"summary\": ")?;
    write_document(out, &report.statistics.to_document(), 1)?;
    for (name, list) in [("results", &report.results), ("errors", &report.errors)] {
        write!(out, ",\n  \"{name}\": ")?;
        if list.is_empty() {
            out.write_all(b"[]")?;
            continue;
        }
        out.write_all(b"[")?;
        for (i, item) in list.iter().enumerate() {
            out.write_all(if i == 0 { b"\n    " } else { b",\n    " })?;
            write_document(out, item, 2)?;
        }
        out.write_all(b"\n  ]")?;
    }
    out.write_all(b"\n}")
}

/// `<job_id>_results.csv`: one row per result, then one per error.
fn write_csv_report(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out);
    w.write_record(CSV_COLUMNS)?;
    for r in &report.results {
        let info = r.get_document("file_info").ok();
        let meta = r.get_document("metadata").ok();
        let languages = match r.get("languages") {
            Some(Bson::Array(items)) => items
                .iter()
                .map(|l| cell(Some(l), ""))
                .collect::<Vec<_>>()
                .join(","),
            None => String::new(),
            other => cell(other, ""),
        };
        w.write_record([
            cell(r.get("file"), ""),
            cell(r.get("file_path"), ""),
            "Success".to_owned(),
            cell(r.get("provider"), ""),
            languages,
            cell(r.get("confidence"), "0"),
            cell(r.get("detected_language"), ""),
            cell(r.get("handwriting"), "False"),
            chars(r.get("text")).to_string(),
            cell(r.get("blocks_count"), "0"),
            cell(r.get("words_count"), "0"),
            cell(r.get("pages_processed"), "1"),
            cell(r.get("processed_at"), ""),
            cell(info.and_then(|i| i.get("size")), ""),
            cell(info.and_then(|i| i.get("extension")), ""),
            cell(meta.and_then(|m| m.get("processing_time")), ""),
            cell(meta.and_then(|m| m.get("worker_id")), ""),
            cell(r.get("text"), ""),
            String::new(),
        ])?;
    }
    for e in &report.errors {
        let mut row = vec![String::new(); CSV_COLUMNS.len()];
        row[0] = cell(e.get("file"), "");
        row[1] = cell(e.get("file_path"), "");
        row[2] = "Error".to_owned();
        row[12] = cell(e.get("processed_at"), "");
        row[18] = cell(e.get("error"), "");
        w.write_record(&row)?;
    }
    w.flush()
}

/// `<job_id>_results.txt`: header, summary, statistics, each result with
/// its text, then the errors.
fn write_txt_report(
    out: &mut dyn Write,
    report: &Report,
    generated_at: NaiveDateTime,
) -> io::Result<()> {
    let heavy = "=".repeat(80);
    let rule = "-".repeat(80);
    let (ok, failed) = (report.results.len(), report.errors.len());
    write!(
        out,
        "{heavy}\nBULK OCR PROCESSING REPORT\n{heavy}\n\n\
         Job ID: {}\nGenerated: {}\nTotal Files: {}\nSuccessful: {ok}\nFailed: {failed}\n\n",
        report.job_id,
        python_time(generated_at),
        ok + failed,
    )?;

    let s = &report.statistics;
    let avg = |x: Option<f64>| format!("{:.2}", x.unwrap_or(0.0));
    write!(
        out,
        "{rule}\nSTATISTICS\n{rule}\nTotal Characters: {}\nAverage Confidence: {}\n\
         Average Words per File: {}\nAverage Blocks per File: {}\n",
        grouped(s.total_characters),
        avg(s.average_confidence),
        avg(s.average_words),
        avg(s.average_blocks),
    )?;
    if !s.languages.is_empty() {
        writeln!(out, "Languages Detected: {}", s.languages.join(", "))?;
    }
    out.write_all(b"\n")?;

    if !report.results.is_empty() {
        write!(out, "{rule}\nSUCCESSFUL RESULTS\n{rule}\n\n")?;
        for (i, r) in report.results.iter().enumerate() {
            let text = r.get_str("text").unwrap_or("");
            write!(
                out,
                "[{}] {}\nPath: {}\nProvider: {}\nConfidence: {}\nText Length: {} characters\n\
                 Extracted Text:\n{text}\n\n{}\n\n",
                i + 1,
                cell(r.get("file"), "Unknown"),
                cell(r.get("file_path"), ""),
                cell(r.get("provider"), ""),
                two_places(r.get("confidence")),
                chars(r.get("text")),
                "-".repeat(40),
            )?;
        }
    }

    if !report.errors.is_empty() {
        write!(out, "{rule}\nERRORS\n{rule}\n\n")?;
        for (i, e) in report.errors.iter().enumerate() {
            write!(
                out,
                "[{}] {}\nPath: {}\nError: {}\n\n",
                i + 1,
                cell(e.get("file"), "Unknown"),
                cell(e.get("file_path"), ""),
                cell(e.get("error"), ""),
            )?;
        }
    }
    Ok(())
}

fn write_zip(
    path: &Path,
    report: &Report,
    staged: &[(Format, PathBuf)],
    generated_at: NaiveDateTime,
) -> Result<()> {
    use zip::write::SimpleFileOptions;

    let failed_io = |e: io::Error| Error::io(&format!("cannot write {}", path.display()), e);
    let failed_zip = |e: zip::result::ZipError| {
        Error::new(
            ErrorKind::Io,
            format!("cannot write {}: {e}", path.display()),
        )
    };
    let file = create_new(path).map_err(failed_io)?;
    let mut zip = zip::ZipWriter::new(BufWriter::with_capacity(1 << 16, file));
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644)
        .last_modified_time(zip_time(generated_at));

    let mut add = |name: String, from: &Path| -> Result<()> {
        zip.start_file(name, options).map_err(failed_zip)?;
        let mut source = File::open(from)
            .map_err(|e| Error::io(&format!("cannot read {}", from.display()), e))?;
        io::copy(&mut source, &mut zip).map_err(failed_io)?;
        Ok(())
    };
    for (format, tmp) in staged {
        match format {
            Format::Json | Format::Csv | Format::Txt => {
                add(format.file_name(&report.job_id), tmp)?;
            }
            Format::Individual => {
                for name in &report.individual_names {
                    add(format!("{INDIVIDUAL_DIR}/{name}"), &tmp.join(name))?;
                }
            }
            Format::Zip => {}
        }
    }
    let out = zip.finish().map_err(failed_zip)?;
    let file = out.into_inner().map_err(|e| failed_io(e.into_error()))?;
    file.sync_all().map_err(failed_io)
}

fn zip_time(t: NaiveDateTime) -> zip::DateTime {
    let clamp = |v: u32, hi: u32| v.min(hi) as u8;
    let year = t.year().clamp(1980, 2107) as u16;
    zip::DateTime::from_date_and_time(
        year,
        clamp(t.month(), 12),
        clamp(t.day(), 31),
        clamp(t.hour(), 23),
        clamp(t.minute(), 59),
        clamp(t.second(), 58),
    )
    .unwrap_or_default()
}

/// A time as Python's `datetime.isoformat()` writes a naive one:
/// microseconds only when there are some.
pub fn python_time(t: NaiveDateTime) -> String {
    if t.and_utc().timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

/// Reads `--generated-at`: an RFC 3339 time, or a naive ISO time taken as
/// UTC.
pub fn parse_generated_at(spec: &str) -> Result<NaiveDateTime> {
    if let Ok(t) = DateTime::parse_from_rfc3339(spec) {
        return Ok(t.with_timezone(&Utc).naive_utc());
    }
    for form in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(spec, form) {
            return Ok(t);
        }
    }
    Err(Error::usage(format!(
        "generated-at {spec:?}: expected an RFC 3339 time such as 2026-01-09T04:56:00Z"
    )))
}

/// Writes a value as Python's `json.dump(..., indent=2, ensure_ascii=False)`
/// does, keeping the document's field order. Values JSON has no type for
/// (dates, ids, binary) are written as relaxed Extended JSON; a NaN or an
/// infinity, which JSON cannot hold, as `null`.
pub fn write_json(out: &mut dyn Write, value: &Bson, depth: usize) -> io::Result<()> {
    match value {
        Bson::Document(d) => write_document(out, d, depth),
        Bson::Array(a) if a.is_empty() => out.write_all(b"[]"),
        Bson::Array(a) => {
            out.write_all(b"[")?;
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                indent(out, depth + 1)?;
                write_json(out, item, depth + 1)?;
            }
            indent(out, depth)?;
            out.write_all(b"]")
        }
        Bson::String(s) => json_string(out, s),
        Bson::Double(x) if x.is_finite() => out.write_all(python_float(*x).as_bytes()),
        Bson::Double(_) | Bson::Null | Bson::Undefined => out.write_all(b"null"),
        Bson::Int32(n) => write!(out, "{n}"),
        Bson::Int64(n) => write!(out, "{n}"),
        Bson::Boolean(b) => write!(out, "{b}"),
        other => write_json(out, &plain(other.clone().into_relaxed_extjson()), depth),
    }
}

/// A JSON value as BSON, read literally: `{"$date": ...}` stays a document.
fn plain(value: serde_json::Value) -> Bson {
    use serde_json::Value;
    match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Bson::Int64(i),
            None => Bson::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Bson::String(s),
        Value::Array(items) => Bson::Array(items.into_iter().map(plain).collect()),
        Value::Object(map) => Bson::Document(map.into_iter().map(|(k, v)| (k, plain(v))).collect()),
    }
}

/// [`write_json`] for a document, without copying it into a [`Bson`].
pub fn write_document(out: &mut dyn Write, d: &Document, depth: usize) -> io::Result<()> {
    if d.is_empty() {
        return out.write_all(b"{}");
    }
    out.write_all(b"{")?;
    for (i, (key, item)) in d.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        indent(out, depth + 1)?;
        json_string(out, key)?;
        out.write_all(b": ")?;
        write_json(out, item, depth + 1)?;
    }
    indent(out, depth)?;
    out.write_all(b"}")
}

fn indent(out: &mut dyn Write, depth: usize) -> io::Result<()> {
    out.write_all(b"\n")?;
    for _ in 0..depth {
        out.write_all(b"  ")?;
    }
    Ok(())
}

fn json_string(out: &mut dyn Write, s: &str) -> io::Result<()> {
    serde_json::to_writer(&mut *out, s).map_err(io::Error::other)
}

/// A float as Python's `repr` spells it: the shortest digits that read
/// back the same, positional from 1e-4 up to 1e16, and always with a
/// decimal point or an exponent.
pub fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };

    if (-4..16).contains(&exp) {
        let mut text = String::from(sign);
        if exp < 0 {
            text.push_str("0.");
            text.push_str(&"0".repeat((-exp - 1) as usize));
            text.push_str(&digits);
        } else {
            let whole = exp as usize + 1;
            if digits.len() > whole {
                let _ = write!(text, "{}.{}", &digits[..whole], &digits[whole..]);
            } else {
                let _ = write!(text, "{digits}{}.0", "0".repeat(whole - digits.len()));
            }
        }
        text
    } else {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{dot}{rest}e{esign}{:02}", exp.abs())
    }
}

/// A value as Python's `str()` would put it in a CSV cell; `default` when
/// the field is missing, empty for `None`.
fn cell(value: Option<&Bson>, default: &str) -> String {
    match value {
        None => default.to_owned(),
        Some(Bson::Null) | Some(Bson::Undefined) => String::new(),
        Some(Bson::String(s)) => s.clone(),
        Some(Bson::Boolean(true)) => "True".to_owned(),
        Some(Bson::Boolean(false)) => "False".to_owned(),
        Some(Bson::Int32(n)) => n.to_string(),
        Some(Bson::Int64(n)) => n.to_string(),
        Some(Bson::Double(x)) => python_float(*x),
        Some(other) => other.clone().into_relaxed_extjson().to_string(),
    }
}

/// A confidence with two decimals, as the TXT report shows it.
fn two_places(value: Option<&Bson>) -> String {
    match value {
        Some(Bson::Double(x)) if x.is_finite() => format!("{x:.2}"),
        Some(Bson::Int32(_)) | Some(Bson::Int64(_)) => format!("{:.2}", number(value)),
        None | Some(Bson::Null) => "0.00".to_owned(),
        other => cell(other, ""),
    }
}

/// A number for statistics; anything else counts as zero, as a missing
/// field does for the aggregator.
fn number(value: Option<&Bson>) -> f64 {
    match value {
        Some(Bson::Double(x)) if x.is_finite() => *x,
        Some(Bson::Int32(n)) => f64::from(*n),
        Some(Bson::Int64(n)) => *n as f64,
        _ => 0.0,
    }
}

/// Length in characters, as Python's `len` counts a string.
fn chars(value: Option<&Bson>) -> u64 {
    match value {
        Some(Bson::String(s)) => s.chars().count() as u64,
        _ => 0,
    }
}

/// Rounds to two places as Python's `round(x, 2)` does: on the exact
/// binary value, ties to even.
fn round2(x: f64) -> f64 {
    format!("{x:.2}").parse().unwrap_or(x)
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count as BSON: int32 when it fits, as Python's driver stores it.
fn int(n: u64) -> Bson {
    match i32::try_from(n) {
        Ok(small) => Bson::Int32(small),
        Err(_) => Bson::Int64(n.min(i64::MAX as u64) as i64),
    }
}

/// Whether a job has the final summary `--update-job` rewrites: the
/// aggregator writes `results.summary` when it finishes a job.
pub fn has_summary(job: &Document) -> bool {
    job.get_document("results")
        .and_then(|r| r.get_document("summary"))
        .is_ok()
}

/// The fields `--update-job` sets in the job's `results`, as `(path,
/// value)` in the order the server applies them (MongoDB 5.0 and later
/// apply a `$set`'s fields in lexicographic order of their names, which is
/// the order new fields are appended in). Counts keep the numeric type
/// they had; report paths are absolute, as the aggregator stores them, and
/// formats not written keep their old paths. The UI's result previews are
/// rebuilt from the clean results only where the job has them.
pub fn summary_update(
    job: &Document,
    report: &Report,
    written: &Written,
) -> Result<Vec<(String, Bson)>> {
    let no_summary = || Error::input(format!("job {} has no final summary", report.job_id));
    let results = job.get_document("results").map_err(|_| no_summary())?;
    let summary = results.get_document("summary").map_err(|_| no_summary())?;
    let ok = report.results.len() as u64;
    let mut set: Vec<(String, Bson)> = vec![
        (
            "results.summary.successful".into(),
            count_like(summary.get("successful"), ok),
        ),
        (
            "results.summary.failed".into(),
            count_like(summary.get("failed"), report.errors.len() as u64),
        ),
        (
            "results.summary.statistics".into(),
            Bson::Document(report.statistics.to_document()),
        ),
    ];

    let mut files = Document::new();
    for (format, path) in &written.files {
        if *format == Format::Individual {
            continue;
        }
        let full = fs::canonicalize(path)
            .map_err(|e| Error::io(&format!("cannot resolve {}", path.display()), e))?;
        let full = full.to_string_lossy().into_owned();
        if *format == Format::Zip {
            set.push(("results.zip_path".into(), full.clone().into()));
        }
        files.insert(format.name(), full);
    }
    match results.get("report_files") {
        Some(Bson::Document(_)) => {
            for (name, path) in files {
                set.push((format!("results.report_files.{name}"), path));
            }
        }
        _ if files.is_empty() => {}
        _ => set.push(("results.report_files".into(), Bson::Document(files))),
    }

    if let Ok(preview) = results.get_document("results_preview") {
        set.push((
            "results.results_preview.total_results".into(),
            count_like(preview.get("total_results"), ok),
        ));
        if preview.contains_key("successful_samples") {
            let samples: Vec<Bson> = report.results.iter().map(success_sample).collect();
            set.push((
                "results.results_preview.successful_samples".into(),
                samples.into(),
            ));
        }
        if preview.contains_key("error_samples") {
            let samples: Vec<Bson> = report.errors.iter().map(error_sample).collect();
            set.push((
                "results.results_preview.error_samples".into(),
                samples.into(),
            ));
        }
    }

    set.sort_by(|(a, _), (b, _)| a.split('.').cmp(b.split('.')));
    Ok(set)
}

/// The preview of one result, with the fields and defaults the UI reads.
fn success_sample(r: &Document) -> Bson {
    let or = |field: &str, default: Bson| r.get(field).cloned().unwrap_or(default);
    let text = or("text", "".into());
    Bson::Document(doc! {
        "file": or("file", "unknown".into()),
        "file_path": or("file_path", "".into()),
        "confidence": or("confidence", Bson::Int32(0)),
        "text_length": int(chars(Some(&text))),
        "text": text,
        "language": or("detected_language", "unknown".into()),
        "provider": or("provider", "unknown".into()),
    })
}

fn error_sample(e: &Document) -> Bson {
    let or = |field: &str, default: &str| e.get(field).cloned().unwrap_or(default.into());
    Bson::Document(doc! {
        "file": or("file", "unknown"),
        "error": or("error", "Unknown error"),
    })
}

/// `n` in the numeric type `old` has, so a repaired counter reads as before.
fn count_like(old: Option<&Bson>, n: u64) -> Bson {
    match old {
        Some(Bson::Int64(_)) => Bson::Int64(n.min(i64::MAX as u64) as i64),
        Some(Bson::Double(_)) => Bson::Double(n as f64),
        _ => int(n),
    }
}

/// Applies [`summary_update`]'s fields to the document read, as the server
/// will: an existing field keeps its place, a new one goes last.
pub fn apply_update(job: &mut Document, set: &[(String, Bson)]) {
    for (path, value) in set {
        let mut parts: Vec<&str> = path.split('.').collect();
        let Some(last) = parts.pop() else { continue };
        let mut at: &mut Document = job;
        for part in parts {
            if !matches!(at.get(part), Some(Bson::Document(_))) {
                at.insert(part, Document::new());
            }
            at = match at.get_document_mut(part) {
                Ok(inner) => inner,
                Err(_) => return,
            };
        }
        at.insert(last, value.clone());
    }
}

/// What exporting one job did.
#[derive(Debug)]
pub struct Exported {
    pub report_summary: Counts,
    pub written: Written,
    /// With `--update-job`: where the backup went, or why the job's
    /// summary was not written.
    pub update: Option<Result<PathBuf>>,
}

/// The numbers of an export, for the line a person reads.
#[derive(Debug, Clone)]
pub struct Counts {
    pub job_id: String,
    pub results: usize,
    pub errors: usize,
    pub dropped_results: usize,
    pub dropped_errors: usize,
}

impl Report {
    fn counts(&self) -> Counts {
        Counts {
            job_id: self.job_id.clone(),
            results: self.results.len(),
            errors: self.errors.len(),
            dropped_results: self.dropped_results,
            dropped_errors: self.dropped_errors,
        }
    }
}

/// Exports a job document read from a dump.
pub fn export_document(job: Document, options: &Options) -> Result<Exported> {
    let report = Report::from_job(job, options.policy)?;
    let written = write(&report, options)?;
    Ok(Exported {
        report_summary: report.counts(),
        written,
        update: None,
    })
}

/// Where `--update-job` puts its backups, and that it was asked for.
#[derive(Debug, Clone)]
pub struct UpdateJob {
    pub backup_dir: PathBuf,
}

/// Exports the job with this `job_id` from the server; with `update`, then
/// writes the clean summary into the job, after a backup, by one update
/// that applies only if the job is as it was read.
pub async fn export_from_server(
    jobs: &Jobs,
    job_id: &str,
    options: &Options,
    update: Option<&UpdateJob>,
) -> Result<Exported> {
    check_job_id(job_id)?;
    let job = fetch(jobs, job_id).await?;
    // The document is needed again only to update it.
    let (report, job) = match update {
        Some(u) => (Report::of(&job, options.policy)?, Some((job, u))),
        None => (Report::from_job(job, options.policy)?, None),
    };
    let written = write(&report, options)?;
    let update = match job {
        None => None,
        Some((job, u)) => Some(update_summary(jobs, job, &report, &written, u).await),
    };
    Ok(Exported {
        report_summary: report.counts(),
        written,
        update,
    })
}

/// The one job with this `job_id`.
pub async fn fetch(jobs: &Jobs, job_id: &str) -> Result<Document> {
    let (db, collection) = repair::namespace(jobs);
    let doing = "reading the job";
    let find = jobs.collection.find(doc! { "job_id": job_id }).limit(2);
    let mut cursor = jobs.answer(doing, find.into_future()).await?;
    let mut found = Vec::new();
    while let Some(doc) = jobs
        .answer(doing, async { cursor.next().await.transpose() })
        .await?
    {
        found.push(doc);
    }
    match found.len() {
        0 => Err(Error::new(
            ErrorKind::NotFound,
            format!("job {job_id} not found in {db}.{collection}"),
        )),
        1 => Ok(found.remove(0)),
        _ => Err(Error::input(format!(
            "job_id {job_id} is on more than one document in {db}.{collection}; \
             not exporting either (dupcheck index lists such job ids)"
        ))),
    }
}

/// Writes the clean summary of `report` into `job` (the document as read),
/// after backing it up in `update.backup_dir`. Fails with
/// [`ErrorKind::Conflict`] when the job changed since it was read, and
/// then keeps no backup: nothing was written.
pub async fn update_summary(
    jobs: &Jobs,
    mut job: Document,
    report: &Report,
    written: &Written,
    update: &UpdateJob,
) -> Result<PathBuf> {
    if !has_summary(&job) {
        let status = job.get_str("status").unwrap_or("no status");
        return Err(Error::input(format!(
            "the job has no final summary yet ({status}); the aggregator writes one \
             when it finishes the job"
        )));
    }
    let set = summary_update(&job, report, written)?;
    let guard = repair::unchanged(&job);
    let (db, collection) = repair::namespace(jobs);
    let path = backup::new_path(&update.backup_dir, &job, Utc::now());
    let meta = backup::Meta {
        db,
        collection,
        reason: "export",
        detail: "results summary from a clean export".to_owned(),
        taken_at: Utc::now(),
    };
    backup::write(&path, &mut job, &meta, |doc| apply_update(doc, &set))?;
    drop(job);

    let set: Document = set.into_iter().collect();
    let write = jobs.collection.update_one(guard, doc! { "$set": set });
    let written = match jobs.within("writing the job", write.into_future()).await {
        Ok(result) => result.map_err(|e| jobs.error(e)),
        Err(e) => Err(e),
    };
    match written {
        Ok(r) if r.matched_count == 1 => Ok(path),
        Ok(_) => {
            let _ = fs::remove_file(&path);
            Err(Error::new(
                ErrorKind::Conflict,
                "the job changed since it was read (a worker saved an outcome, or its \
                 status moved); its summary was left as it is, export again to retry",
            ))
        }
        Err(e) => Err(Error::new(
            e.kind,
            format!(
                "{}; the write may or may not have applied, the backup {} is kept",
                e.message,
                path.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_as_python_writes_them() {
        let cases = [
            (0.91, "0.91"),
            (2.0, "2.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (-2.5e-7, "-2.5e-07"),
            (123.456, "123.456"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-0.0, "-0.0"),
            (1.2345678901234568e17, "1.2345678901234568e+17"),
        ];
        for (x, want) in cases {
            assert_eq!(python_float(x), want, "{x:e}");
        }
    }

    #[test]
    fn rounding_is_half_even_on_the_exact_value() {
        assert_eq!(round2(0.125), 0.12);
        assert_eq!(round2(0.375), 0.38);
        assert_eq!(round2(2.675), 2.67);
        assert_eq!(round2(0.905), 0.91);
    }

    #[test]
    fn statistics_of_nothing_are_integer_zeros() {
        let s = Statistics::of(&[]);
        let d = s.to_document();
        assert_eq!(d.get("average_confidence"), Some(&Bson::Int32(0)));
        assert_eq!(d.get_array("languages").unwrap().len(), 0);
    }

    #[test]
    fn statistics_count_characters_not_bytes() {
        let results = [
            doc! { "text": "ṭīkā", "confidence": 1, "words_count": 1,
            "blocks_count": 2, "detected_language": "sa" },
            doc! { "text": "abc", "confidence": 0.5, "detected_language": "" },
            doc! { "confidence": Bson::Null, "detected_language": "en" },
        ];
        let s = Statistics::of(&results);
        assert_eq!(s.total_characters, 7);
        assert_eq!(s.average_confidence, Some(0.5));
        assert_eq!(s.average_words, Some(0.33));
        assert_eq!(s.average_blocks, Some(0.67));
        assert_eq!(s.languages, ["en", "sa"]);
    }

    #[test]
    fn colliding_names_get_numbered() {
        let r = |file: &str, path: &str| doc! { "file": file, "file_path": path };
        let results = [
            r("page-001.tif", "/a/vol1/page-001.tif"),
            r("page-001.tif", "/a/vol2/page-001.tif"),
            r("page-001~2.tif", "/a/vol3/page-001~2.tif"),
            r("PAGE-001.jpg", "/a/vol4/PAGE-001.jpg"),
            r("../../etc/passwd", "/x"),
            r(".hidden", "/x/.hidden"),
            doc! { "file_path": "/a/b/scan.v2.png" },
            doc! {},
        ];
        assert_eq!(
            individual_names(&results),
            [
                "page-001.json",
                "page-001~2.json",
                "page-001~2~2.json",
                "PAGE-001~3.json",
                ".._..json",
                ".hidden.json",
                "scan.v2.json",
                "unknown.json",
            ]
        );
    }

    #[test]
    fn hostile_job_ids_are_refused() {
        for id in ["", "..", "../x", "a/b", ".git", "a\\b", "a\nb"] {
            assert!(check_job_id(id).is_err(), "{id:?}");
        }
        check_job_id("6fd2ff5c-a6e7-445c-affd-90d41621d789").unwrap();
    }

    #[test]
    fn json_is_python_shaped() {
        let value = Bson::Document(doc! {
            "b": 1, "a": [1.0, "x\"\n\u{1}é"], "e": [], "o": {}, "n": Bson::Null,
            "nan": f64::NAN,
        });
        let mut out = Vec::new();
        write_json(&mut out, &value, 0).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\n  \"b\": 1,\n  \"a\": [\n    1.0,\n    \"x\\\"\\n\\u0001é\"\n  ],\n  \
             \"e\": [],\n  \"o\": {},\n  \"n\": null,\n  \"nan\": null\n}"
        );
    }

    #[test]
    fn python_times() {
        let t = parse_generated_at("2026-01-09T04:56:00Z").unwrap();
        assert_eq!(python_time(t), "2026-01-09T04:56:00");
        let t = parse_generated_at("2026-01-09T06:56:00.25+02:00").unwrap();
        assert_eq!(python_time(t), "2026-01-09T04:56:00.250000");
        assert!(parse_generated_at("yesterday").is_err());
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(grouped(999), "999");
    }
}
