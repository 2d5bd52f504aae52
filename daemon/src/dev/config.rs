//! The Capacitor project `lanseed dev` runs in: `appId` and `webDir` from
//! `capacitor.config.json`, or from `capacitor.config.ts` where the two
//! are plain string literals, in the current folder or the nearest one
//! above. Parsing is pure; [`find`] does the looking.

use std::path::{Path, PathBuf};

/// What the Capacitor config says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    /// The config file.
    pub file: PathBuf,
    /// `appId`.
    pub app: Option<String>,
    /// `webDir`, resolved against the config file's folder.
    pub web_dir: Option<PathBuf>,
}

/// Why the config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The JSON is not valid.
    #[error("{0} is not valid JSON: {1}")]
    Json(PathBuf, serde_json::Error),
}

/// The nearest Capacitor config from `start` up, if any.
pub fn find(start: &Path) -> Result<Option<Project>, ConfigError> {
    for dir in start.ancestors() {
        for name in ["capacitor.config.json", "capacitor.config.ts"] {
            let file = dir.join(name);
            if !file.is_file() {
                continue;
            }
            let text =
                std::fs::read_to_string(&file).map_err(|e| ConfigError::Read(file.clone(), e))?;
            let (app, web) = if name.ends_with(".json") {
                parse_json(&text).map_err(|e| ConfigError::Json(file.clone(), e))?
            } else {
                (ts_string(&text, "appId"), ts_string(&text, "webDir"))
            };
            return Ok(Some(Project {
                app,
                web_dir: web.map(|w| dir.join(w)),
                file,
            }));
        }
    }
    Ok(None)
}

/// `appId` and `webDir` of a `capacitor.config.json`.
pub fn parse_json(text: &str) -> Result<(Option<String>, Option<String>), serde_json::Error> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    let field = |k: &str| v[k].as_str().map(str::to_owned);
    Ok((field("appId"), field("webDir")))
}

/// The value of `key: 'literal'` (or `"literal"`) in a TypeScript config;
/// `None` when the key is absent or its value is not a plain string
/// literal (a template, a variable, a call).
pub fn ts_string(text: &str, key: &str) -> Option<String> {
    let mut rest = text;
    while let Some(at) = rest.find(key) {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + key.len()..];
        rest = after;
        // A whole identifier, not the tail of a longer one.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let after = after.strip_prefix(['\'', '"']).unwrap_or(after);
        let Some(value) = after.trim_start().strip_prefix(':') else {
            continue;
        };
        let value = value.trim_start();
        let quote = value.chars().next()?;
        if quote != '\'' && quote != '"' {
            return None;
        }
        let body = &value[1..];
        let end = body.find(quote)?;
        let literal = &body[..end];
        if literal.contains('\\') || literal.contains('\n') {
            return None;
        }
        return Some(literal.to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_configs() {
        let (app, web) =
            parse_json(r#"{"appId": "com.example.app", "appName": "x", "webDir": "dist"}"#)
                .unwrap();
        assert_eq!(app.as_deref(), Some("com.example.app"));
        assert_eq!(web.as_deref(), Some("dist"));
        assert_eq!(parse_json("{}").unwrap(), (None, None));
    }

    #[test]
    fn typescript_configs_with_plain_literals() {
        let ts = r#"
import type { CapacitorConfig } from '@capacitor/cli';
const config: CapacitorConfig = {
  appId: 'com.example.app',
  appName: "Example",
  webDir: "www/browser",
  myappIdExtra: 'nope',
};
export default config;
"#;
        assert_eq!(ts_string(ts, "appId").as_deref(), Some("com.example.app"));
        assert_eq!(ts_string(ts, "webDir").as_deref(), Some("www/browser"));
        assert_eq!(ts_string("appId: `com.${x}`", "appId"), None, "a template");
        assert_eq!(ts_string("appId: APP_ID,", "appId"), None, "a variable");
        assert_eq!(
            ts_string("'appId': 'quoted.key'", "appId").as_deref(),
            Some("quoted.key")
        );
        assert_eq!(ts_string("{}", "appId"), None);
    }

    #[test]
    fn the_nearest_config_above_wins_and_web_dir_is_resolved() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("capacitor.config.json"),
            r#"{"appId":"com.example.app","webDir":"dist"}"#,
        )
        .unwrap();
        let deep = dir.path().join("src/components");
        std::fs::create_dir_all(&deep).unwrap();
        let p = find(&deep).unwrap().unwrap();
        assert_eq!(p.app.as_deref(), Some("com.example.app"));
        assert_eq!(p.web_dir, Some(dir.path().join("dist")));
    }
}
