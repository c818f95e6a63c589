//! Reading job documents from a dump file instead of a server.
//!
//! Three forms are read, told apart by the first byte: `mongoexport`'s
//! JSON lines and its `--jsonArray` form (both in canonical or relaxed
//! Extended JSON), and `mongodump`'s `.bson` files, which are BSON
//! documents one after another. Documents are handed on one at a time,
//! so a dump of any size is read in the memory of its largest document.
//!
//! A document that cannot be parsed is reported with its place in the file
//! and reading goes on where the format allows it: after a bad line of
//! JSON lines, yes; inside a broken array or a truncated `.bson`, no.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use bson::{Bson, Document};
use serde::de::{Deserializer, SeqAccess, Visitor};

use crate::error::{Error, Result};

/// Where in the file a document was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Line(u64),
    Element(u64),
    Offset(u64),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Line(n) => write!(f, "line {n}"),
            Place::Element(n) => write!(f, "array element {n}"),
            Place::Offset(n) => write!(f, "byte {n}"),
        }
    }
}

/// Calls `each` with every document of the dump at `path` (`-` for
/// standard input), or with the error for a document that could not be
/// read. The returned error is for a failure that stopped reading.
pub fn read(path: &Path, mut each: impl FnMut(Place, Result<Document>)) -> Result<()> {
    if path.as_os_str() == "-" {
        let stdin = std::io::stdin();
        return read_from(stdin.lock(), "standard input", false, &mut each);
    }
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|e| Error::io(&format!("cannot open {shown}"), e))?;
    let bson_name = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("bson"));
    read_from(
        BufReader::with_capacity(1 << 16, file),
        &shown,
        bson_name,
        &mut each,
    )
}

/// Tells the form from the first bytes, without consuming them: a BSON
/// document's length can begin with a byte that looks like white space.
fn read_from(
    mut reader: impl BufRead,
    shown: &str,
    bson_name: bool,
    each: &mut impl FnMut(Place, Result<Document>),
) -> Result<()> {
    let buf = reader
        .fill_buf()
        .map_err(|e| Error::io(&format!("cannot read {shown}"), e))?;
    if buf.is_empty() {
        return Ok(());
    }
    let first_text = buf.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let looks_like_text = buf[0].is_ascii_graphic() || buf[0].is_ascii_whitespace();

    match first_text {
        _ if bson_name => read_bson(reader, shown, each),
        Some(b'[') => read_array(reader, shown, each),
        // Anything else that reads as text is taken for JSON lines, so each
        // bad line is reported for what it is.
        Some(b'{') | None => read_lines(reader, shown, each),
        Some(_) if looks_like_text => read_lines(reader, shown, each),
        Some(_) => read_bson(reader, shown, each),
    }
}

fn from_json(value: serde_json::Value) -> Result<Document> {
    match Bson::try_from(value) {
        Ok(Bson::Document(doc)) => Ok(doc),
        Ok(other) => Err(Error::input(format!(
            "expected a document, found {}",
            crate::audit::a(crate::digest::type_name(&other))
        ))),
        Err(e) => Err(Error::input(format!("not valid Extended JSON: {e}"))),
    }
}

fn read_lines(
    reader: impl BufRead,
    shown: &str,
    each: &mut impl FnMut(Place, Result<Document>),
) -> Result<()> {
    for (n, line) in reader.split(b'\n').enumerate() {
        let place = Place::Line(n as u64 + 1);
        let line = line.map_err(|e| Error::io(&format!("cannot read {shown}"), e))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = serde_json::from_slice::<serde_json::Value>(&line)
            .map_err(|e| Error::input(format!("not JSON: {e}")))
            .and_then(from_json);
        each(place, parsed);
    }
    Ok(())
}

fn read_array(
    reader: impl Read,
    shown: &str,
    each: &mut impl FnMut(Place, Result<Document>),
) -> Result<()> {
    struct Elements<'a, F>(&'a mut F);

    impl<'de, F: FnMut(Place, Result<Document>)> Visitor<'de> for Elements<'_, F> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of documents")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
            let mut n = 0;
            while let Some(value) = seq.next_element::<serde_json::Value>()? {
                n += 1;
                (self.0)(Place::Element(n), from_json(value));
            }
            Ok(())
        }
    }

    let mut de = serde_json::Deserializer::from_reader(reader);
    de.deserialize_seq(Elements(each))
        .and_then(|()| de.end())
        .map_err(|e| Error::input(format!("{shown}: broken JSON array: {e}")))
}

/// Largest BSON document MongoDB stores, plus room for a dump's overhead.
const MAX_BSON: usize = 16 * 1024 * 1024 + 16 * 1024;

fn read_bson(
    mut reader: impl Read,
    shown: &str,
    each: &mut impl FnMut(Place, Result<Document>),
) -> Result<()> {
    let mut offset = 0u64;
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 4];
        match read_full(&mut reader, &mut len) {
            Ok(0) => return Ok(()),
            Ok(4) => {}
            Ok(_) => {
                return Err(Error::input(format!(
                    "{shown}: truncated BSON at byte {offset}: not even a length"
                )))
            }
            Err(e) => return Err(Error::io(&format!("cannot read {shown}"), e)),
        }
        let size = i32::from_le_bytes(len);
        if size < 5 || size as usize > MAX_BSON {
            return Err(Error::input(format!(
                "{shown}: not a JSON or BSON dump (bad BSON length {size} at byte {offset})"
            )));
        }
        buf.clear();
        buf.extend_from_slice(&len);
        buf.resize(size as usize, 0);
        let got = read_full(&mut reader, &mut buf[4..])
            .map_err(|e| Error::io(&format!("cannot read {shown}"), e))?;
        if got < size as usize - 4 {
            return Err(Error::input(format!(
                "{shown}: truncated BSON document at byte {offset}"
            )));
        }
        let parsed = Document::from_reader(&mut buf.as_slice())
            .map_err(|e| Error::input(format!("not a valid BSON document: {e}")));
        each(Place::Offset(offset), parsed);
        offset += size as u64;
    }
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
