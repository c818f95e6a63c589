//! Which jobs a command looks at: `--since`, `--all`, `--job`, `--status`
//! and `--limit`, the same for a server and for a dump.

use bson::{doc, Bson, Document};
use chrono::{DateTime, Utc};

/// The jobs to look at. Empty lists mean "any".
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Jobs created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Jobs with one of these `job_id`s.
    pub jobs: Vec<String>,
    /// Jobs with one of these statuses.
    pub statuses: Vec<String>,
    /// At most this many jobs, newest first.
    pub limit: Option<u64>,
}

impl Selection {
    /// The query filter for a server.
    pub fn filter(&self) -> Document {
        let mut filter = Document::new();
        if let Some(since) = self.since {
            filter.insert(
                "created_at",
                doc! { "$gte": bson::DateTime::from_chrono(since) },
            );
        }
        if !self.jobs.is_empty() {
            filter.insert("job_id", doc! { "$in": strings(&self.jobs) });
        }
        if !self.statuses.is_empty() {
            filter.insert("status", doc! { "$in": strings(&self.statuses) });
        }
        filter
    }

    /// Whether a job read from a dump is selected (`--limit` aside).
    pub fn matches(
        &self,
        job_id: Option<&str>,
        status: Option<&str>,
        created_at: Option<DateTime<Utc>>,
    ) -> bool {
        if let Some(since) = self.since {
            if created_at.is_none_or(|t| t < since) {
                return false;
            }
        }
        if !self.jobs.is_empty() && !job_id.is_some_and(|j| self.jobs.iter().any(|x| x == j)) {
            return false;
        }
        if !self.statuses.is_empty()
            && !status.is_some_and(|s| self.statuses.iter().any(|x| x == s))
        {
            return false;
        }
        true
    }
}

fn strings(items: &[String]) -> Vec<Bson> {
    items.iter().map(|s| Bson::String(s.clone())).collect()
}

/// The date a server compares with a `--since` window, from a job's
/// `created_at`: a date, or the latest date of an array (`$gte` matches if
/// any element does). A `created_at` written as text is in no window.
pub fn window_date(created_at: Option<&Bson>) -> Option<DateTime<Utc>> {
    match created_at? {
        Bson::DateTime(d) => Some(d.to_chrono()),
        Bson::Array(items) => items
            .iter()
            .filter_map(|b| match b {
                Bson::DateTime(d) => Some(d.to_chrono()),
                _ => None,
            })
            .max(),
        _ => None,
    }
}

/// Orders two jobs as a server's `sort({created_at: -1, _id: -1})` does:
/// the newest first, and of two created at the same moment, the greater
/// `_id` first. A dump scan with `--limit` uses it to keep the jobs a
/// server would keep. A missing `created_at` sorts as null.
pub fn newest_first(
    a_created: Option<&Bson>,
    a_id: &Bson,
    b_created: Option<&Bson>,
    b_id: &Bson,
) -> std::cmp::Ordering {
    let key = |v: Option<&Bson>| descending_key(v.unwrap_or(&Bson::Null)).clone();
    compare(&key(b_created), &key(a_created)).then_with(|| compare(b_id, a_id))
}

/// The value a descending sort looks at: an array's greatest element.
fn descending_key(value: &Bson) -> &Bson {
    match value {
        Bson::Array(items) => items
            .iter()
            .max_by(|x, y| compare(x, y))
            // An empty array sorts below null and missing.
            .unwrap_or(&Bson::MinKey),
        other => other,
    }
}

/// MongoDB's order of BSON values (without collation): first by type
/// (MinKey, null, numbers, strings, documents, arrays, binary, ObjectId,
/// booleans, dates, timestamps, regular expressions, MaxKey), then by
/// value; numbers of any type by their value.
pub fn compare(a: &Bson, b: &Bson) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (ra, rb) = (rank(a), rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        _ if ra == 3 => compare_numbers(a, b),
        (Bson::String(x), Bson::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Bson::Symbol(x), Bson::Symbol(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Bson::String(x), Bson::Symbol(y)) | (Bson::Symbol(x), Bson::String(y)) => {
            x.as_bytes().cmp(y.as_bytes())
        }
        (Bson::Document(x), Bson::Document(y)) => {
            for ((kx, vx), (ky, vy)) in x.iter().zip(y.iter()) {
                let by = rank(vx)
                    .cmp(&rank(vy))
                    .then_with(|| kx.as_bytes().cmp(ky.as_bytes()))
                    .then_with(|| compare(vx, vy));
                if by != Ordering::Equal {
                    return by;
                }
            }
            x.len().cmp(&y.len())
        }
        (Bson::Array(x), Bson::Array(y)) => {
            for (vx, vy) in x.iter().zip(y.iter()) {
                let by = compare(vx, vy);
                if by != Ordering::Equal {
                    return by;
                }
            }
            x.len().cmp(&y.len())
        }
        (Bson::Binary(x), Bson::Binary(y)) => x
            .bytes
            .len()
            .cmp(&y.bytes.len())
            .then_with(|| u8::from(x.subtype).cmp(&u8::from(y.subtype)))
            .then_with(|| x.bytes.cmp(&y.bytes)),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.timestamp_millis().cmp(&y.timestamp_millis()),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => {
            (x.time, x.increment).cmp(&(y.time, y.increment))
        }
        (Bson::RegularExpression(x), Bson::RegularExpression(y)) => x
            .pattern
            .cmp(&y.pattern)
            .then_with(|| x.options.cmp(&y.options)),
        // The rest (code, pointers) never order jobs in practice.
        _ => a
            .clone()
            .into_canonical_extjson()
            .to_string()
            .cmp(&b.clone().into_canonical_extjson().to_string()),
    }
}

fn rank(value: &Bson) -> u8 {
    match value {
        Bson::MinKey => 1,
        Bson::Null | Bson::Undefined => 2,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 3,
        Bson::String(_) | Bson::Symbol(_) => 4,
        Bson::Document(_) => 5,
        Bson::Array(_) => 6,
        Bson::Binary(_) => 7,
        Bson::ObjectId(_) => 8,
        Bson::Boolean(_) => 9,
        Bson::DateTime(_) => 10,
        Bson::Timestamp(_) => 11,
        Bson::RegularExpression(_) => 12,
        Bson::MaxKey => 14,
        _ => 13,
    }
}

/// Numbers by value: whole numbers exactly (two int64 ids past 2^53 stay
/// apart), anything else through doubles.
fn compare_numbers(a: &Bson, b: &Bson) -> std::cmp::Ordering {
    let whole = |v: &Bson| match v {
        Bson::Int32(n) => Some(i128::from(*n)),
        Bson::Int64(n) => Some(i128::from(*n)),
        Bson::Double(x) if x.fract() == 0.0 && x.abs() < 9.2e18 => Some(*x as i128),
        _ => None,
    };
    if let (Some(x), Some(y)) = (whole(a), whole(b)) {
        return x.cmp(&y);
    }
    let (x, y) = (number(a), number(b));
    // NaN sorts below every other number.
    x.partial_cmp(&y)
        .unwrap_or_else(|| y.is_nan().cmp(&x.is_nan()))
}

fn number(value: &Bson) -> f64 {
    match value {
        Bson::Int32(n) => f64::from(*n),
        Bson::Int64(n) => *n as f64,
        Bson::Double(x) => *x,
        Bson::Decimal128(d) => d.to_string().parse().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

#[cfg(test)]
mod order_tests {
    use super::*;
    use std::cmp::Ordering::*;

    #[test]
    fn values_order_as_in_mongodb() {
        let oid = |b: u8| Bson::ObjectId(bson::oid::ObjectId::from_bytes([b; 12]));
        let date = |ms: i64| Bson::DateTime(bson::DateTime::from_millis(ms));
        let ascending = [
            Bson::MinKey,
            Bson::Null,
            Bson::Int32(1),
            Bson::Double(1.5),
            Bson::Int64(10),
            Bson::String("10".into()),
            Bson::String("9".into()),
            Bson::Document(doc! { "a": 1 }),
            oid(1),
            oid(2),
            Bson::Boolean(false),
            Bson::Boolean(true),
            date(0),
            date(1),
            Bson::Timestamp(bson::Timestamp {
                time: 0,
                increment: 1,
            }),
            Bson::MaxKey,
        ];
        for (i, a) in ascending.iter().enumerate() {
            for (j, b) in ascending.iter().enumerate() {
                assert_eq!(compare(a, b), i.cmp(&j), "{a:?} vs {b:?}");
            }
        }
        assert_eq!(compare(&Bson::Int32(1), &Bson::Double(1.0)), Equal);
        let big = |n: i64| Bson::Int64(n);
        assert_eq!(
            compare(
                &big(1_234_567_890_123_456_788),
                &big(1_234_567_890_123_456_789)
            ),
            Less
        );
        assert_eq!(compare(&Bson::Double(f64::NAN), &Bson::Int32(-5)), Less);
    }

    #[test]
    fn newest_first_breaks_ties_on_the_greater_id() {
        let at = Bson::DateTime(bson::DateTime::from_millis(5));
        let (nine, ten) = (Bson::Int32(9), Bson::Int32(10));
        assert_eq!(newest_first(Some(&at), &ten, Some(&at), &nine), Less);
        // A date written as text sorts before every date in ascending
        // order, so after them newest first.
        let text = Bson::String("2030-01-01T00:00:00Z".into());
        assert_eq!(newest_first(Some(&at), &nine, Some(&text), &ten), Less);
        assert_eq!(newest_first(None, &ten, Some(&at), &nine), Greater);
    }
}
