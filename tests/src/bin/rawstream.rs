//! `rawstream`: raw libp2p stream throughput between two processes, the
//! baseline for lanseed's own fetch.
//!
//! It builds exactly the transport stack the lanseed node uses
//! (`lanseed::transport`: TCP with `nodelay`, multistream-select `V1Lazy`,
//! noise, yamux with the node's bounded windows, a 20 s upgrade timeout;
//! no pnet), opens one yamux substream and
//! pushes bytes through it with no protocol, store or scheduling on top. What
//! lanseed's fetch achieves over the same loopback can then be read against
//! this ceiling: the gap is lanseed's own cost, not the transport's.
//!
//! There is no `Swarm` here: the boxed transport is polled directly and the
//! muxer is driven alongside the copy (yamux only moves bytes while the
//! connection is polled).
//!
//! ```text
//! cargo build --release -p lanseed-tests --bin rawstream
//! target/release/rawstream listen > /tmp/rs.out &
//! target/release/rawstream send "$(awk '/^ADDR/{print $2}' /tmp/rs.out)" 209715200
//! ```
//!
//! - `listen` prints `ADDR <multiaddr>/p2p/<peer id>`, accepts one connection
//!   and one inbound substream, discards everything until EOF, then prints
//!   `RECEIVED <bytes> <seconds>` (first byte read to EOF), then
//!   `CPU <transfer> <process>`: the CPU seconds it used from accepting
//!   the substream to the end, and in all (with its start-up and the
//!   connection's handshake).
//! - `send <multiaddr> <bytes>` writes `<bytes>` pseudo-random bytes on one
//!   outbound substream (`send-file <multiaddr> <path>...`: the files'
//!   bytes, one file after the other, each 64 KiB read just before it is
//!   written, as a seeder reads the pieces it sends), closes it and prints
//!   `SENT <bytes> <seconds> <MB/s>` (MB = 10^6 bytes). The time runs from the first write until the
//!   listener, having read EOF, closes its half of the substream: a yamux
//!   close only queues a frame, so that acknowledgement is what proves every
//!   byte arrived. Then `CPU <transfer> <process>`, from the substream's
//!   opening.

use std::future::{Future, poll_fn};
use std::io::Write as _;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use lanseed_tests::liar::conn::{dial, transport};
use libp2p::core::Transport as _;
use libp2p::core::muxing::{StreamMuxerBox, StreamMuxerExt as _};
use libp2p::core::transport::{ListenerId, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, identity};

/// One buffer, reused for every read and every write.
const BUF_SIZE: usize = 64 * 1024;

/// How long the sender waits for the listener's acknowledgement, and the
/// listener for its connection, before giving up.
const WAIT: Duration = Duration::from_secs(600);

/// This process's CPU seconds so far (every thread).
fn cpu_now() -> f64 {
    lanseed_tests::cpu_secs(std::process::id()).unwrap_or(f64::NAN)
}

/// Prints `CPU <transfer> <process>`: the CPU seconds this process used
/// from `start` (a [`cpu_now`] reading once the connection and its
/// substream were up) to now, then its whole CPU time (with its start-up
/// and the connection's handshake).
fn print_cpu(start: f64) {
    let now = cpu_now();
    println!("CPU {:.6} {now:.6}", now - start);
}

fn main() {
    if let Err(e) = run() {
        eprintln!("rawstream: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["listen"] => rt.block_on(listen()),
        ["send", addr, bytes] => {
            let addr: Multiaddr = addr
                .parse()
                .with_context(|| format!("invalid multiaddr {addr:?}"))?;
            let bytes: u64 = bytes
                .parse()
                .with_context(|| format!("invalid byte count {bytes:?}"))?;
            if bytes == 0 {
                // yamux sends a SYN only with a stream's first data, so the
                // FIN of an empty stream names a stream the listener never
                // saw, and it would wait forever.
                bail!("the byte count must be at least 1");
            }
            rt.block_on(send(addr, Source::Memory(bytes)))
        }
        ["send-file", addr, paths @ ..] if !paths.is_empty() => {
            let addr: Multiaddr = addr
                .parse()
                .with_context(|| format!("invalid multiaddr {addr:?}"))?;
            let mut files = Vec::new();
            for path in paths {
                let file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
                let len = file
                    .metadata()
                    .with_context(|| format!("reading {path}"))?
                    .len();
                files.push((file, len));
            }
            if files.iter().all(|(_, len)| *len == 0) {
                bail!("the files are empty: the stream needs at least 1 byte");
            }
            rt.block_on(send(addr, Source::Files(files)))
        }
        _ => {
            eprintln!(
                "usage: rawstream listen | rawstream send <multiaddr>/p2p/<peer id> <bytes>\n\
                 \x20      | rawstream send-file <multiaddr>/p2p/<peer id> <path>..."
            );
            std::process::exit(2);
        }
    }
}

async fn listen() -> anyhow::Result<()> {
    let key = identity::Keypair::generate_ed25519();
    let local = key.public().to_peer_id();
    // The lanseed node's transport (`lanseed::transport`), no pnet.
    let mut transport = transport(&key, None)?;
    transport
        .listen_on(ListenerId::next(), "/ip4/127.0.0.1/tcp/0".parse()?)
        .context("listening on 127.0.0.1")?;

    let accept = async {
        loop {
            match poll_fn(|cx| Pin::new(&mut transport).poll(cx)).await {
                TransportEvent::NewAddress { listen_addr, .. } => {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ADDR {}", listen_addr.with(Protocol::P2p(local)))?;
                    out.flush()?;
                }
                TransportEvent::Incoming { upgrade, .. } => {
                    return upgrade.await.context("upgrading the inbound connection");
                }
                TransportEvent::ListenerClosed { reason, .. } => {
                    bail!("listener closed before a connection arrived: {reason:?}")
                }
                TransportEvent::ListenerError { error, .. } => {
                    return Err(anyhow!(error).context("listener failed"));
                }
                _ => {}
            }
        }
    };
    let (_peer, mut muxer) = tokio::time::timeout(WAIT, accept)
        .await
        .context("no connection arrived")??;

    let mut stream = poll_fn(|cx| muxer.poll_inbound_unpin(cx))
        .await
        .context("accepting the inbound substream")?;
    let cpu_start = cpu_now();

    let (total, elapsed) = drive(&mut muxer, async {
        let mut buf = vec![0u8; BUF_SIZE];
        let mut total = 0u64;
        let mut first: Option<Instant> = None;
        loop {
            let n = stream
                .read(&mut buf)
                .await
                .context("reading the substream")?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            total += n as u64;
        }
        let elapsed = first.map_or(Duration::ZERO, |t| t.elapsed());
        // The sender's clock stops on this close: it is the acknowledgement.
        stream.close().await.context("closing the substream")?;
        Ok((total, elapsed))
    })
    .await?;

    println!("RECEIVED {total} {:.6}", elapsed.as_secs_f64());
    print_cpu(cpu_start);
    // A graceful close flushes the queued stream close before the socket goes.
    poll_fn(|cx| muxer.poll_close_unpin(cx))
        .await
        .context("closing the connection")?;
    Ok(())
}

/// What `send` pushes: one buffer of pseudo-random bytes over and over
/// (always in the CPU's cache), or files read in buffer-sized chunks
/// just before each is written (from the page cache once it is warm),
/// which is what moving a real file costs a sender.
enum Source {
    /// This many pseudo-random bytes from one buffer.
    Memory(u64),
    /// These files' bytes (each with its length), one after the other.
    Files(Vec<(std::fs::File, u64)>),
}

async fn send(addr: Multiaddr, source: Source) -> anyhow::Result<()> {
    let bytes = match &source {
        Source::Memory(n) => *n,
        Source::Files(files) => files.iter().map(|(_, len)| len).sum(),
    };
    // `dial` checks the peer that answers against this id.
    if !matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        bail!("{addr} does not end in /p2p/<peer id>");
    }
    let key = identity::Keypair::generate_ed25519();
    let (_, mut muxer) = dial(&addr, &key, None)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let mut stream = poll_fn(|cx| muxer.poll_outbound_unpin(cx))
        .await
        .context("opening the outbound substream")?;

    let mut buf = pseudo_random(BUF_SIZE);
    let cpu_start = cpu_now();
    let start = Instant::now();
    drive(&mut muxer, async {
        match &source {
            Source::Memory(n) => {
                let mut left = *n;
                while left > 0 {
                    let n = left.min(BUF_SIZE as u64) as usize;
                    stream
                        .write_all(&buf[..n])
                        .await
                        .context("writing the substream")?;
                    left -= n as u64;
                }
            }
            Source::Files(files) => {
                use std::os::unix::fs::FileExt as _;
                for (file, len) in files {
                    let mut at = 0;
                    while at < *len {
                        let n = (len - at).min(BUF_SIZE as u64) as usize;
                        file.read_exact_at(&mut buf[..n], at)
                            .context("reading the file")?;
                        stream
                            .write_all(&buf[..n])
                            .await
                            .context("writing the substream")?;
                        at += n as u64;
                    }
                }
            }
        }
        stream.close().await.context("closing the substream")?;
        // The listener closes its half once it has read our EOF.
        let mut ack = [0u8; 1];
        let n = tokio::time::timeout(WAIT, stream.read(&mut ack))
            .await
            .context("the listener never acknowledged the end of the stream")?
            .context("waiting for the listener's acknowledgement")?;
        if n != 0 {
            bail!("the listener sent data instead of closing its half");
        }
        Ok(())
    })
    .await?;
    let secs = start.elapsed().as_secs_f64();

    println!(
        "SENT {bytes} {secs:.6} {:.1}",
        bytes as f64 / 1e6 / secs.max(f64::MIN_POSITIVE)
    );
    print_cpu(cpu_start);
    // The listener closes the connection; ours may already be gone.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        poll_fn(|cx| muxer.poll_close_unpin(cx)),
    )
    .await;
    Ok(())
}

/// Runs `fut` to completion while polling the muxer, which is what moves
/// yamux frames to and from the socket.
async fn drive<T>(
    muxer: &mut StreamMuxerBox,
    fut: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let mut fut = std::pin::pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        loop {
            match muxer.poll_unpin(cx) {
                // Only address changes, which do not matter here.
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => {
                    // The frames read just before the connection ended (a
                    // stream close, say) may have finished the work.
                    if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                        return Poll::Ready(out);
                    }
                    return Poll::Ready(Err(anyhow!(e).context("the connection failed")));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

/// `len` bytes from xorshift64, so nothing along the way can compress them.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
