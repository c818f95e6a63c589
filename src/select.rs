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
