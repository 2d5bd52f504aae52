//! Which file of the active bundle answers a kiosk's HTTP request.
//!
//! The decision is pure, so it can be tested (and fuzzed) without a file
//! system: the caller says what exists through a callback.
//!
//! - The URL path is percent-decoded ([`decode_path`]); one that does not
//!   decode to UTF-8 is a bad request.
//! - Empty components are skipped (`//a` is `a`); a `.` or `..` component
//!   or a backslash is refused, so no answer ever comes from outside the
//!   bundle.
//! - A path that names a file gets that file.
//! - `/`, a folder, or an extension-less path that names nothing gets
//!   `index.html` when the bundle has one (client-side routing, as single
//!   page app servers do); anything else is not found.

/// What a bundle-relative path names, as the caller's file system says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A folder.
    Dir,
    /// Nothing (or nothing readable).
    Missing,
}

/// The answer to a request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// This file of the bundle: relative, `/`-separated, no empty, `.` or
    /// `..` component, and [`Kind::File`] by the caller's callback.
    File(String),
    /// The bundle's `index.html`, for client-side routing.
    Index,
    /// No file answers.
    NotFound,
    /// The path tries to leave the bundle (`.`, `..` or a backslash).
    Refused,
}

impl Resolved {
    /// The bundle-relative file to send, if any.
    pub fn file(&self) -> Option<&str> {
        match self {
            Resolved::File(p) => Some(p),
            Resolved::Index => Some(INDEX),
            Resolved::NotFound | Resolved::Refused => None,
        }
    }
}

/// The page served for `/` and for client-side routes.
pub const INDEX: &str = "index.html";

/// Resolves a decoded request `path` (as [`decode_path`] returns it)
/// against a bundle; `kind` says what a bundle-relative path names (`""` is
/// never asked: the root is a folder).
pub fn resolve(path: &str, kind: impl Fn(&str) -> Kind) -> Resolved {
    let mut rel = String::with_capacity(path.len());
    for c in path.split('/').filter(|c| !c.is_empty()) {
        if c == ".." || c == "." || c.contains('\\') {
            return Resolved::Refused;
        }
        if !rel.is_empty() {
            rel.push('/');
        }
        rel.push_str(c);
    }
    let found = if rel.is_empty() {
        Kind::Dir
    } else {
        kind(&rel)
    };
    if found == Kind::File {
        return Resolved::File(rel);
    }
    let last = path.rsplit('/').next().unwrap_or("");
    if (found == Kind::Dir || !last.contains('.')) && kind(INDEX) == Kind::File {
        return Resolved::Index;
    }
    Resolved::NotFound
}

/// Percent-decodes a URL path; `None` when the result is not UTF-8 or an
/// escape is not two hex digits. A `%` too close to the end to start an
/// escape is kept as it is.
pub fn decode_path(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            // Two hex digits, nothing else (`from_str_radix` alone would
            // take a sign: `%+1`).
            let hex = &bytes[i + 1..i + 3];
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            match u8::from_str_radix(hex, 16).ok()? {
                0 => return None, // no NUL in a path
                b => out.push(b),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_are_two_hex_digits_and_never_nul() {
        assert_eq!(decode_path("/a%20b").as_deref(), Some("/a b"));
        assert_eq!(decode_path("/%41%62").as_deref(), Some("/Ab"));
        assert_eq!(decode_path("/a%+1b"), None, "a sign is not a hex digit");
        assert_eq!(decode_path("/a%zzb"), None);
        assert_eq!(decode_path("/a%00b"), None, "no NUL");
        assert_eq!(decode_path("/%ff"), None, "not UTF-8");
    }

    /// A bundle of `index.html`, `assets/app.js`, `v1.2/` (a folder with a
    /// dot) and `v1.2/notes.txt`.
    fn kind(p: &str) -> Kind {
        match p {
            "index.html" | "assets/app.js" | "v1.2/notes.txt" => Kind::File,
            "assets" | "v1.2" => Kind::Dir,
            _ => Kind::Missing,
        }
    }

    #[test]
    fn paths_resolve_like_a_spa_server() {
        let file = |p: &str| Resolved::File(p.into());
        let cases = [
            ("/", Resolved::Index),
            ("", Resolved::Index),
            ("/index.html", file("index.html")),
            ("/assets/app.js", file("assets/app.js")),
            ("//assets///app.js", file("assets/app.js")),
            ("/assets/app.js/", file("assets/app.js")),
            ("/settings/profile", Resolved::Index),
            ("/assets", Resolved::Index),
            ("/assets/", Resolved::Index),
            ("/v1.2", Resolved::Index),
            ("/v1.3", Resolved::NotFound),
            ("/v1.3/", Resolved::Index),
            ("/assets/missing.js", Resolved::NotFound),
            ("/v1.2/notes.txt", file("v1.2/notes.txt")),
        ];
        for (path, want) in cases {
            assert_eq!(resolve(path, kind), want, "{path:?}");
        }
    }

    #[test]
    fn nothing_outside_the_bundle() {
        for path in [
            "/../etc/passwd",
            "/assets/../index.html",
            "/./index.html",
            "/..",
            "/a\\..\\b",
            "..",
        ] {
            assert_eq!(resolve(path, kind), Resolved::Refused, "{path:?}");
        }
    }

    #[test]
    fn no_index_html_means_not_found() {
        let bare = |p: &str| {
            if p == "app.js" {
                Kind::File
            } else {
                Kind::Missing
            }
        };
        assert_eq!(resolve("/", bare), Resolved::NotFound);
        assert_eq!(resolve("/route", bare), Resolved::NotFound);
        assert_eq!(resolve("/app.js", bare), Resolved::File("app.js".into()));
        assert_eq!(Resolved::Index.file(), Some("index.html"));
        assert_eq!(Resolved::Refused.file(), None);
    }

    #[test]
    fn percent_decoding() {
        let cases = [
            ("/a%20b", Some("/a b")),
            ("/%2e%2e/x", Some("/../x")),
            ("/caf%C3%A9", Some("/café")),
            ("/50%", Some("/50%")),
            ("/5%4", Some("/5%4")),
            ("/%zz", None),
            ("/%FF", None),
            ("/%C3", None),
        ];
        for (raw, want) in cases {
            assert_eq!(decode_path(raw).as_deref(), want, "{raw:?}");
        }
        // Decoding happens once: an encoded `..` is refused after it.
        assert_eq!(
            resolve(&decode_path("/%2e%2e/x").unwrap(), kind),
            Resolved::Refused
        );
    }
}
