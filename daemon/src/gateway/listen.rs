//! The gateway's accept loop, plain or TLS: bounded, so that hosts that
//! open connections and say nothing (or too many at once) cost seconds
//! and a bounded number of descriptors, never the node's.
//!
//! - At most [`MAX_CONNECTIONS`] connections at once, and
//!   [`MAX_PER_IP`] from one address; more are closed at once.
//! - A request's head must arrive within [`HEADER_TIMEOUT`], and so must
//!   the next request's on a kept-alive connection: an idle connection
//!   is closed after that long.
//! - TLS handshakes: within [`super::tls::HANDSHAKE_TIMEOUT`], at most
//!   [`super::tls::MAX_HANDSHAKES`] at once.
//! - At the stop, requests still running get [`super::GRACE`].
//!
//! Every connection's bytes are counted (`lanseed_http_bytes_total`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::tls::{HANDSHAKE_TIMEOUT, MAX_HANDSHAKES};
use crate::metrics::{CountedIo, Metrics};

/// Most connections at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Most connections at once from one address.
pub const MAX_PER_IP: usize = 64;
/// Longest wait for a request's head (and, kept alive, for the next).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections per address; a slot frees itself when dropped.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

struct Slot {
    ip: IpAddr,
    table: Arc<PerIp>,
}

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = t.entry(ip).or_default();
        if *n >= MAX_PER_IP {
            return None;
        }
        *n += 1;
        Some(Slot {
            ip,
            table: self.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections until `stop`, each served by `app` (over TLS with
/// `tls`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let per_ip = Arc::new(PerIp::default());
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => break,
        };
        while conns.try_join_next().is_some() {}
        let Ok((tcp, peer)) = accepted else {
            // Out of descriptors and the like: wait a little, go on.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            continue; // dropped: too many connections
        };
        let Some(slot) = per_ip.take(peer.ip()) else {
            continue; // dropped: too many from this address
        };
        let _ = tcp.set_nodelay(true);
        let tcp = CountedIo::new(tcp, metrics.clone());
        let (tls, handshakes, app, stop) =
            (tls.clone(), handshakes.clone(), app.clone(), stop.clone());
        conns.spawn(async move {
            let _held = (permit, slot);
            match tls {
                None => serve_one(tcp, app, stop).await,
                Some(acceptor) => {
                    let Ok(h) = handshakes.try_acquire_owned() else {
                        return; // too many handshakes at once
                    };
                    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                    drop(h);
                    if let Ok(Ok(tls)) = tls {
                        serve_one(tls, app, stop).await;
                    }
                }
            }
        });
    }
    // Requests still running get GRACE (each connection shuts down
    // gracefully on the stop), then the rest are cut.
    let _ = tokio::time::timeout(super::GRACE + Duration::from_millis(100), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.shutdown().await;
}

async fn serve_one<S>(io: S, app: Router, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(super::GRACE, conn).await;
        }
    }
}
