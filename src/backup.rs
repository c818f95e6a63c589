//! Backups of job documents: written before every change dupcheck makes,
//! read back by `dupcheck restore`.
//!
//! A backup is one JSON file per job and per change, holding the whole
//! document as it was in canonical Extended JSON, so every BSON type comes
//! back as it was (an `Int32` stays an `Int32`, a date stays a date, field
//! order is kept). It also holds the SHA-256 of the document as dupcheck
//! left it (the *repaired fingerprint*), which lets a restore tell whether
//! anything has written to the job since.
//!
//! A file is written beside its final name, flushed to disk, renamed into
//! place and its folder flushed too: a backup that exists is complete, and
//! a crash leaves at worst a hidden `.tmp` file. The original document is
//! streamed to the file rather than turned into one JSON value first, so a
//! backup costs little memory beyond the document itself.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use bson::{Bson, Document};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::connect::Jobs;
use crate::digest::id_text;
use crate::error::{Error, ErrorKind, Result};
use crate::repair;

/// The value of the `format` field that marks a dupcheck backup.
pub const FORMAT: &str = "dupcheck-backup/1";

/// Who wrote a backup and why, recorded in its header.
#[derive(Debug, Clone)]
pub struct Meta {
    pub db: String,
    pub collection: String,
    /// `repair` or `restore`.
    pub reason: &'static str,
    /// Free-form detail, such as the keep policy of a repair.
    pub detail: String,
    pub taken_at: DateTime<Utc>,
}

/// A backup read back from its file.
#[derive(Debug, Clone)]
pub struct Backup {
    pub path: PathBuf,
    pub db: String,
    pub collection: String,
    pub taken_at: String,
    /// Fingerprint of the document as dupcheck left it; `None` if the file
    /// was cut before it was written (such a file is never renamed into
    /// place by dupcheck, but may have been copied by hand).
    pub repaired_sha256: Option<String>,
    /// The `job_id` and `_id` the header names, which dupcheck copies from
    /// the document it backs up; `None` where the header has none.
    pub header_job_id: Option<String>,
    pub header_id: Option<Bson>,
    /// The whole document as it was before the change.
    pub original: Document,
}

impl Backup {
    /// The name a person knows the job by.
    pub fn name(&self) -> String {
        job_name(&self.original)
    }

    pub fn id(&self) -> Option<&Bson> {
        self.original.get("_id")
    }

    /// How the header disagrees with the document it holds, if it does.
    /// dupcheck writes both from one document, so a disagreement means
    /// the file was edited or put together by hand: which job it would
    /// put back is then in doubt.
    pub fn mismatch(&self) -> Option<String> {
        let mut wrong = Vec::new();
        if let Some(header) = &self.header_job_id {
            let held = self.name();
            if *header != held {
                wrong.push(format!(
                    "its header names job {header}, the document it holds is job {held}"
                ));
            }
        }
        if let Some(header) = &self.header_id {
            if Some(header) != self.id() {
                wrong.push(format!(
                    "its header names _id {}, the document it holds has _id {}",
                    id_text(Some(header)),
                    id_text(self.id())
                ));
            }
        }
        (!wrong.is_empty()).then(|| wrong.join("; "))
    }
}

/// `job_id`, else the `_id` as text.
pub(crate) fn job_name(doc: &Document) -> String {
    doc.get_str("job_id")
        .map(str::to_owned)
        .unwrap_or_else(|_| id_text(doc.get("_id")))
}

/// SHA-256 of a document's BSON bytes, in hex.
pub fn fingerprint(doc: &Document) -> Result<String> {
    struct Hasher(Sha256);
    impl Write for Hasher {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hasher(Sha256::new());
    doc.to_writer(&mut h)
        .map_err(|e| Error::input(format!("cannot encode the document as BSON: {e}")))?;
    Ok(h.0.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A file name for a new backup of `doc` in `dir`, not yet taken:
/// `<job_id>.<UTC time>.json`.
pub fn new_path(dir: &Path, doc: &Document, at: DateTime<Utc>) -> PathBuf {
    let name: String = job_name(doc)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let name = if name.is_empty() {
        "job".to_owned()
    } else {
        name
    };
    let stamp = at.format("%Y%m%dT%H%M%S%.3fZ");
    let mut path = dir.join(format!("{name}.{stamp}.json"));
    let mut n = 1;
    while path.exists() {
        n += 1;
        path = dir.join(format!("{name}.{stamp}-{n}.json"));
    }
    path
}

/// Writes the backup of `doc` to `path`, durably. `change` is then given
/// the document to turn into the state dupcheck is about to write, whose
/// fingerprint closes the file; the document stays in that state.
pub fn write(
    path: &Path,
    doc: &mut Document,
    meta: &Meta,
    change: impl FnOnce(&mut Document),
) -> Result<()> {
    let shown = path.display().to_string();
    let fail = |e: io::Error| Error::io(&format!("cannot write the backup {shown}"), e);

    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if fs::metadata(&dir).is_ok_and(|m| !m.is_dir()) {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "cannot write the backup {shown}: {} is not a directory",
                dir.display()
            ),
        ));
    }
    fs::create_dir_all(&dir).map_err(fail)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::usage(format!("{shown} is not a file name")))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));

    let written = (|| -> Result<()> {
        let file = File::create(&tmp).map_err(fail)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let head = serde_json::json!({
            "format": FORMAT,
            "job_id": job_name(doc),
            "_id": doc.get("_id").cloned().unwrap_or(Bson::Null).into_canonical_extjson(),
            "db": meta.db,
            "collection": meta.collection,
            "reason": meta.reason,
            "detail": meta.detail,
            "taken_at": meta.taken_at.to_rfc3339(),
        });
        let Value::Object(head) = head else {
            unreachable!("json! of an object")
        };
        out.write_all(b"{").map_err(fail)?;
        for (key, value) in &head {
            serde_json::to_writer(&mut out, key).map_err(|e| fail(e.into()))?;
            out.write_all(b":").map_err(fail)?;
            serde_json::to_writer(&mut out, value).map_err(|e| fail(e.into()))?;
            out.write_all(b",\n").map_err(fail)?;
        }
        out.write_all(b"\"original\":").map_err(fail)?;
        write_document(&mut out, doc).map_err(fail)?;

        change(doc);
        let repaired = fingerprint(doc)?;
        write!(out, ",\n\"repaired_sha256\":\"{repaired}\"}}\n").map_err(fail)?;

        let file = out.into_inner().map_err(|e| fail(e.into_error()))?;
        file.sync_all().map_err(fail)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }

    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        fail(e)
    })?;
    sync_dir(&dir).map_err(fail)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Canonical Extended JSON of a document, keys in document order.
fn write_document(out: &mut impl Write, doc: &Document) -> io::Result<()> {
    out.write_all(b"{")?;
    for (i, (key, value)) in doc.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, key)?;
        out.write_all(b":")?;
        write_value(out, value)?;
    }
    out.write_all(b"}")
}

fn write_value(out: &mut impl Write, value: &Bson) -> io::Result<()> {
    match value {
        Bson::Document(d) => write_document(out, d),
        Bson::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_value(out, item)?;
            }
            out.write_all(b"]")
        }
        Bson::String(s) => Ok(serde_json::to_writer(&mut *out, s)?),
        Bson::JavaScriptCodeWithScope(c) => {
            out.write_all(b"{\"$code\":")?;
            serde_json::to_writer(&mut *out, &c.code)?;
            out.write_all(b",\"$scope\":")?;
            write_document(out, &c.scope)?;
            out.write_all(b"}")
        }
        other => Ok(serde_json::to_writer(
            &mut *out,
            &other.clone().into_canonical_extjson(),
        )?),
    }
}

/// Reads a backup file.
pub fn read(path: &Path) -> Result<Backup> {
    let shown = path.display().to_string();
    let bad = |what: &str| Error::input(format!("{shown}: not a dupcheck backup: {what}"));
    let file = File::open(path).map_err(|e| Error::io(&format!("cannot open {shown}"), e))?;
    let value: Value = serde_json::from_reader(BufReader::with_capacity(1 << 20, file))
        .map_err(|e| bad(&format!("not JSON ({e})")))?;
    let Value::Object(mut top) = value else {
        return Err(bad("not a JSON object"));
    };
    if top.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(bad(&format!("no \"format\": \"{FORMAT}\"")));
    }
    let text = |top: &serde_json::Map<String, Value>, key: &str| {
        top.get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| bad(&format!("no {key}")))
    };
    let db = text(&top, "db")?;
    let collection = text(&top, "collection")?;
    let taken_at = text(&top, "taken_at")?;
    let repaired_sha256 = top
        .get("repaired_sha256")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let header_job_id = match top.get("job_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("\"job_id\" is not a string")),
    };
    let header_id = match top.remove("_id").map(Bson::try_from) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => return Err(bad(&format!("\"_id\" is not Extended JSON ({e})"))),
    };
    let original = match top.remove("original").map(Bson::try_from) {
        Some(Ok(Bson::Document(d))) => d,
        Some(Ok(_)) => return Err(bad("\"original\" is not a document")),
        Some(Err(e)) => return Err(bad(&format!("\"original\" is not Extended JSON ({e})"))),
        None => return Err(bad("no \"original\"")),
    };
    if !original.contains_key("_id") {
        return Err(bad("the original document has no _id"));
    }
    Ok(Backup {
        path: path.to_path_buf(),
        db,
        collection,
        taken_at,
        repaired_sha256,
        header_job_id,
        header_id,
        original,
    })
}

/// How a restore ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Restored {
    /// The document was put back; the state it replaced was backed up here.
    Restored { backup: PathBuf },
    /// The document was put back where none was (with `force`).
    Inserted,
    /// The job already is as in the backup.
    AlreadyThere,
}

/// Puts a backed-up document back, by one conditional replace.
///
/// Without `force` it refuses when the job's current fingerprint is not
/// the one recorded after the repair: something wrote to the job since,
/// and putting the old document back would lose that. The current state
/// is itself backed up in `backup_dir` before it is replaced.
pub async fn restore(
    jobs: &Jobs,
    saved: &Backup,
    force: bool,
    backup_dir: &Path,
    attempts: u32,
) -> Result<Restored> {
    let name = saved.name();
    let id = saved
        .id()
        .cloned()
        .ok_or_else(|| Error::input("the backup's document has no _id"))?;
    let (db, collection) = repair::namespace(jobs);
    let original_bytes = bson::to_vec(&saved.original)
        .map_err(|e| Error::input(format!("cannot encode the backed-up document: {e}")))?;

    for attempt in 1..=attempts.max(1) {
        let current = jobs
            .collection
            .find_one(bson::doc! { "_id": &id })
            .await
            .map_err(|e| jobs.error(e))?;
        let Some(mut current) = current else {
            if !force {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "job {name} no longer exists in {db}.{collection}; \
                         --force inserts the backed-up document"
                    ),
                ));
            }
            return match jobs.collection.insert_one(saved.original.clone()).await {
                Ok(_) => Ok(Restored::Inserted),
                Err(e) => Err(jobs.error(e)),
            };
        };

        let current_bytes = bson::to_vec(&current)
            .map_err(|e| Error::input(format!("cannot encode job {name}: {e}")))?;
        if current_bytes == original_bytes {
            return Ok(Restored::AlreadyThere);
        }
        let now = fingerprint(&current)?;
        if !force && saved.repaired_sha256.as_deref() != Some(now.as_str()) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "job {name} has changed since the backup was taken and the \
                     repair applied; restoring would lose those changes \
                     (--force restores anyway, after backing up the current state)"
                ),
            ));
        }

        let guard = repair::unchanged(&current);
        let path = new_path(backup_dir, &current, Utc::now());
        let meta = Meta {
            db: db.clone(),
            collection: collection.clone(),
            reason: "restore",
            detail: format!("before restoring {}", saved.path.display()),
            taken_at: Utc::now(),
        };
        let original = saved.original.clone();
        write(&path, &mut current, &meta, |doc| *doc = original)?;
        drop(current);

        let replaced = jobs
            .collection
            .replace_one(guard, saved.original.clone())
            .await;
        match replaced {
            Ok(r) if r.matched_count == 1 => return Ok(Restored::Restored { backup: path }),
            Ok(_) => {
                let _ = fs::remove_file(&path);
                if attempt < attempts {
                    repair::pause(attempt).await;
                }
            }
            Err(e) => {
                let mut err = jobs.error(e);
                err.message = format!(
                    "{}; the state before the restore is backed up at {}",
                    err.message,
                    path.display()
                );
                return Err(err);
            }
        }
    }
    Err(Error::new(
        ErrorKind::Conflict,
        format!("job {name} kept changing while being restored; left as it is, try again"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::spec::BinarySubtype;
    use bson::{doc, oid::ObjectId, Binary, Decimal128, Regex, Timestamp};

    fn exotic() -> Document {
        doc! {
            "_id": ObjectId::new(),
            "job_id": "j/1 é",
            "int": 5i32,
            "long": 5i64,
            "double": 0.1,
            "whole": 3.0,
            "neg_zero": -0.0,
            "nan": f64::NAN,
            "inf": f64::NEG_INFINITY,
            "tiny": 5e-324,
            "dec": Bson::Decimal128("1.10".parse::<Decimal128>().unwrap()),
            "bin": Binary { subtype: BinarySubtype::Uuid, bytes: vec![0, 1, 2, 255] },
            "ts": Timestamp { time: 5, increment: 6 },
            "re": Regex { pattern: "a.*".into(), options: "im".into() },
            "date": bson::DateTime::from_millis(-62_135_596_800_001),
            "null": Bson::Null,
            "min": Bson::MinKey,
            "max": Bson::MaxKey,
            "undef": Bson::Undefined,
            "sym": Bson::Symbol("s".into()),
            "code": Bson::JavaScriptCode("x = 1".into()),
            "scoped": Bson::JavaScriptCodeWithScope(bson::JavaScriptCodeWithScope {
                code: "y".into(),
                scope: doc! { "z": 1, "a": 2 },
            }),
            "nested": { "z": 1, "a": [1i64, "two", { "$weird": "key" }] },
            "text": "line\none \"quoted\" \u{0} \u{301}",
        }
    }

    #[test]
    fn backups_restore_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut doc = exotic();
        let before = bson::to_vec(&doc).unwrap();
        let path = new_path(dir.path(), &doc, Utc::now());
        let meta = Meta {
            db: "d".into(),
            collection: "c".into(),
            reason: "repair",
            detail: String::new(),
            taken_at: Utc::now(),
        };
        write(&path, &mut doc, &meta, |d| {
            d.insert("int", 6);
        })
        .unwrap();
        assert_eq!(doc.get_i32("int").unwrap(), 6);

        let back = read(&path).unwrap();
        let after = bson::to_vec(&back.original).unwrap();
        assert_eq!(before, after, "{:?}", back.original);
        assert_eq!(
            back.repaired_sha256.as_deref(),
            Some(fingerprint(&doc).unwrap().as_str())
        );
        assert_eq!(back.name(), "j/1 é");
        assert!(path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("j_1__."));

        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left");
    }

    #[test]
    fn names_are_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let doc = doc! { "_id": 1, "job_id": "a" };
        let at = Utc::now();
        let first = new_path(dir.path(), &doc, at);
        fs::write(&first, "x").unwrap();
        assert_ne!(new_path(dir.path(), &doc, at), first);
        let unnamed = new_path(dir.path(), &doc! { "_id": 2, "job_id": "" }, at);
        assert!(unnamed
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("job."));
    }

    #[test]
    fn other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in [
            ("a.json", "not json"),
            ("b.json", "[1, 2]"),
            ("c.json", r#"{"format": "something else"}"#),
            (
                "d.json",
                r#"{"format": "dupcheck-backup/1", "db": "d", "collection": "c",
                   "taken_at": "t", "original": {"x": {"$numberInt": "nope"}}}"#,
            ),
        ] {
            let p = dir.path().join(name);
            fs::write(&p, body).unwrap();
            let e = read(&p).unwrap_err();
            assert!(e.message.contains("not a dupcheck backup"), "{}", e.message);
        }
    }
}
