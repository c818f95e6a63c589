//! One error type for the whole library.
//!
//! Callers match on [`ErrorKind`] to decide what to tell the user and which
//! exit status to use; the message is already fit to print. Messages never
//! carry a connection string's password: everything that comes from the
//! driver passes through [`crate::connect::scrub`] before it lands here.

use std::fmt;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A flag or argument that cannot be understood.
    Usage,
    /// The server could not be reached, or the URI is not valid.
    Connect,
    /// The server refused the credentials or the operation.
    Auth,
    /// The server answered with an error to a command.
    Server,
    /// A file could not be read or written.
    Io,
    /// Input that is not what it claims to be (a broken dump, a bad backup).
    Input,
    /// The asked-for job does not exist.
    NotFound,
    /// The record changed under us and the operation was not applied.
    Conflict,
}

/// An error with a message ready for the user.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Usage, message)
    }

    pub fn input(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Input, message)
    }

    pub fn io(what: &str, err: std::io::Error) -> Error {
        Error::new(ErrorKind::Io, format!("{what}: {err}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
