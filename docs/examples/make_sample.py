"""Writes jobs.json, the sample dump dupcheck's README scans.

Deterministic: running it again gives the same bytes. Output is what
`mongoexport --db gvpocr --collection bulk_jobs` writes: one job per line,
relaxed Extended JSON. Each job is named for what is wrong with it.
"""
import hashlib
import json
import unicodedata

WORDS = ("sri ganesaya nama atha prathamo adhyaya dharma ksetre kuru "
         "ksetre samaveta yuyutsavah mamakah pandavas caiva kim akurvata "
         "sanjaya uvaca drstva tu pandavanikam vyudham duryodhanas tada").split()


def oid(seed):
    return {"$oid": hashlib.sha1(seed.encode()).hexdigest()[:24]}


def uuid(seed):
    h = hashlib.sha1(("job" + seed).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def date(day, hh, mm, ss=0):
    return {"$date": f"2026-01-{day:02d}T{hh:02d}:{mm:02d}:{ss:02d}Z"}


def iso(day, hh, mm, ss=0):
    return f"2026-01-{day:02d}T{hh:02d}:{mm:02d}:{ss:02d}.000000"


def text_for(path, n):
    h = int(hashlib.sha1(path.encode()).hexdigest(), 16)
    words = [WORDS[((h >> (i % 120)) ^ i) % len(WORDS)] for i in range(n)]
    lines = [" ".join(words[i:i + 9]) for i in range(0, len(words), 9)]
    return "\n".join(lines)


def result(path, index, day, hh, mm, worker="ocr-worker-1", conf=0.91):
    name = path.rsplit("/", 1)[-1]
    text = text_for(path, 60 + index % 40)
    return {
        "file": name,
        "file_path": path,
        "file_index": index,
        "status": "success",
        "provider": "google_vision",
        "languages": ["sa", "en"],
        "handwriting": False,
        "text": text,
        "full_text": text,
        "confidence": conf,
        "detected_language": "sa",
        "blocks_count": 3 + index % 5,
        "words_count": len(text.split()),
        "pages_processed": 1,
        "file_info": {"size": 180000 + 1337 * index, "extension": "." + name.rsplit(".", 1)[-1]},
        "metadata": {"processing_time": round(2.1 + index * 0.17, 2), "worker_id": worker},
        "processed_at": iso(day, hh, mm, index % 60),
        "retry_count": 0,
    }


def error(path, day, hh, mm, why="OCR provider returned 503: service unavailable"):
    return {"file": path.rsplit("/", 1)[-1], "file_path": path, "error": why,
            "processed_at": iso(day, hh, mm)}


def job(seed, day, hh, mm, folder, results, errors, processed, status="completed",
        consumed=None, published=None, total=None, progress=None, summary=None,
        message_ids=None, mode="single"):
    distinct = len(set(r["file_path"] for r in results) | set(e["file_path"] for e in errors))
    consumed = distinct if consumed is None else consumed
    published = distinct if published is None else published
    total = distinct if total is None else total
    current = consumed if progress is None else progress
    d = {
        "_id": oid(seed),
        "job_id": uuid(seed),
        "user_id": oid("user-7"),
        "folder_path": folder,
        "processing_mode": mode,
        "provider": "google_vision",
        "languages": ["sa", "en"],
        "handwriting": False,
        "recursive": True,
        "export_formats": ["json", "csv", "text"],
        "status": status,
        "total_files": total,
        "published_count": published,
        "consumed_count": consumed,
        "progress": {"current": current, "total": total,
                     "percentage": round(100.0 * current / total, 1) if total else 0.0,
                     "filename": results[-1]["file"] if results else ""},
        "checkpoint": {"results": results, "errors": errors, "processed_files": processed,
                       "processed_count": consumed, "retry_count": 0, "consecutive_errors": 0,
                       "last_checkpoint_at": iso(day, hh, mm + 5)},
        "results": None,
        "error": None,
        "created_at": date(day, hh, mm),
        "updated_at": date(day, hh, mm + 5),
        "completed_at": date(day, hh, mm + 6) if status == "completed" else None,
    }
    if message_ids is not None:
        d["checkpoint"]["processed_message_ids"] = message_ids
    if status == "completed":
        ok = len(results) if summary is None else summary[0]
        bad = len(errors) if summary is None else summary[1]
        d["results"] = {
            "summary": {"total_files": total, "successful": ok, "failed": bad,
                        "processed_at": iso(day, hh, mm + 6),
                        "statistics": {"total_characters": sum(len(r["text"]) for r in results),
                                       "average_confidence": 0.91,
                                       "languages": ["sa"]}},
            "report_files": {"json": f"bulk_results/{d['job_id']}/{d['job_id']}_results.json"},
            "zip_path": f"bulk_results/{d['job_id']}/{d['job_id']}_bulk_ocr_results.zip",
            "download_url": f"/api/bulk/download/{d['job_id']}",
            "results_preview": {"total_results": len(results)},
        }
    return d


def files(folder, prefix, n, ext="jpg"):
    return [f"{folder}/{prefix}{i:05d}.00.{ext}" for i in range(1, n + 1)]


jobs = []

# 1. A clean completed job with one failed file.
f = files("/data/manuscripts/MSALTBHA001", "MSALTBHA001", 5)
jobs.append(job("clean-1", 8, 9, 10, "/data/manuscripts/MSALTBHA001",
                [result(p, i, 8, 9, 11) for i, p in enumerate(f[:4])],
                [error(f[4], 8, 9, 12)], f))

# 2. The incident: 16 files, 16 processed, 19 results.
folder = "/data/manuscripts/MSALTMEBA001"
f = files(folder, "MSALTMEBA001", 16)
rs = [result(p, i, 9, 3, 40, worker=f"ocr-worker-{1 + i % 3}") for i, p in enumerate(f)]
rs.insert(7, result(f[6], 6, 9, 3, 41, worker="ocr-worker-3", conf=0.89))  # ...00007 twice
rs.insert(3, result(f[2], 2, 9, 3, 41, worker="ocr-worker-2", conf=0.90))  # ...00003 three times
rs.insert(4, result(f[2], 2, 9, 3, 41, worker="ocr-worker-1", conf=0.92))
jobs.append(job("incident", 9, 3, 40, folder, rs, [], f, consumed=19, published=16, total=16,
                progress=19))
jobs[-1]["job_id"] = "6fd2ff5c-a6e7-445c-affd-90d41621d789"

# 3. A clean running job, written after the fix (message ids present).
f = files("/data/manuscripts/MSALTGVP004", "MSALTGVP004", 8)
jobs.append(job("running-clean", 9, 10, 20, "/data/manuscripts/MSALTGVP004",
                [result(p, i, 9, 10, 21) for i, p in enumerate(f[:5])], [], f[:5],
                status="processing", published=8, total=8,
                message_ids=[hashlib.md5(p.encode()).hexdigest()[:16] for p in f[:5]]))

# 4. An error recorded twice, and a file with both a result and an error.
f = files("/data/manuscripts/MSALTKAS002", "MSALTKAS002", 6)
jobs.append(job("errors", 8, 14, 0, "/data/manuscripts/MSALTKAS002",
                [result(p, i, 8, 14, 1) for i, p in enumerate(f[:5])],
                [error(f[5], 8, 14, 2), error(f[5], 8, 14, 3), error(f[1], 8, 14, 2)], f,
                consumed=6))

# 5. Two spellings of one file: a doubled slash, and a name in
#    decomposed Unicode from a macOS worker.
folder = "/data/uploads/Śāradā"
f = [f"{folder}/patra-{i}.png" for i in range(1, 5)] + [f"{folder}/ṭīkā-5.png"]
nfd = unicodedata.normalize("NFD", f[4])
rs = [result(p, i, 8, 16, 30) for i, p in enumerate(f)]
rs.append(result(f[1].replace("/patra-2", "//patra-2"), 1, 8, 16, 31))
rs.append(result(nfd, 4, 8, 16, 31, worker="mac-worker-1"))
jobs.append(job("spellings", 8, 16, 30, folder, rs, [], f + [f[1].replace("/patra-2", "//patra-2"), nfd],
                consumed=7))

# 6. Two different files sharing a base name (the aggregator keeps one).
rs = [result(p, i, 8, 18, 5) for i, p in enumerate(
    ["/data/batch7/vol1/page-001.tif", "/data/batch7/vol2/page-001.tif",
     "/data/batch7/vol2/page-002.tif"])]
jobs.append(job("base-names", 8, 18, 5, "/data/batch7", rs, [], [r["file_path"] for r in rs]))

# 7. A result whose path is not in processed_files, and a processed file
#    with no result or error; a path listed twice in processed_files.
f = files("/data/manuscripts/MSALTTIR003", "MSALTTIR003", 5)
jobs.append(job("membership", 8, 20, 0, "/data/manuscripts/MSALTTIR003",
                [result(p, i, 8, 20, 1) for i, p in enumerate(f[:4])], [],
                f[:3] + [f[4], f[0]], consumed=4))

# 8. Stale progress on a running job, and counters that disagree with the
#    files recorded: consumed ahead, published behind.
f = files("/data/manuscripts/MSALTPUN005", "MSALTPUN005", 6)
jobs.append(job("counters", 9, 11, 0, "/data/manuscripts/MSALTPUN005",
                [result(p, i, 9, 11, 2) for i, p in enumerate(f)], [], f,
                status="processing", consumed=7, published=5, total=10, progress=4))

# 9. A completed job whose final summary and totals are off.
f = files("/data/manuscripts/MSALTMYS006", "MSALTMYS006", 4)
jobs.append(job("summary", 8, 22, 0, "/data/manuscripts/MSALTMYS006",
                [result(p, i, 8, 22, 1) for i, p in enumerate(f[:3])],
                [error(f[3], 8, 22, 2)], f, published=5, total=5, summary=(4, 1)))

# 10. A repeated NSQ message id.
f = files("/data/manuscripts/MSALTUJJ007", "MSALTUJJ007", 3)
mids = [hashlib.md5(p.encode()).hexdigest()[:16] for p in f]
jobs.append(job("message-ids", 9, 1, 0, "/data/manuscripts/MSALTUJJ007",
                [result(p, i, 9, 1, 1) for i, p in enumerate(f)], [], f,
                message_ids=mids + [mids[1]]))

# 11. Malformed: errors is not an array, a counter is a string, and one
#     result has no path.
f = files("/data/manuscripts/MSALTVAR008", "MSALTVAR008", 3)
m = job("malformed", 8, 23, 30, "/data/manuscripts/MSALTVAR008",
        [result(p, i, 8, 23, 31) for i, p in enumerate(f)], [], f)
m["checkpoint"]["errors"] = "none"
m["consumed_count"] = "3"
del m["checkpoint"]["results"][1]["file_path"]
jobs.append(m)

with open("jobs.json", "w", encoding="utf-8") as out:
    for j in jobs:
        out.write(json.dumps(j, ensure_ascii=False, separators=(",", ":")) + "\n")
