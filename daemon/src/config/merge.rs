//! Applying the config file to a command line, against clap's own command
//! tree: which table sets which flag, checking every key and value, and
//! the flags the file adds where neither the command line nor the
//! environment set them (flag > `LANSEED_<FLAG>` > file > default).

use std::ffi::{OsStr, OsString};

use clap::{Arg, ArgAction, Command};

use super::file::{ConfigError, ConfigFile, Entry, Value};

/// The commands the `[node]` table's flags are for. Not `dev`: its store
/// and key must never be a seeder's or a publisher's.
pub const NODE_COMMANDS: [&str; 2] = ["seed", "device"];
/// The commands every flag of which has an environment variable, and its
/// prefix (`dev`'s own, for the same reason).
pub const ENV_COMMANDS: [(&str, &str); 3] = [
    ("seed", "LANSEED_"),
    ("device", "LANSEED_"),
    ("dev", "LANSEED_DEV_"),
];
/// The table every node-running command reads.
pub const NODE_TABLE: &str = "node";
/// Flags no file may set.
const NOT_SETTABLE: [&str; 4] = ["help", "version", "config", "no_config"];

/// The environment variable of flag `--long`: `PREFIX<LONG>` (e.g.
/// `LANSEED_MAX_UPLOADS`), upper case, `-` as `_`.
pub fn env_name(prefix: &str, long: &str) -> String {
    format!("{prefix}{}", long.to_uppercase().replace('-', "_"))
}

/// `cmd` with an environment variable for every flag of the
/// [`ENV_COMMANDS`] that has none yet (`LANSEED_<FLAG>`, for `dev`
/// `LANSEED_DEV_<FLAG>`); a switch's variable is false when empty, `0`,
/// `false`, `no` or `off`.
pub fn with_env(mut cmd: Command) -> Command {
    for (name, prefix) in ENV_COMMANDS {
        cmd = cmd.mut_subcommand(name, |sub| {
            sub.mut_args(|a| {
                if !settable(&a) || a.get_env().is_some() {
                    return a;
                }
                let env = env_name(prefix, a.get_long().unwrap_or_default());
                let a = if takes_value(&a) {
                    a
                } else {
                    a.value_parser(clap::builder::FalseyValueParser::new())
                };
                a.env(env)
            })
        });
    }
    cmd
}

/// Whether a file may set `arg`: a flag with a long name.
pub fn settable(arg: &Arg) -> bool {
    arg.get_long().is_some() && !NOT_SETTABLE.contains(&arg.get_id().as_str())
}

fn takes_value(arg: &Arg) -> bool {
    arg.get_action().takes_values()
}

/// Every command path (`seed`, `store.gc`) with its command.
pub fn command_paths(cmd: &Command) -> Vec<(String, &Command)> {
    fn walk<'a>(prefix: &str, cmd: &'a Command, out: &mut Vec<(String, &'a Command)>) {
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let path = if prefix.is_empty() {
                sub.get_name().to_owned()
            } else {
                format!("{prefix}.{}", sub.get_name())
            };
            walk(&path, sub, out);
            out.push((path, sub));
        }
    }
    let mut out = Vec::new();
    walk("", cmd, &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The flag `key` names in `cmd` (`max-uploads` or `max_uploads`).
pub fn find_arg<'a>(cmd: &'a Command, key: &str) -> Option<&'a Arg> {
    let key = key.replace('_', "-");
    cmd.get_arguments()
        .find(|a| settable(a) && a.get_long() == Some(key.as_str()))
}

/// The command-line words that give `entry`'s value to `arg` (none for a
/// switch set to false), checked with the flag's own parser in `cmd`.
fn words(cmd: &Command, arg: &Arg, entry: &Entry) -> Result<Vec<OsString>, String> {
    let long = arg.get_long().unwrap_or_default();
    let values: Vec<String> = match (&entry.value, takes_value(arg)) {
        (Value::Switch(true), false) => return Ok(vec![format!("--{long}").into()]),
        (Value::Switch(false), false) => return Ok(Vec::new()),
        (_, false) => return Err(format!("--{long} is a switch: write true or false")),
        (Value::Switch(b), true) => vec![b.to_string()],
        (Value::One(s), true) => vec![s.clone()],
        (Value::Many(v), true) if matches!(arg.get_action(), ArgAction::Append) => v.clone(),
        (Value::Many(_), true) => {
            return Err(format!("--{long} takes one value, not a list"));
        }
    };
    let words: Vec<OsString> = values
        .iter()
        .map(|v| OsString::from(format!("--{long}={v}")))
        .collect();
    // The flag's own parser decides, in its own command: of the errors
    // that parse can give, those about the value are the file's.
    let check = cmd
        .clone()
        .no_binary_name(true)
        .try_get_matches_from(&words);
    match check {
        Err(e) if is_value_error(e.kind()) => Err(first_line(&e)),
        _ => Ok(words),
    }
}

fn is_value_error(kind: clap::error::ErrorKind) -> bool {
    use clap::error::ErrorKind as K;
    matches!(
        kind,
        K::InvalidValue
            | K::ValueValidation
            | K::InvalidUtf8
            | K::WrongNumberOfValues
            | K::TooManyValues
    )
}

fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// The command a table is for, or why there is none.
fn table_command<'a>(
    file: &ConfigFile,
    root: &'a Command,
    table: &str,
    line: usize,
) -> Result<Vec<&'a Command>, ConfigError> {
    if table == NODE_TABLE {
        return Ok(NODE_COMMANDS
            .iter()
            .filter_map(|n| root.find_subcommand(n))
            .collect());
    }
    let paths = command_paths(root);
    match paths.iter().find(|(p, _)| p == table) {
        Some((_, c)) => Ok(vec![*c]),
        None => Err(ConfigError::UnknownTable {
            path: file.path.clone(),
            line,
            table: table.to_owned(),
            known: paths
                .iter()
                .map(|(p, _)| format!("[{p}]"))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Checks every table, key and value of `file` against `root`.
pub fn validate(file: &ConfigFile, root: &Command) -> Result<(), ConfigError> {
    for (name, table) in &file.tables {
        let commands = table_command(file, root, name, table.line)?;
        for entry in &table.entries {
            let found: Vec<(&Command, &Arg)> = commands
                .iter()
                .filter_map(|c| find_arg(c, &entry.key).map(|a| (*c, a)))
                .collect();
            let Some((cmd, arg)) = found.first() else {
                let why = if name == NODE_TABLE {
                    "neither seed nor device has this flag (dev reads only [dev])".to_owned()
                } else {
                    format!(
                        "`lanseed {}` has no --{} (see `lanseed {} --help`)",
                        name.replace('.', " "),
                        entry.key,
                        name.replace('.', " ")
                    )
                };
                return Err(ConfigError::UnknownKey {
                    path: file.path.clone(),
                    line: entry.line,
                    table: name.clone(),
                    key: entry.key.clone(),
                    why,
                });
            };
            words(cmd, arg, entry).map_err(|why| ConfigError::BadValue {
                path: file.path.clone(),
                line: entry.line,
                table: name.clone(),
                key: entry.key.clone(),
                why,
            })?;
        }
    }
    Ok(())
}

/// The subcommand path `argv` runs (`["store", "gc"]`) and the index in
/// `argv` just after its last name, where the file's flags go.
fn subcommand_path(root: &Command, argv: &[OsString]) -> (Vec<String>, usize) {
    let mut cmd = root;
    let mut path = Vec::new();
    let mut at = 1;
    let mut i = 1;
    while i < argv.len() {
        let word = argv[i].to_string_lossy();
        if word == "--" {
            break;
        }
        if !word.starts_with('-')
            && let Some(sub) = cmd.find_subcommand(word.as_ref())
        {
            path.push(sub.get_name().to_owned());
            cmd = sub;
            at = i + 1;
        }
        i += 1;
    }
    (path, at)
}

/// Whether the command line already gives `arg`.
fn on_command_line(arg: &Arg, argv: &[OsString]) -> bool {
    let long = format!("--{}", arg.get_long().unwrap_or_default());
    let short = arg.get_short().map(|c| format!("-{c}"));
    argv.iter().map(|w| w.to_string_lossy()).any(|w| {
        w == long
            || w.strip_prefix(long.as_str())
                .is_some_and(|r| r.starts_with('='))
            || short
                .as_deref()
                .is_some_and(|s| w.starts_with(s) && !w.starts_with("--"))
    })
}

/// `argv` with the flags `file` sets for the command it runs, where the
/// command line does not give them and `env` (the environment) has no
/// value for them. Tables apply from the least to the most specific:
/// `[node]`, then each command of the path (`[device]`, `[device.reset]`).
pub fn apply(
    root: &Command,
    argv: &[OsString],
    file: &ConfigFile,
    env: &dyn Fn(&OsStr) -> Option<OsString>,
) -> Result<Vec<OsString>, ConfigError> {
    validate(file, root)?;
    let (path, at) = subcommand_path(root, argv);
    let Some(leaf) = path
        .iter()
        .try_fold(root, |c, name| c.find_subcommand(name))
    else {
        return Ok(argv.to_vec());
    };
    let mut tables = Vec::new();
    if path
        .first()
        .is_some_and(|p| NODE_COMMANDS.contains(&p.as_str()))
    {
        tables.push(NODE_TABLE.to_owned());
    }
    for n in 1..=path.len() {
        tables.push(path[..n].join("."));
    }
    // The most specific table's value of each flag wins.
    let mut chosen: Vec<(&Arg, &Entry, &str)> = Vec::new();
    for name in &tables {
        let Some(table) = file.tables.get(name) else {
            continue;
        };
        for entry in &table.entries {
            let Some(arg) = find_arg(leaf, &entry.key) else {
                continue;
            };
            chosen.retain(|(a, _, _)| a.get_id() != arg.get_id());
            chosen.push((arg, entry, name));
        }
    }
    let mut added = Vec::new();
    for (arg, entry, table) in chosen {
        if on_command_line(arg, argv) || arg.get_env().and_then(env).is_some() {
            continue;
        }
        added.extend(
            words(leaf, arg, entry).map_err(|why| ConfigError::BadValue {
                path: file.path.clone(),
                line: entry.line,
                table: table.to_owned(),
                key: entry.key.clone(),
                why,
            })?,
        );
    }
    let mut out = argv[..at].to_vec();
    out.extend(added);
    out.extend_from_slice(&argv[at..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::parse;
    use clap::CommandFactory;
    use std::path::Path;

    fn root() -> Command {
        with_env(crate::cli::Cli::command())
    }

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn no_env(_: &OsStr) -> Option<OsString> {
        None
    }

    #[test]
    fn flag_beats_environment_beats_file_beats_default() {
        let file = parse(
            Path::new("l.toml"),
            "[node]\nstore = \"/node\"\nmax-uploads = 3\n[seed]\nstore = \"/seed\"\nno-mdns = true\n",
        )
        .unwrap();
        let root = root();
        let run = |argv: &[&str], env: &dyn Fn(&OsStr) -> Option<OsString>| {
            let argv = apply(&root, &args(argv), &file, env).unwrap();
            let mut words: Vec<String> = argv
                .iter()
                .map(|w| w.to_string_lossy().into_owned())
                .collect();
            // The order of the file's flags does not matter.
            words[2..].sort();
            words
        };
        // The file: [seed] over [node], [node] where [seed] says nothing.
        assert_eq!(
            run(&["lanseed", "seed"], &no_env),
            [
                "lanseed",
                "seed",
                "--max-uploads=3",
                "--no-mdns",
                "--store=/seed"
            ]
        );
        // A flag on the command line wins.
        assert_eq!(
            run(&["lanseed", "seed", "--store", "/cli"], &no_env),
            [
                "lanseed",
                "seed",
                "--max-uploads=3",
                "--no-mdns",
                "--store",
                "/cli"
            ]
        );
        // The environment wins over the file.
        let env = |k: &OsStr| (k == "LANSEED_MAX_UPLOADS").then(|| OsString::from("9"));
        assert_eq!(
            run(&["lanseed", "seed"], &env),
            ["lanseed", "seed", "--no-mdns", "--store=/seed"]
        );
        // [node] applies to device too; [seed] does not.
        let device = run(&["lanseed", "device", "--app", "a"], &no_env);
        assert!(device.contains(&"--store=/node".to_owned()), "{device:?}");
        assert!(!device.iter().any(|w| w == "--no-mdns"));
        // The dev loop never takes a seeder's store or a publisher's key:
        // not from [node], not from LANSEED_STORE or LANSEED_KEY.
        assert_eq!(run(&["lanseed", "dev"], &no_env), ["lanseed", "dev"]);
        let dev = root.find_subcommand("dev").unwrap();
        for (flag, env) in [("store", "LANSEED_DEV_STORE"), ("key", "LANSEED_DEV_KEY")] {
            let arg = find_arg(dev, flag).unwrap();
            assert_eq!(arg.get_env().unwrap(), env);
        }
        // And the result parses, with the values where they belong.
        let argv = apply(&root, &args(&["lanseed", "seed"]), &file, &no_env).unwrap();
        let m = root.clone().try_get_matches_from(argv).unwrap();
        let (_, seed) = m.subcommand().unwrap();
        assert_eq!(seed.get_raw("store").unwrap().next().unwrap(), "/seed");
    }

    #[test]
    fn unknown_keys_tables_and_bad_values_name_file_line_and_key() {
        let root = root();
        let err = |text: &str| {
            validate(
                &parse(Path::new("/etc/lanseed/lanseed.toml"), text).unwrap(),
                &root,
            )
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            err("[seed]\nmax-uploads = 2\nfolow = \"app\"\n"),
            "/etc/lanseed/lanseed.toml:3: unknown key `folow` in [seed]: `lanseed seed` has no --folow (see `lanseed seed --help`)"
        );
        let e = err("[seed]\n\nmax-uploads = \"many\"\n");
        assert!(
            e.starts_with("/etc/lanseed/lanseed.toml:3: bad value for `max-uploads` in [seed]: invalid value 'many'"),
            "{e}"
        );
        assert!(
            err("[sede]\n")
                .starts_with("/etc/lanseed/lanseed.toml:1: [sede] is not a lanseed command")
        );
        assert!(err("[node]\npack = 1\n").contains("neither seed nor device"));
        assert!(err("[seed]\nno-mdns = \"yes\"\n").contains("is a switch"));
        assert!(err("[seed]\nstore = [\"a\", \"b\"]\n").contains("takes one value"));
    }

    /// Every flag of `seed` and `device`, from clap's command tree, set
    /// from the file alone: the value reaches the flag.
    #[test]
    fn every_flag_of_seed_and_device_is_settable_from_the_file() {
        let root = root();
        // A value each flag's parser takes: the first that passes.
        let candidates = [
            "1",
            "127.0.0.1:8787",
            "/ip4/127.0.0.1/tcp/4001",
            "10ms",
            "production",
            "a.b",
            "/tmp/x",
            "immediate",
            "02:00-04:00",
            "50",
            "true",
        ];
        let mut checked = 0;
        for name in ["seed", "device"] {
            let cmd = root.find_subcommand(name).unwrap();
            for arg in cmd.get_arguments().filter(|a| settable(a)) {
                let long = arg.get_long().unwrap();
                let possible: Vec<String> = arg
                    .get_possible_values()
                    .iter()
                    .map(|p| p.get_name().to_owned())
                    .collect();
                let value = if !takes_value(arg) {
                    "true".to_owned()
                } else if let Some(p) = possible.first() {
                    format!("\"{p}\"")
                } else {
                    let v = candidates
                        .iter()
                        .find(|c| {
                            let e = Entry {
                                key: long.into(),
                                value: Value::One((**c).into()),
                                line: 1,
                            };
                            words(cmd, arg, &e).is_ok()
                        })
                        .unwrap_or_else(|| panic!("no sample value for {name} --{long}"));
                    format!("\"{v}\"")
                };
                let text = format!("[{name}]\n{long} = {value}\n");
                let file = parse(Path::new("l.toml"), &text).unwrap();
                let argv = apply(&root, &args(&["lanseed", name]), &file, &no_env)
                    .unwrap_or_else(|e| panic!("{name} --{long}: {e}"));
                let m = root.clone().ignore_errors(true).get_matches_from(&argv);
                let (_, sub) = m.subcommand().unwrap();
                assert_eq!(
                    sub.value_source(arg.get_id().as_str()),
                    Some(clap::parser::ValueSource::CommandLine),
                    "{name} --{long} not set from {text:?} ({argv:?})"
                );
                checked += 1;
            }
        }
        assert!(checked > 30, "{checked} flags");
    }
}
