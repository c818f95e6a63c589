//! dupcheck: find, repair and prevent duplicate processing in the bulk job
//! records an OCR pipeline keeps in MongoDB.
//!
//! The library knows job records, the audit and its findings, and how to
//! read jobs from a server or a dump; it knows nothing of the terminal.
//! The `dupcheck` binary (in `commands/`) parses flags, calls in here and
//! renders.

pub mod audit;
pub mod backup;
pub mod connect;
pub mod dedupe;
pub mod digest;
pub mod dump;
pub mod error;
pub mod export;
pub mod indexes;
pub mod paths;
pub mod repair;
pub mod select;
pub mod server;
pub mod window;

pub use error::{Error, ErrorKind, Result};
