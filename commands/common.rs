//! What every subcommand shares: connection flags, the outcome and exit
//! status, messages on stderr, and whether to use colour.

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use dupcheck::connect::{Jobs, Target};
use dupcheck::{Error, ErrorKind};

/// Prints a message for a person on stderr, behind the tool's name.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("dupcheck: {}", format_args!($($arg)*))
    };
}

/// Where the jobs are: a server (the default) or a dump file.
#[derive(Args, Debug, Clone)]
pub struct Source {
    /// Read jobs from a dump file instead of a server: mongoexport JSON
    /// lines or array (canonical or relaxed Extended JSON), or a
    /// mongodump .bson file
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,

    #[command(flatten)]
    pub server: Server,
}

/// How to reach the server.
#[derive(Args, Debug, Clone)]
pub struct Server {
    /// MongoDB connection string; TLS, credentials and read preference go
    /// here as in every MongoDB tool. The password is never printed
    #[arg(
        long,
        env = "MONGODB_URI",
        default_value = "mongodb://localhost:27017",
        hide_env_values = true
    )]
    pub uri: String,

    /// Database holding the jobs
    #[arg(long, default_value = "gvpocr")]
    pub db: String,

    /// Collection holding one document per job
    #[arg(long, default_value = "bulk_jobs")]
    pub collection: String,

    /// Seconds to wait for the server before giving up
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS",
          value_parser = positive_seconds)]
    pub timeout: f64,

    /// Seconds, once connected, to wait for any one answer from the
    /// server before giving up (a large unindexed listing can take a while)
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS",
          value_parser = request_seconds)]
    pub request_timeout: f64,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    seconds_up_to(s, 3600.0)
}

fn request_seconds(s: &str) -> Result<f64, String> {
    seconds_up_to(s, 86400.0)
}

fn seconds_up_to(s: &str, most: f64) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() && x <= most => Ok(x),
        _ => Err(format!(
            "{s:?} is not a number of seconds more than 0 and at most {most}"
        )),
    }
}

impl Server {
    pub fn target(&self) -> Target {
        Target {
            uri: self.uri.clone(),
            db: self.db.clone(),
            collection: self.collection.clone(),
            timeout: Duration::from_secs_f64(self.timeout),
            request_timeout: Duration::from_secs_f64(self.request_timeout),
        }
    }

    pub async fn connect(&self) -> dupcheck::Result<Jobs> {
        Jobs::connect(&self.target()).await
    }
}

/// How a subcommand ended, before it becomes an exit status.
#[derive(Debug)]
pub enum Outcome {
    /// Ran; nothing wrong found.
    Clean,
    /// Ran; found something (or left something undone).
    Found,
    /// Could not do what was asked.
    Failed(Error),
    /// Could not do all of it; what failed was already reported.
    Incomplete,
}

impl From<dupcheck::Result<Outcome>> for Outcome {
    fn from(r: dupcheck::Result<Outcome>) -> Outcome {
        r.unwrap_or_else(Outcome::Failed)
    }
}

/// Maps an outcome to the documented exit status, printing a failure.
pub fn finish(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Clean => ExitCode::from(0),
        Outcome::Found => ExitCode::from(1),
        Outcome::Incomplete => ExitCode::from(2),
        Outcome::Failed(e) if e.kind == ErrorKind::Io && e.message.contains("Broken pipe") => {
            // The reader went away (`| head`): not our failure.
            ExitCode::from(0)
        }
        Outcome::Failed(e) => {
            say!("{}", shown(&dupcheck::connect::redact_all(&e.message)));
            ExitCode::from(2)
        }
    }
}

/// A runtime for the async driver; one thread is plenty for a CLI.
pub fn runtime() -> dupcheck::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", e))
}

/// Writes a line to stdout for a command whose work must not stop when its
/// reader goes away (`| head`): a write that fails is dropped.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Whether to colour what goes to stdout: only on a terminal that can show
/// it, never with `NO_COLOR` set to anything non-empty.
pub fn colour() -> bool {
    io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// Text from the database made safe to print on a terminal: control
/// characters (escape sequences, carriage returns, newlines), the
/// bidirectional marks and overrides, line and paragraph separators and
/// invisible characters are shown escaped, so a file name cannot rewrite
/// the screen or forge a line of the report. JSON carries the text as it
/// is (its format quotes it), and so does CSV unless on a terminal.
pub fn shown(text: &str) -> Cow<'_, str> {
    let risky = |c: char| {
        c.is_control()
            || matches!(
                c,
                '\u{061c}'
                    | '\u{200b}'..='\u{200f}'
                    | '\u{2028}'..='\u{202e}'
                    | '\u{2060}'..='\u{2069}'
                    | '\u{feff}'
            )
    };
    if !text.chars().any(risky) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if risky(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Stdout that outlives its reader: once a write meets a closed pipe, the
/// rest of the output is dropped and [`Quiet::closed`] says so. Commands
/// that change data finish their work whatever happens to their output.
pub struct Quiet<W: Write> {
    inner: W,
    closed: bool,
}

impl<W: Write> Quiet<W> {
    pub fn new(inner: W) -> Quiet<W> {
        Quiet {
            inner,
            closed: false,
        }
    }

    /// Whether the reader has gone away.
    pub fn closed(&self) -> bool {
        self.closed
    }

    fn absorb<T>(&mut self, r: io::Result<T>, dropped: T) -> io::Result<T> {
        match r {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(dropped)
            }
            other => other,
        }
    }
}

impl<W: Write> Write for Quiet<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        let r = self.inner.write(buf);
        self.absorb(r, buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = self.inner.flush();
        self.absorb(r, ())
    }
}

/// Turns a write error on stdout into ours.
pub fn out_err(e: io::Error) -> Error {
    Error::io("cannot write output", e)
}

/// Flushes stdout, reporting a closed pipe as such.
pub fn flush(out: &mut impl Write) -> dupcheck::Result<()> {
    out.flush().map_err(out_err)
}

/// `1 job`, `2 jobs`.
pub fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn marks_and_invisible_characters_are_escaped() {
        for c in [
            '\u{1b}', '\u{061c}', '\u{200b}', '\u{200e}', '\u{200f}', '\u{2028}', '\u{202e}',
            '\u{2066}', '\u{feff}',
        ] {
            let text = format!("a{c}b");
            assert_eq!(shown(&text), format!("a\\u{{{:x}}}b", c as u32), "{c:?}");
        }
        assert_eq!(shown("plain/path é.jpg"), "plain/path é.jpg");
    }
}
