//! What the demo reads from its nodes' logs (`RUST_LOG=lanseed=info`,
//! tracing's plain format): when each device fetched a bundle and from
//! whom (`transfer done`, with `from=PEER=BYTES,…`), and when it switched,
//! confirmed or rolled back (the updater's events, one JSON per line).
//! Pure parsing, so the report's figures are tested without a node.

use std::time::{Duration, SystemTime};

/// One fetch a node finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferDone {
    /// When (the log's clock).
    pub at: SystemTime,
    /// Bundle id.
    pub bundle: String,
    /// Bytes it lacked and got, verified.
    pub bytes: u64,
    /// Bytes received for it, as sent (compressed).
    pub wire_bytes: u64,
    /// Wire bytes by sending peer id.
    pub from: Vec<(String, u64)>,
}

/// An updater event of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When.
    pub at: SystemTime,
    /// Capgo's name: `set`, `appReady`, `updateFailed`, ….
    pub name: String,
    /// The bundle it is about.
    pub bundle: String,
}

/// What a log line says, for the demo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A fetch finished.
    Transfer(TransferDone),
    /// An updater event.
    Event(Event),
}

/// Reads one log line; `None` for lines the demo does not use.
pub fn parse(line: &str) -> Option<Line> {
    let line = strip_ansi(line);
    let mut words = line.split_whitespace();
    let at = humantime::parse_rfc3339(words.next()?).ok()?;
    let _level = words.next()?;
    let target = words.next()?;
    let rest = line.split_once(target)?.1.trim();
    if target == "lanseed::events:" {
        let json: serde_json::Value = serde_json::from_str(rest).ok()?;
        return Some(Line::Event(Event {
            at,
            name: json["event"].as_str()?.to_owned(),
            bundle: json["bundle"].as_str()?.to_owned(),
        }));
    }
    let fields = rest.strip_prefix("transfer done ")?;
    let field = |key: &str| {
        fields
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    };
    let from = match field("from")? {
        "-" => Vec::new(),
        list => list
            .split(',')
            .map(|pair| {
                let (peer, bytes) = pair.rsplit_once('=')?;
                Some((peer.to_owned(), bytes.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()?,
    };
    Some(Line::Transfer(TransferDone {
        at,
        bundle: field("bundle")?.to_owned(),
        bytes: field("bytes")?.parse().ok()?,
        wire_bytes: field("wire_bytes")?.parse().ok()?,
        from,
    }))
}

/// Every line of `text` the demo uses.
pub fn parse_all(text: &str) -> Vec<Line> {
    text.lines().filter_map(parse).collect()
}

/// Seconds from `start` to `at` (0 when `at` is earlier).
pub fn secs_since(start: SystemTime, at: SystemTime) -> f64 {
    at.duration_since(start)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// `s` without ANSI colour sequences.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "2026-12-02T02:03:04.500000Z";

    fn at() -> SystemTime {
        humantime::parse_rfc3339(T).unwrap()
    }

    #[test]
    fn a_transfer_line_names_who_sent_what() {
        let line = format!(
            "{T}  INFO lanseed::node: transfer done app=com.example.hello channel=production version=1.0.0 bundle=ab12 bytes=1234 wire_bytes=800 reused=0 secs=0.01 rate_mb_s=0.1 already=false from=12D3KooWA=500,12D3KooWB=300"
        );
        assert_eq!(
            parse(&line),
            Some(Line::Transfer(TransferDone {
                at: at(),
                bundle: "ab12".into(),
                bytes: 1234,
                wire_bytes: 800,
                from: vec![("12D3KooWA".into(), 500), ("12D3KooWB".into(), 300)],
            }))
        );
    }

    #[test]
    fn a_transfer_with_nothing_on_the_wire() {
        let line = format!(
            "{T}  INFO lanseed::node: transfer done bundle=ab bytes=0 wire_bytes=0 reused=0 from=-"
        );
        let Some(Line::Transfer(t)) = parse(&line) else {
            panic!("not parsed")
        };
        assert!(t.from.is_empty());
    }

    #[test]
    fn events_are_json_lines() {
        let line = format!(
            "\u{1b}[2m{T}\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m lanseed::events: {{\"event\":\"updateFailed\",\"bundle\":\"cd34\",\"version\":\"2.0.0\"}}"
        );
        assert_eq!(
            parse(&line),
            Some(Line::Event(Event {
                at: at(),
                name: "updateFailed".into(),
                bundle: "cd34".into(),
            }))
        );
    }

    #[test]
    fn other_lines_are_skipped() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("garbage"), None);
        assert_eq!(
            parse(&format!("{T}  INFO lanseed::node: node started peer_id=x")),
            None
        );
        // A transfer line missing a field is not half-read.
        assert_eq!(
            parse(&format!(
                "{T}  INFO lanseed::node: transfer done bundle=ab bytes=1"
            )),
            None
        );
        assert_eq!(parse_all("a\nb\n").len(), 0);
    }

    #[test]
    fn seconds_never_go_negative() {
        let t = at();
        assert_eq!(secs_since(t + Duration::from_secs(1), t), 0.0);
        assert_eq!(secs_since(t, t + Duration::from_millis(1500)), 1.5);
    }
}
