//! How two spellings of one file are recognised.
//!
//! Workers rewrite relative paths against roots that depend on their
//! environment, so one file can be recorded as several strings. The
//! normal form used everywhere in dupcheck (scan, repair, export) is:
//! Unicode NFC, runs of `/` collapsed to one, `.` segments dropped and no
//! trailing `/`. `..` segments are kept as they are: resolving them
//! lexically is wrong when a folder is a symbolic link. Different mount
//! roots for one folder cannot be recognised from the strings alone.

use unicode_normalization::{is_nfc, UnicodeNormalization};

/// The normal form of a recorded path; see the module documentation.
pub fn normalize(path: &str) -> String {
    let composed: String = if is_nfc(path) {
        path.to_owned()
    } else {
        path.nfc().collect()
    };

    let absolute = composed.starts_with('/');
    let parts: Vec<&str> = composed
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();

    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// The last segment of a path, the name the aggregator keys its reports by.
pub fn base_name(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(at) => &trimmed[at + 1..],
        None => trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_meet() {
        let one = "/data/in/scan 01.jpg";
        for other in [
            "/data//in/scan 01.jpg",
            "/data/./in/scan 01.jpg",
            "//data/in///scan 01.jpg",
            "/data/in/scan 01.jpg/",
        ] {
            assert_eq!(normalize(other), normalize(one), "{other}");
        }
        assert_eq!(normalize("./in/a.png"), "in/a.png");
    }

    #[test]
    fn unicode_forms_meet() {
        let composed = "/d/caf\u{e9}.jpg";
        let decomposed = "/d/cafe\u{301}.jpg";
        assert_ne!(composed, decomposed);
        assert_eq!(normalize(composed), normalize(decomposed));
    }

    #[test]
    fn different_files_stay_apart() {
        assert_ne!(normalize("/a/x.jpg"), normalize("/b/x.jpg"));
        assert_ne!(normalize("/a/../b/x.jpg"), normalize("/b/x.jpg"));
    }

    #[test]
    fn base_names() {
        assert_eq!(base_name("/a/b/c.jpg"), "c.jpg");
        assert_eq!(base_name("c.jpg"), "c.jpg");
        assert_eq!(base_name("/a/b/"), "b");
    }
}
