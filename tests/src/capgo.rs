//! Talking to the Capgo gateway as @capgo/capacitor-updater does: the
//! plugin's request bodies, and a small HTTP/1.1 client that sends the
//! `Host` header with the port (as OkHttp and URLSession do, so the links
//! the gateway gives back point at it).

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{Value, json};

/// The info object of plugin 8.51 on Android (`createInfoObject` in
/// `android/src/main/java/ee/forgr/capacitor_updater/CapgoUpdater.java`;
/// the iOS plugin's `createInfoObject` in
/// `ios/Sources/CapacitorUpdaterPlugin/CapgoUpdater.swift` sends the same
/// fields with `platform: "ios"`). `defaultChannel` is the config's
/// (empty by default); `key_id` is added only when the app has a public
/// key.
pub fn info(app: &str, device_id: &str, version_name: &str) -> Value {
    json!({
        "platform": "android",
        "device_id": device_id,
        "app_id": app,
        "custom_id": "",
        "version_build": "1.0.0",
        "version_code": "1",
        "version_os": "14",
        "version_name": version_name,
        "plugin_version": "8.51.23",
        "is_emulator": false,
        "is_prod": true,
        "install_source": "",
        "defaultChannel": "",
    })
}

/// A device id like the plugin's (a UUID), numbered.
pub fn device_id(n: u64) -> String {
    format!("5f0c2a9e-1b7d-4c3a-9e2f-{n:012}")
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Resp {
    /// The first header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}), status {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// `METHOD PATH` on `127.0.0.1:PORT` with `headers` and `body`, one
/// connection per request.
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    request_from(None, port, method, path, headers, body)
}

/// A device's own loopback address, `127.0.1.1` on (device `n`), as a
/// phone on a LAN has its own: the gateway bounds connections per address.
pub fn device_ip(n: usize) -> std::net::Ipv4Addr {
    let n = n as u32 % (254 * 254);
    std::net::Ipv4Addr::new(127, 0, 1 + (n / 254) as u8, 1 + (n % 254) as u8)
}

/// A TCP connection to `127.0.0.1:port`, from `source` when given.
pub fn connect_from(source: Option<std::net::Ipv4Addr>, port: u16) -> std::net::TcpStream {
    let to = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port);
    let Some(source) = source else {
        return std::net::TcpStream::connect(to).expect("connect to the gateway");
    };
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).expect("a socket");
    bind(&fd, &std::net::SocketAddrV4::new(source, 0)).expect("bind the device's address");
    connect(&fd, &to).expect("connect to the gateway");
    std::net::TcpStream::from(fd)
}

/// [`request`] from the address `source` (`None`: 127.0.0.1).
pub fn request_from(
    source: Option<std::net::Ipv4Addr>,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    request_on(
        connect_from(source, port),
        port,
        method,
        path,
        headers,
        body,
    )
}

/// [`request`] on a connection made already (e.g. inside a namespace).
pub fn request_on(
    mut s: std::net::TcpStream,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    parse(&raw)
}

/// Parses a whole HTTP/1.1 answer (with `Content-Length`, or to the end).
pub fn parse(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if let Some(n) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(n);
    }
    Resp {
        status,
        headers,
        body,
    }
}

/// `POST PATH` with a JSON body.
pub fn post(port: u16, path: &str, body: &Value) -> Resp {
    request(port, "POST", path, &[], body.to_string().as_bytes())
}

/// `GET` of a link the gateway gave (`http://host:port/path`): its path
/// on `port`.
pub fn get_link(port: u16, url: &str, headers: &[(&str, &str)]) -> Resp {
    get_link_from(None, port, url, headers)
}

/// [`get_link`] from the address `source`.
pub fn get_link_from(
    source: Option<std::net::Ipv4Addr>,
    port: u16,
    url: &str,
    headers: &[(&str, &str)],
) -> Resp {
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .expect("an absolute link");
    request_from(source, port, "GET", path, headers, b"")
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex_encode(&sha2::Sha256::digest(bytes))
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
