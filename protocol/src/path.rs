//! The paths a bundle may contain.
//!
//! A [`BundlePath`] is relative, uses `/` between components, is valid
//! UTF-8, and can never name anything outside the bundle's directory: no
//! empty, `.` or `..` component, no leading `/`, no backslash, no NUL or
//! other control character. Every path that enters the system, from a
//! folder, a zip or a peer, goes through [`BundlePath::new`].

use std::fmt;

use crate::limits::MAX_PATH_LEN;

/// A normalized relative path inside a bundle.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BundlePath(String);

/// Why a path is not allowed in a bundle.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// The path is empty.
    #[error("empty path")]
    Empty,
    /// The path is too long.
    #[error("path `{0}…` is longer than {MAX_PATH_LEN} bytes")]
    TooLong(String),
    /// The path starts with `/`.
    #[error("path `{0}` is absolute")]
    Absolute(String),
    /// The path has an empty, `.` or `..` component.
    #[error("path `{0}` has an empty, `.` or `..` component")]
    BadComponent(String),
    /// The path has a backslash, NUL or control character.
    #[error("path `{0}` contains a backslash, NUL or control character")]
    BadCharacter(String),
}

impl BundlePath {
    /// Validates `path` as a bundle path.
    pub fn new(path: &str) -> Result<Self, PathError> {
        let shown = || path.escape_debug().to_string();
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        if path.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong(path.chars().take(60).collect()));
        }
        if path.starts_with('/') {
            return Err(PathError::Absolute(shown()));
        }
        if path.chars().any(|c| c == '\\' || c.is_control()) {
            return Err(PathError::BadCharacter(shown()));
        }
        if path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(PathError::BadComponent(shown()));
        }
        Ok(BundlePath(path.to_owned()))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path's components, for joining onto a local directory.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for p in [
            "index.html",
            "assets/app.js",
            "a/b/c/d.txt",
            "ünï/ø.css",
            "..a/b..",
        ] {
            assert_eq!(BundlePath::new(p).unwrap().as_str(), p);
        }
    }

    #[test]
    fn refuses_escapes_and_tricks() {
        let cases = [
            ("", PathError::Empty),
            ("/etc/passwd", PathError::Absolute("/etc/passwd".into())),
            ("../x", PathError::BadComponent("../x".into())),
            ("a/../../x", PathError::BadComponent("a/../../x".into())),
            ("a/./x", PathError::BadComponent("a/./x".into())),
            ("a//x", PathError::BadComponent("a//x".into())),
            ("a/", PathError::BadComponent("a/".into())),
            ("a\\..\\x", PathError::BadCharacter("a\\\\..\\\\x".into())),
            ("a\0b", PathError::BadCharacter("a\\0b".into())),
        ];
        for (path, want) in cases {
            assert_eq!(BundlePath::new(path).unwrap_err(), want, "{path:?}");
        }
        assert!(matches!(
            BundlePath::new(&"a".repeat(MAX_PATH_LEN + 1)),
            Err(PathError::TooLong(_))
        ));
    }
}
