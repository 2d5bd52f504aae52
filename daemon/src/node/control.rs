//! The node's local control endpoint, for `lanseed status`: a Unix socket
//! found from the store's path (where, and who may use it:
//! [`crate::control_socket`]). One JSON request per line, one JSON answer
//! per line: `{"cmd":"status"}` answers with the node's status.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use super::status::Status;
use crate::control_socket::{self, Access, ControlListener};

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

/// A cloneable handle that asks the node's event loop for its status
/// (the status page's way in; the control socket sends the same
/// [`Command`]).
#[derive(Clone)]
pub struct StatusHandle {
    commands: mpsc::Sender<Command>,
}

impl StatusHandle {
    /// A handle sending into the node's command queue.
    pub fn new(commands: mpsc::Sender<Command>) -> StatusHandle {
        StatusHandle { commands }
    }

    /// The node's status now, or `None` once the node has stopped.
    pub async fn status(&self) -> Option<Status> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Status(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// Binds the control socket of the node on `store`.
pub async fn bind(store: &Path, access: Access) -> anyhow::Result<ControlListener> {
    Ok(ControlListener::bind(store, control_socket::NODE, "node", access).await?)
}

/// Serves the control socket until the node goes away.
pub async fn serve(
    listener: ControlListener,
    commands: mpsc::Sender<Command>,
) -> anyhow::Result<()> {
    loop {
        let stream = listener.accept().await?;
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
    let stream = control_socket::connect(store, control_socket::NODE, "node", "seed").await?;
    let (read, mut write) = stream.into_split();
    // A refused client may find the socket closed before it has written;
    // the answer explains why.
    let _ = write.write_all(b"{\"cmd\":\"status\"}\n").await;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let reply: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
        anyhow::anyhow!("the node on store {} gave no status ({e})", store.display())
    })?;
    if let Some(e) = reply["error"].as_str() {
        anyhow::bail!("{e}");
    }
    Ok(reply)
}
