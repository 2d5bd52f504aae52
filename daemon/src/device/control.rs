//! The device's local control endpoint, for `lanseed device reset | list |
//! channel NAME | delete ID | reload`: a Unix socket found from the store's
//! path (where, and who may use it: [`crate::control_socket`]). One JSON
//! request per line, one JSON answer.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::agent::Handle;
use crate::control_socket::{self, Access, ControlListener};

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

/// Serves the device socket.
pub async fn serve(root: PathBuf, agent: Handle, access: Access) -> anyhow::Result<()> {
    let listener = ControlListener::bind(&root, control_socket::DEVICE, "device agent", access)
        .await
        .inspect_err(|e| tracing::error!("{e}"))?;
    loop {
        let stream = listener.accept().await?;
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
    let stream =
        control_socket::connect(root, control_socket::DEVICE, "device agent", "device").await?;
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
