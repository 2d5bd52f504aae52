//! The device's local control endpoint: a Unix socket in the store
//! (`STORE/device.sock`) for `lanseed device reset | list | channel NAME |
//! delete ID | reload`. One JSON request per line, one JSON answer.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::agent::Handle;

/// A request on the device socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum DeviceRequest {
    /// Back to the builtin bundle.
    Reset,
    /// The bundles on the device.
    List,
    /// Follow another channel.
    Channel {
        /// The channel.
        name: String,
    },
    /// Delete a bundle.
    Delete {
        /// Its id.
        id: String,
    },
    /// Switch to the scheduled bundle now.
    Reload,
}

/// The socket path for the store at `root`.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join("device.sock")
}

/// Serves the device socket.
pub async fn serve(root: PathBuf, agent: Handle) -> anyhow::Result<()> {
    let path = socket_path(&root);
    if path.exists() && UnixStream::connect(&path).await.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot open {}: {e} (is another device agent running on this store?)",
            path.display()
        )
    })?;
    loop {
        let (stream, _) = listener.accept().await?;
        let agent = agent.clone();
        tokio::spawn(async move {
            let _ = answer(stream, agent).await;
        });
    }
}

async fn answer(stream: UnixStream, agent: Handle) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(64 << 10))
        .read_line(&mut line)
        .await?;
    let reply = match serde_json::from_str::<DeviceRequest>(&line) {
        Ok(req) => agent.control(req).await,
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    write.write_all(reply.to_string().as_bytes()).await?;
    write.write_all(b"\n").await?;
    Ok(())
}

/// Sends `req` to the device agent on the store at `root`.
pub async fn request(root: &Path, req: &DeviceRequest) -> anyhow::Result<serde_json::Value> {
    let path = socket_path(root);
    let stream = UnixStream::connect(&path).await.map_err(|e| {
        anyhow::anyhow!(
            "no lanseed device agent is running on store {} ({e}); start one with `lanseed device --store {} ...`",
            root.display(),
            root.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    write
        .write_all(serde_json::to_string(req)?.as_bytes())
        .await?;
    write.write_all(b"\n").await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let v: serde_json::Value = serde_json::from_str(&line)?;
    if let Some(e) = v["error"].as_str() {
        anyhow::bail!("{e}");
    }
    Ok(v)
}
