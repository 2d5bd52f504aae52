//! The local control endpoint: a Unix socket in the store
//! (`STORE/control.sock`), so only users who can reach the store can talk
//! to the node. One JSON request per line, one JSON answer per line:
//! `{"cmd":"status"}` answers with the node's status.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::status::Status;

/// Name of the socket in the store directory.
pub const SOCKET: &str = "control.sock";

/// A request on the control socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ControlRequest {
    /// The node's status.
    Status,
}

/// What the node is asked to do by the control server.
pub enum Command {
    /// Reply with the status.
    Status(oneshot::Sender<Status>),
}

/// The socket path of the store at `store`.
pub fn socket_path(store: &Path) -> PathBuf {
    store.join(SOCKET)
}

/// Serves the control socket until the node goes away.
pub async fn serve(path: PathBuf, commands: mpsc::Sender<Command>) -> anyhow::Result<()> {
    // A socket left by a node that died is stale: nothing answers on it.
    if path.exists() && UnixStream::connect(&path).await.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the control socket {}: {e} (is another node running on this store?)",
            path.display()
        )
    })?;
    loop {
        let (stream, _) = listener.accept().await?;
        let commands = commands.clone();
        tokio::spawn(async move {
            let _ = answer(stream, commands).await;
        });
    }
}

async fn answer(stream: UnixStream, commands: mpsc::Sender<Command>) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(64 << 10))
        .read_line(&mut line)
        .await?;
    let reply = match serde_json::from_str::<ControlRequest>(&line) {
        Ok(ControlRequest::Status) => {
            let (tx, rx) = oneshot::channel();
            commands.send(Command::Status(tx)).await?;
            serde_json::to_string(&rx.await?)?
        }
        Err(e) => serde_json::json!({ "error": e.to_string() }).to_string(),
    };
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    Ok(())
}

/// Asks the node on `store` for its status.
pub async fn request_status(store: &Path) -> anyhow::Result<serde_json::Value> {
    let path = socket_path(store);
    let stream = UnixStream::connect(&path).await.map_err(|e| {
        anyhow::anyhow!(
            "no lanseed node is running on store {} ({e}); start one with `lanseed seed --store {}`",
            store.display(),
            store.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    write.write_all(b"{\"cmd\":\"status\"}\n").await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    Ok(serde_json::from_str(&line)?)
}
