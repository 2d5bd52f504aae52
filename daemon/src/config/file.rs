//! Reading the config file: TOML tables of flag values, each value with
//! the line it came from, so that a mistake is reported where it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// Largest config file read (a config file is a few hundred bytes).
pub const MAX_BYTES: u64 = 1 << 20;

/// One value of a table, as the flag would get it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A string, a number (as written) or a date.
    One(String),
    /// `true` / `false`: a switch.
    Switch(bool),
    /// An array: a repeatable flag given several times.
    Many(Vec<String>),
}

/// `key = value` in a table, with its line (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key, as written.
    pub key: String,
    /// Its value.
    pub value: Value,
    /// The line it is on.
    pub line: usize,
}

/// A table: `[seed]`, `[node]`, `[store.gc]`… with its header's line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// Where `[name]` is (0 when the table has no header of its own).
    pub line: usize,
    /// Its entries, in file order.
    pub entries: Vec<Entry>,
}

/// A parsed config file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Tables by dotted name (`seed`, `node`, `store.gc`).
    pub tables: BTreeMap<String, Table>,
}

/// Why the config file cannot be used. Every variant names the file, and
/// where it can, the line and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is too large to be a config file.
    #[error("the config file {path} is larger than {MAX_BYTES} bytes; is it the right file?")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Not TOML.
    #[error("{path}:{line}: not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Where.
        line: usize,
        /// The parser's words.
        message: String,
    },
    /// A value outside any table.
    #[error(
        "{path}:{line}: `{key}` is outside any table; put it under [node] (flags every node shares) or under the command it is for, e.g. [seed]"
    )]
    Outside {
        /// The file.
        path: PathBuf,
        /// Where.
        line: usize,
        /// The key.
        key: String,
    },
    /// A table that is no command.
    #[error("{path}:{line}: [{table}] is not a lanseed command (tables: [node], {known})")]
    UnknownTable {
        /// The file.
        path: PathBuf,
        /// Where.
        line: usize,
        /// The table.
        table: String,
        /// The tables there are.
        known: String,
    },
    /// A key that is no flag of its table's command.
    #[error("{path}:{line}: unknown key `{key}` in [{table}]: {why}")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// Where.
        line: usize,
        /// The table.
        table: String,
        /// The key.
        key: String,
        /// What the table takes instead.
        why: String,
    },
    /// A value the flag does not take.
    #[error("{path}:{line}: bad value for `{key}` in [{table}]: {why}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// Where.
        line: usize,
        /// The table.
        table: String,
        /// The key.
        key: String,
        /// Why.
        why: String,
    },
}

/// Reads and parses the config file at `path`.
pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > MAX_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    parse(path, &text)
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Parses config text (read from `path`, for messages).
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
    let root = DeTable::parse(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        line: line_of(text, e.span().map_or(0, |s| s.start)),
        message: e.message().trim().to_owned(),
    })?;
    let mut file = ConfigFile {
        path: path.to_owned(),
        tables: BTreeMap::new(),
    };
    for (key, value) in root.get_ref() {
        let line = line_of(text, key.span().start);
        match value.get_ref() {
            DeValue::Table(t) => add_table(&mut file, text, key.get_ref(), line, t)?,
            _ => {
                return Err(ConfigError::Outside {
                    path: path.to_owned(),
                    line,
                    key: key.get_ref().to_string(),
                });
            }
        }
    }
    Ok(file)
}

fn add_table(
    file: &mut ConfigFile,
    text: &str,
    name: &str,
    line: usize,
    table: &DeTable<'_>,
) -> Result<(), ConfigError> {
    let mut entries = Vec::new();
    for (key, value) in table {
        let key_line = line_of(text, key.span().start);
        let key_name = key.get_ref().to_string();
        let bad = |why: &str| ConfigError::BadValue {
            path: file.path.clone(),
            line: key_line,
            table: name.to_owned(),
            key: key_name.clone(),
            why: why.to_owned(),
        };
        let value = match value.get_ref() {
            DeValue::Table(t) => {
                add_table(file, text, &format!("{name}.{key_name}"), key_line, t)?;
                continue;
            }
            DeValue::Boolean(b) => Value::Switch(*b),
            DeValue::Array(items) => Value::Many(
                items
                    .iter()
                    .map(|v| {
                        scalar(v.get_ref()).ok_or_else(|| {
                            bad("an array of plain values (strings or numbers) is expected")
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => Value::One(
                scalar(other)
                    .ok_or_else(|| bad("a string, number, boolean or array is expected"))?,
            ),
        };
        entries.push(Entry {
            key: key_name,
            value,
            line: key_line,
        });
    }
    entries.sort_by_key(|e| e.line);
    let t = file.tables.entry(name.to_owned()).or_default();
    t.line = line;
    t.entries.extend(entries);
    Ok(())
}

/// A plain value as the command line would spell it.
fn scalar(v: &DeValue<'_>) -> Option<String> {
    match v {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .ok()
            .map(|n| n.to_string()),
        DeValue::Float(f) => Some(f.as_str().to_owned()),
        DeValue::Datetime(d) => Some(d.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_entries_and_lines() {
        let text = "# lanseed\n[node]\nstore = \"/var/lib/lanseed\"\nlisten = [\"/ip4/0.0.0.0/tcp/4001\", \"/ip6/::/tcp/4001\"]\n\n[seed]\nmax-uploads = 4\nno-mdns = true\n\n[store.gc]\nkeep = 0x10\n";
        let f = parse(Path::new("l.toml"), text).unwrap();
        let node = &f.tables["node"];
        assert_eq!(node.line, 2);
        assert_eq!(
            node.entries[0],
            Entry {
                key: "store".into(),
                value: Value::One("/var/lib/lanseed".into()),
                line: 3
            }
        );
        assert_eq!(
            node.entries[1].value,
            Value::Many(vec![
                "/ip4/0.0.0.0/tcp/4001".into(),
                "/ip6/::/tcp/4001".into()
            ])
        );
        let seed = &f.tables["seed"];
        assert_eq!(seed.entries[0].value, Value::One("4".into()));
        assert_eq!(seed.entries[0].line, 7);
        assert_eq!(seed.entries[1].value, Value::Switch(true));
        assert_eq!(
            f.tables["store.gc"].entries[0].value,
            Value::One("16".into())
        );
    }

    #[test]
    fn mistakes_name_the_file_and_line() {
        let e = parse(Path::new("/etc/l.toml"), "[seed]\nlisten = [\n").unwrap_err();
        assert!(e.to_string().starts_with("/etc/l.toml:"), "{e}");
        let e = parse(Path::new("l.toml"), "store = \"x\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "l.toml:1: `store` is outside any table; put it under [node] (flags every node shares) or under the command it is for, e.g. [seed]"
        );
        let e = parse(Path::new("l.toml"), "[seed]\n\npeer = [[1]]\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("l.toml:3: bad value for `peer` in [seed]"),
            "{e}"
        );
    }
}
