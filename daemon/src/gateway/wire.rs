//! What @capgo/capacitor-updater sends and expects, as Rust types: the
//! device's info object (every request carries it), and the answers.
//!
//! The info object (plugin 8.51, `createInfoObject` in
//! `android/src/main/java/ee/forgr/capacitor_updater/CapgoUpdater.java`,
//! the same fields in `ios/Sources/CapacitorUpdaterPlugin/CapgoUpdater.swift`):
//! `platform, device_id, app_id, custom_id, version_build, version_code,
//! version_os, version_name` (`builtin` on the builtin bundle),
//! `plugin_version, is_emulator, is_prod, install_source,
//! defaultChannel`, and `key_id` only when the app has a public key.
//! Requests add their own fields (`channel`, `action`, `manifest`, …).
//!
//! Every field is read defensively ([`Info::from_json`]): the body must be
//! a JSON object; `app_id` must be an app id and `device_id` a device id
//! of the devices table's alphabet; other strings are cut to
//! [`MAX_FIELD`] characters; numbers where strings were expected are
//! taken as their text; a missing or empty `version_name` reads as
//! `builtin`, an empty `defaultChannel` or `key_id` as none. Anything else is a `400` with `error` and
//! `message`, never a `5xx`.

use serde::Serialize;
use serde_json::{Map, Value};

use lanseed_protocol::release::{check_app_id, check_channel};
use lanseed_protocol::report::MAX_DEVICE_ID_LEN;

/// Longest string field kept (longer ones are refused).
pub const MAX_FIELD: usize = 256;

/// The device's info object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// App id.
    pub app_id: String,
    /// Device id.
    pub device_id: String,
    /// The version it runs (`builtin` for the builtin bundle).
    pub version_name: String,
    /// The native app's version.
    pub version_build: String,
    /// `ios` or `android` (as sent).
    pub platform: String,
    /// The channel the app asks for, if any.
    pub default_channel: Option<String>,
    /// The id of the app's Capgo public key, when it has one.
    pub key_id: Option<String>,
    /// The whole object, for request-specific fields.
    pub rest: Map<String, Value>,
}

/// A refused request: `400 {error, message}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BadRequest {
    /// Machine-readable code.
    pub error: &'static str,
    /// What was wrong, for people.
    pub message: String,
}

fn bad(error: &'static str, message: impl Into<String>) -> BadRequest {
    BadRequest {
        error,
        message: message.into(),
    }
}

/// The text of `key` in `obj`: strings as they are, numbers and booleans
/// as their text, `null` or missing as `None`.
pub fn text(obj: &Map<String, Value>, key: &'static str) -> Result<Option<String>, BadRequest> {
    let s = match obj.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(_) => return Err(bad("invalid_field", format!("{key} must be a string"))),
    };
    if s.chars().count() > MAX_FIELD {
        return Err(bad(
            "invalid_field",
            format!("{key} is longer than {MAX_FIELD} characters"),
        ));
    }
    Ok(Some(s))
}

/// Whether `id` may be a device id: 1..=64 of `[A-Za-z0-9._:+-]` (a UUID
/// on both platforms).
pub fn valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_DEVICE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'+'))
}

impl Info {
    /// Reads an info object from a request body.
    pub fn from_json(body: &[u8]) -> Result<Info, BadRequest> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| bad("invalid_json", format!("the body is not JSON: {e}")))?;
        match value {
            Value::Object(obj) => Info::from_object(obj),
            _ => Err(bad("invalid_json", "the body must be a JSON object")),
        }
    }

    /// Reads an info object from a JSON object (a body, a stats entry, a
    /// query string).
    pub fn from_object(obj: Map<String, Value>) -> Result<Info, BadRequest> {
        let app_id =
            text(&obj, "app_id")?.ok_or_else(|| bad("missing_app_id", "app_id is missing"))?;
        check_app_id(&app_id).map_err(|e| bad("invalid_app_id", e.to_string()))?;
        let device_id = text(&obj, "device_id")?
            .ok_or_else(|| bad("missing_device_id", "device_id is missing"))?;
        if !valid_device_id(&device_id) {
            return Err(bad(
                "invalid_device_id",
                "device_id must be 1 to 64 letters, digits or -_.:+",
            ));
        }
        let default_channel = text(&obj, "defaultChannel")?.filter(|c| !c.is_empty());
        if let Some(c) = &default_channel {
            check_channel(c).map_err(|e| bad("invalid_channel", e.to_string()))?;
        }
        Ok(Info {
            version_name: text(&obj, "version_name")?
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| super::choose::BUILTIN.to_owned()),
            version_build: text(&obj, "version_build")?.unwrap_or_default(),
            platform: text(&obj, "platform")?.unwrap_or_default(),
            key_id: text(&obj, "key_id")?.filter(|k| !k.is_empty()),
            app_id,
            device_id,
            default_channel,
            rest: obj,
        })
    }
}

/// One file of a manifest-mode answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ManifestEntry {
    /// Its path in the bundle; `.br` appended when the download is Brotli.
    pub file_name: String,
    /// SHA-256 (hex) of its final (decompressed) content.
    pub file_hash: String,
    /// Where to download it.
    pub download_url: String,
}

/// An update to offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Offer {
    /// The version string (see `choose::display_versions`).
    pub version: String,
    /// The zip (also in manifest mode: the plugin requires it).
    pub url: String,
    /// The zip's SHA-256 in hex, which the plugin checks.
    pub checksum: String,
    /// Encryption v2's session key, for encrypted releases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    /// Manifest (delta) mode: every file on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Vec<ManifestEntry>>,
}

/// A `200` answer that offers nothing: `{kind, error, message}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NoOffer {
    /// `up_to_date`, `blocked` or `failed`.
    pub kind: &'static str,
    /// Machine-readable code.
    pub error: &'static str,
    /// For people.
    pub message: String,
}

impl NoOffer {
    /// Nothing newer.
    pub fn up_to_date(message: impl Into<String>) -> NoOffer {
        NoOffer {
            kind: "up_to_date",
            error: "no_new_version_available",
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The info object of plugin 8.51 on Android (`createInfoObject`),
    /// with a key id.
    const ANDROID: &str = r#"{"platform":"android","device_id":"4e1f7a0c-8a3c-4b7e-9d2a-0c1b2a3d4e5f",
        "app_id":"com.example.app","custom_id":"","version_build":"1.0","version_code":"1",
        "version_os":"14","version_name":"builtin","plugin_version":"8.51.23","is_emulator":false,
        "is_prod":true,"install_source":"google_play","defaultChannel":"","key_id":"MIIBCgKCAQEA"}"#;

    #[test]
    fn the_plugins_info_object_reads() {
        let info = Info::from_json(ANDROID.as_bytes()).unwrap();
        assert_eq!(info.app_id, "com.example.app");
        assert_eq!(info.version_name, "builtin");
        assert_eq!(info.version_build, "1.0");
        assert_eq!(info.default_channel, None);
        assert_eq!(info.key_id.as_deref(), Some("MIIBCgKCAQEA"));
    }

    /// The iOS plugin's (`createInfoObject` in
    /// `ios/Sources/CapacitorUpdaterPlugin/CapgoUpdater+Latest.swift`, 8.51):
    /// no `install_source`, `action` and `channel` null, and `key_id` empty
    /// when the app has no public key.
    const IOS: &str = r#"{"platform":"ios","device_id":"9F1C2D3E-4B5A-4C6D-8E7F-0A1B2C3D4E5F",
        "app_id":"com.example.app","custom_id":"","version_build":"2.3","version_code":"23",
        "version_os":"18.1","version_name":"1.4.0","plugin_version":"8.51.23","is_emulator":false,
        "is_prod":true,"action":null,"channel":null,"defaultChannel":"beta","key_id":""}"#;

    #[test]
    fn the_ios_plugins_info_object_reads() {
        let info = Info::from_json(IOS.as_bytes()).unwrap();
        assert_eq!(info.platform, "ios");
        assert_eq!(info.version_name, "1.4.0");
        assert_eq!(info.default_channel.as_deref(), Some("beta"));
        assert_eq!(info.key_id, None);
        assert_eq!(text(&info.rest, "channel"), Ok(None));
    }

    #[test]
    fn hostile_bodies_are_400s_with_a_code() {
        let code = |body: &str| Info::from_json(body.as_bytes()).unwrap_err().error;
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(code("[]"), "invalid_json");
        assert_eq!(code(r#"{"device_id":"d"}"#), "missing_app_id");
        assert_eq!(
            code(r#"{"app_id":"not an app","device_id":"d"}"#),
            "invalid_app_id"
        );
        assert_eq!(code(r#"{"app_id":"com.a.b"}"#), "missing_device_id");
        assert_eq!(
            code(r#"{"app_id":"com.a.b","device_id":"a b"}"#),
            "invalid_device_id"
        );
        assert_eq!(
            code(r#"{"app_id":"com.a.b","device_id":{}}"#),
            "invalid_field"
        );
        let long = format!(
            r#"{{"app_id":"com.a.b","device_id":"d","version_name":"{}"}}"#,
            "x".repeat(300)
        );
        assert_eq!(code(&long), "invalid_field");
        assert_eq!(
            code(r#"{"app_id":"com.a.b","device_id":"d","defaultChannel":"../x"}"#),
            "invalid_channel"
        );
        // Numbers where strings are expected are their text.
        let info =
            Info::from_json(br#"{"app_id":"com.a.b","device_id":"d","version_build":10}"#).unwrap();
        assert_eq!(info.version_build, "10");
    }
}
