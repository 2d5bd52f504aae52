//! The config file (TOML): where it is, reading it into the command line,
//! and `lanseed config check`.
//!
//! ```toml
//! [node]                      # flags seed and device share
//! store = "/var/lib/lanseed"
//! fleet-key = "/etc/lanseed/fleet.key"
//!
//! [seed]                      # one table per command
//! follow = ["com.example.kiosk"]
//! max-uploads = 4
//! ```
//!
//! Keys are the flags' long names. Precedence: a flag on the command line,
//! then its `LANSEED_<FLAG>` environment variable (`LANSEED_DEV_<FLAG>`
//! for `dev`, whose store and key must never be a seeder's or a
//! publisher's), then the file (the command's table over `[node]`; `dev`
//! reads only `[dev]`), then the default. Location: `--config
//! FILE` (or `LANSEED_CONFIG`); else `/etc/lanseed/lanseed.toml` when
//! running as root, `lanseed/lanseed.toml` in the user's config folder
//! otherwise, each only if it exists. `--no-config` (or
//! `LANSEED_NO_CONFIG=1`) reads none; the test suite sets it. The file is
//! checked whole on every run: an unknown table or key, or a value the
//! flag refuses, stops the command with the file, line and key.

pub mod file;
pub mod merge;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches};

use crate::cli::Cli;

/// The command tree the binary parses: the derive's, plus an environment
/// variable for every node flag ([`merge::with_env`]).
pub fn command() -> clap::Command {
    merge::with_env(Cli::command())
}

/// The default config file: `/etc/lanseed/lanseed.toml` as root, else
/// `lanseed/lanseed.toml` in the user's config folder.
pub fn default_path() -> Option<PathBuf> {
    if rustix::process::geteuid().is_root() {
        Some(PathBuf::from("/etc/lanseed/lanseed.toml"))
    } else {
        dirs::config_dir().map(|d| d.join("lanseed").join("lanseed.toml"))
    }
}

fn falsey(v: &OsStr) -> bool {
    matches!(
        v.to_string_lossy().to_ascii_lowercase().as_str(),
        "" | "0" | "false" | "no" | "off"
    )
}

/// The config file `argv` and the environment ask for: `Some((path,
/// explicit))`, or `None` for no file.
fn location(argv: &[OsString]) -> Option<(PathBuf, bool)> {
    let mut explicit = None;
    let mut no_config = false;
    let mut words = argv.iter().skip(1);
    while let Some(w) = words.next() {
        let w = w.to_string_lossy();
        if w == "--" {
            break;
        } else if w == "--no-config" {
            no_config = true;
        } else if w == "--config" {
            explicit = words.next().map(PathBuf::from);
        } else if let Some(p) = w.strip_prefix("--config=") {
            explicit = Some(PathBuf::from(p));
        }
    }
    if explicit.is_none() {
        explicit = std::env::var_os("LANSEED_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
    }
    if let Some(p) = explicit {
        return Some((p, true));
    }
    if no_config || std::env::var_os("LANSEED_NO_CONFIG").is_some_and(|v| !falsey(&v)) {
        return None;
    }
    default_path().filter(|p| p.exists()).map(|p| (p, false))
}

/// Parses the command line with the config file's flags added: clap's
/// own messages for the command line, one line naming file, line and key
/// for the file (then exit 1).
pub fn parse_cli() -> Cli {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cmd = command();
    let argv = match location(&argv) {
        None => argv,
        Some((path, _)) => {
            match file::read(&path)
                .and_then(|f| merge::apply(&cmd, &argv, &f, &|k| std::env::var_os(k)))
            {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            }
        }
    };
    let matches = cmd.try_get_matches_from(argv).unwrap_or_else(|e| e.exit());
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// `lanseed config check`: the file checked, then what each node command
/// would run with.
pub fn check(given: Option<&Path>, no_config: bool) -> anyhow::Result<()> {
    let path = match given {
        Some(p) => Some(p.to_owned()),
        None if no_config => None,
        None => default_path().filter(|p| p.exists()),
    };
    let Some(path) = path else {
        println!(
            "no config file: {} does not exist (or --no-config); every setting is a flag, LANSEED_<FLAG> or the default",
            default_path().map_or_else(|| "the default".into(), |p| p.display().to_string())
        );
        return Ok(());
    };
    let f = file::read(&path)?;
    let root = command();
    merge::validate(&f, &root)?;
    let mut out = format!("{}: ok\n", path.display());
    for (name, _) in merge::ENV_COMMANDS {
        let argv = merge::apply(
            &root,
            &[OsString::from("lanseed"), OsString::from(name)],
            &f,
            &|k| std::env::var_os(k),
        )?;
        out.push_str(&format!("\n[{name}]\n"));
        let from_file: Vec<String> = argv[2..]
            .iter()
            .filter_map(|w| {
                let w = w.to_string_lossy();
                Some(w.strip_prefix("--")?.split('=').next()?.to_owned())
            })
            .collect();
        let m = root.clone().ignore_errors(true).get_matches_from(&argv);
        let Some((_, sub)) = m.subcommand() else {
            continue;
        };
        let cmd = root.find_subcommand(name).expect("a node command");
        for arg in cmd.get_arguments().filter(|a| merge::settable(a)) {
            let id = arg.get_id().as_str();
            let long = arg.get_long().unwrap_or_default();
            let values: Vec<String> = sub
                .get_raw(id)
                .map(|v| v.map(|x| x.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let source = match sub.value_source(id) {
                Some(clap::parser::ValueSource::CommandLine)
                    if from_file.iter().any(|k| k == long) =>
                {
                    line_of(&f, name, long)
                }
                Some(clap::parser::ValueSource::EnvVariable) => {
                    format!(
                        "env {}",
                        arg.get_env()
                            .map(|e| e.to_string_lossy())
                            .unwrap_or_default()
                    )
                }
                Some(clap::parser::ValueSource::DefaultValue) => "default".into(),
                _ => continue,
            };
            out.push_str(&format!("  {long} = {} ({source})\n", values.join(", ")));
        }
    }
    // A closed pipe (`| head`) is not an error of the check.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    Ok(())
}

/// Where the file sets `key` for command `name` (its table over `[node]`).
fn line_of(f: &file::ConfigFile, name: &str, key: &str) -> String {
    for table in [name, merge::NODE_TABLE] {
        if let Some(e) = f
            .tables
            .get(table)
            .and_then(|t| t.entries.iter().find(|e| e.key.replace('_', "-") == key))
        {
            return format!("{}:{} [{table}]", f.path.display(), e.line);
        }
    }
    "file".into()
}
