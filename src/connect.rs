//! Reaching the server, and keeping its password out of every message.
//!
//! TLS, authentication and read preference all come from the URI, as in
//! every MongoDB tool. The one thing dupcheck adds is a bound on how long
//! reaching the server may take, and a check (`ping`) that it did, so that
//! an unreachable server or refused credentials end the run at once with
//! one clear line instead of at the first query.

use std::time::Duration;

use bson::{doc, Document};
use mongodb::error::ErrorKind as DriverKind;
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection};

use crate::error::{Error, ErrorKind, Result};

/// Where the jobs live.
#[derive(Debug, Clone)]
pub struct Target {
    pub uri: String,
    pub db: String,
    pub collection: String,
    /// How long reaching the server may take.
    pub timeout: Duration,
    /// How long, once connected, one request may go unanswered.
    pub request_timeout: Duration,
}

/// A connected collection of job documents.
#[derive(Debug, Clone)]
pub struct Jobs {
    pub client: Client,
    pub collection: Collection<Document>,
    /// The password of the URI, kept only to scrub it from messages.
    secret: Option<String>,
    /// How long one request may go unanswered (see [`Jobs::answer`]).
    request_timeout: Duration,
}

impl Jobs {
    /// Connects and checks that the server answers.
    pub async fn connect(target: &Target) -> Result<Jobs> {
        let secret = password(&target.uri);
        let fail = |e: mongodb::error::Error| from_driver(e, secret.as_deref());

        let mut options = ClientOptions::parse(&target.uri).await.map_err(&fail)?;
        options.server_selection_timeout = Some(target.timeout);
        options.connect_timeout = Some(target.timeout);
        options
            .app_name
            .get_or_insert_with(|| "dupcheck".to_owned());

        let client = Client::with_options(options).map_err(&fail)?;
        let db = client.database(&target.db);
        let ping = tokio::time::timeout(
            target.timeout + Duration::from_secs(1),
            db.run_command(doc! { "ping": 1 }),
        )
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Connect,
                format!(
                    "cannot reach {} within {}s",
                    redact(&target.uri),
                    target.timeout.as_secs_f64()
                ),
            )
        })?;
        ping.map_err(|e| {
            let mut err = fail(e);
            if err.kind == ErrorKind::Connect {
                err.message = format!("cannot reach {}: {}", redact(&target.uri), err.message);
            }
            err
        })?;

        // A mistyped --db or --collection would otherwise look like a
        // collection with no jobs in it: a clean scan, nothing to repair.
        if target.collection.is_empty() {
            return Err(Error::usage("--collection must not be empty"));
        }
        let found = tokio::time::timeout(
            target.request_timeout,
            db.list_collection_names()
                .filter(doc! { "name": &target.collection }),
        )
        .await
        .map_err(|_| no_answer("listing collections", target.request_timeout))?
        .map_err(&fail)?;
        if found.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no collection {:?} in database {:?} (check --db and --collection)",
                    target.collection, target.db
                ),
            ));
        }

        Ok(Jobs {
            collection: db.collection(&target.collection),
            client,
            secret,
            request_timeout: target.request_timeout,
        })
    }

    /// Awaits one request to the server. The driver bounds only how long
    /// connecting takes: a server (or a link) that stops answering once
    /// connected would otherwise hold the run forever.
    pub async fn answer<T>(
        &self,
        doing: &str,
        request: impl std::future::Future<Output = mongodb::error::Result<T>>,
    ) -> Result<T> {
        self.within(doing, request)
            .await?
            .map_err(|e| self.error(e))
    }

    /// As [`Jobs::answer`], but hands back the driver's own result, for a
    /// caller that tells some server errors apart.
    pub async fn within<T>(
        &self,
        doing: &str,
        request: impl std::future::Future<Output = mongodb::error::Result<T>>,
    ) -> Result<mongodb::error::Result<T>> {
        tokio::time::timeout(self.request_timeout, request)
            .await
            .map_err(|_| no_answer(doing, self.request_timeout))
    }

    /// Turns a driver error from a later operation into ours.
    pub fn error(&self, e: mongodb::error::Error) -> Error {
        from_driver(e, self.secret.as_deref())
    }
}

fn no_answer(doing: &str, waited: Duration) -> Error {
    Error::new(
        ErrorKind::Connect,
        format!(
            "no answer from the server for {}s while {doing} (--request-timeout)",
            waited.as_secs_f64()
        ),
    )
}

fn from_driver(e: mongodb::error::Error, secret: Option<&str>) -> Error {
    let kind = match *e.kind {
        DriverKind::Authentication { .. } => ErrorKind::Auth,
        DriverKind::ServerSelection { .. }
        | DriverKind::Io(_)
        | DriverKind::ConnectionPoolCleared { .. }
        | DriverKind::DnsResolve { .. } => ErrorKind::Connect,
        DriverKind::InvalidArgument { .. } => ErrorKind::Usage,
        DriverKind::Command(ref c) if c.code == 13 || c.code == 18 => ErrorKind::Auth,
        _ => ErrorKind::Server,
    };
    let text = match *e.kind {
        DriverKind::Authentication { ref message, .. } => {
            format!("authentication failed: {}", first_line(message))
        }
        DriverKind::ServerSelection { ref message, .. } => first_line(message),
        DriverKind::InvalidArgument { ref message, .. } => {
            format!("invalid connection string: {message}")
        }
        DriverKind::Command(ref c) => {
            format!("server error {} ({}): {}", c.code, c.code_name, c.message)
        }
        // The kind alone: the error's own text appends labels and sources
        // that mean nothing to a person.
        _ => first_line(&e.kind.to_string()),
    };
    Error::new(kind, scrub(&text, secret))
}

fn first_line(text: &str) -> String {
    // Server selection errors list every server's state on one long line;
    // the first sentence says what a person needs.
    let line = text.lines().next().unwrap_or(text);
    match line.find(". Topology:") {
        Some(at) => line[..at].to_owned(),
        None => line.to_owned(),
    }
}

/// The password part of a connection string, if any.
pub fn password(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let pass = userinfo.split_once(':')?.1;
    (!pass.is_empty()).then(|| pass.to_owned())
}

/// Removes a password, raw and percent-decoded, from a message.
pub fn scrub(text: &str, secret: Option<&str>) -> String {
    let Some(secret) = secret else {
        return text.to_owned();
    };
    let mut out = text.replace(secret, "****");
    let decoded = percent_decode(secret);
    if !decoded.is_empty() && decoded != secret {
        out = out.replace(&decoded, "****");
    }
    out
}

/// A connection string fit to print: the password replaced by `****`.
pub fn redact(uri: &str) -> String {
    match password(uri) {
        Some(p) => uri.replacen(&format!(":{p}@"), ":****@", 1),
        None => uri.to_owned(),
    }
}

/// Masks the password of every connection string found in a text, such
/// as a flag parser's message that echoes a mistyped argument.
pub fn redact_all(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("mongodb") {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let end = from
            .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`'))
            .unwrap_or(from.len());
        let (uri, after) = from.split_at(end);
        if uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://") {
            out.push_str(&redact(uri));
        } else {
            out.push_str(uri);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_and_hidden() {
        let uri = "mongodb://reader:s3cr%40t@db1:27017,db2/gvpocr?tls=true";
        assert_eq!(password(uri).as_deref(), Some("s3cr%40t"));
        assert_eq!(
            redact(uri),
            "mongodb://reader:****@db1:27017,db2/gvpocr?tls=true"
        );
        let msg = "auth failed for reader with s3cr@t and s3cr%40t";
        assert_eq!(
            scrub(msg, password(uri).as_deref()),
            "auth failed for reader with **** and ****"
        );
    }

    #[test]
    fn passwords_in_any_text_are_hidden() {
        let text = "error: unexpected argument 'mongodb://admin:S3cr3t@h:1/' found, \
                    and \"mongodb+srv://u:p%40ss@c.example/db?x=1\" too";
        let masked = redact_all(text);
        assert!(
            !masked.contains("S3cr3t") && !masked.contains("p%40ss"),
            "{masked}"
        );
        assert!(masked.contains("mongodb://admin:****@h:1/"), "{masked}");
        assert_eq!(redact_all("no uri here"), "no uri here");
    }

    #[test]
    fn no_password_no_change() {
        assert_eq!(password("mongodb://localhost:27017"), None);
        assert_eq!(
            password("mongodb://user@host/?authMechanism=MONGODB-X509"),
            None
        );
        assert_eq!(redact("mongodb://h"), "mongodb://h");
    }
}
