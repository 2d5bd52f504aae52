//! What the liar holds and how it answers: an honest seeder of its store
//! (manifests and pieces read from it, packed as the node packs them),
//! unless its mode says to lie, and how.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::AsyncWriteExt as _;
use lanseed_protocol::limits::PIECE_SIZE;
use lanseed_protocol::pieces::{Bitfield, PieceMap, piece_offset};
use lanseed_protocol::wire::{self, Packed, Request, Response};
use lanseed_protocol::{BundleId, Hash, SignedRelease, Store};
use libp2p::PeerId;
use libp2p::core::muxing::SubstreamBox;
use serde_json::json;

use super::conn::{self, Stream};
use super::craft::{self, Frame};
use super::emit;

/// One release the liar holds, with what a `Have` about it needs.
#[derive(Clone, Debug)]
pub struct Held {
    /// The signed record.
    pub release: SignedRelease,
    /// Its canonical bytes, as announced.
    pub record: Vec<u8>,
    /// Number of pieces of its bundle (0 when the manifest is missing).
    pub pieces: u32,
    /// Every piece of its bundle, as a `GetPieces` names it.
    pub refs: Vec<([u8; 32], u32)>,
}

impl Held {
    /// The bundle id.
    pub fn bundle(&self) -> [u8; 32] {
        *self.release.release().bundle_id.0.as_bytes()
    }

    /// A `Have` for it: the record (or none), every piece claimed when
    /// `all`, nothing being fetched.
    /// A `Have` of this release: claiming every piece held (`all`), or
    /// none held and every piece being fetched (`fetching`), or neither.
    pub fn have(&self, with_record: bool, all: bool, fetching: bool) -> Request {
        let bits = if all {
            Bitfield::full(self.pieces)
        } else {
            Bitfield::new(self.pieces)
        };
        Request::Have {
            bundle: self.bundle(),
            release: if with_record {
                self.record.clone()
            } else {
                Vec::new()
            },
            bits: bits.as_bytes().to_vec(),
            fetching: if fetching {
                Bitfield::full(self.pieces)
            } else {
                Bitfield::new(self.pieces)
            }
            .as_bytes()
            .to_vec(),
        }
    }
}

/// The liar's store, read once at start (records) and on demand (bytes).
#[derive(Clone, Default)]
pub struct Holdings {
    store: Option<Store>,
    /// Every release of the store.
    pub held: Vec<Held>,
}

impl Holdings {
    /// Reads the store at `dir` (none: nothing held).
    pub fn open(dir: Option<&std::path::Path>) -> anyhow::Result<Holdings> {
        let Some(dir) = dir else {
            return Ok(Holdings::default());
        };
        let store = Store::open(dir)
            .map_err(|e| anyhow::anyhow!("cannot open the store {}: {e}", dir.display()))?;
        let mut held = Vec::new();
        for release in store.releases()? {
            let bundle = release.release().bundle_id;
            let map = store.read_manifest(&bundle).ok().map(|m| PieceMap::of(&m));
            let refs = map.as_ref().map_or_else(Vec::new, |map| {
                (0..map.len())
                    .map(|n| {
                        let at = map.locate(n);
                        (*map.blobs()[at.blob].entry.blake3.as_bytes(), at.index)
                    })
                    .collect()
            });
            held.push(Held {
                record: release.to_bytes(),
                release,
                pieces: map.map_or(0, |m| m.len()),
                refs,
            });
        }
        Ok(Holdings {
            store: Some(store),
            held,
        })
    }

    /// Every signed record.
    pub fn records(&self) -> Vec<Vec<u8>> {
        self.held.iter().map(|h| h.record.clone()).collect()
    }

    /// The canonical manifest bytes of `bundle`, as stored.
    pub fn manifest(&self, bundle: &[u8; 32]) -> Option<Vec<u8>> {
        let store = self.store.as_ref()?;
        std::fs::read(store.manifest_path(&BundleId(Hash::from_bytes(*bundle)))).ok()
    }

    /// The pieces asked for, concatenated; `None` when one is missing or
    /// they are more than one answer may hold.
    pub fn pieces(&self, asked: &[([u8; 32], u32)]) -> Option<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let store = self.store.as_ref()?;
        let mut out = Vec::new();
        for (blob, index) in asked {
            let mut f = std::fs::File::open(store.blob_path(&Hash::from_bytes(*blob))).ok()?;
            let size = f.metadata().ok()?.len();
            let start = piece_offset(*index);
            if start >= size {
                return None;
            }
            let len = (size - start).min(PIECE_SIZE) as usize;
            f.seek(SeekFrom::Start(start)).ok()?;
            let at = out.len();
            out.resize(at + len, 0);
            f.read_exact(&mut out[at..]).ok()?;
            if out.len() as u64 > wire::MAX_BATCH_BYTES {
                return None;
            }
        }
        Some(out)
    }

    /// The first record and bundle, and a blob, for crafted frames.
    pub fn material(&self) -> craft::Material {
        let mut m = craft::Material::junk();
        if let Some(h) = self.held.first() {
            m.record = h.record.clone();
            m.bundle = h.bundle();
            let blob = self
                .store
                .as_ref()
                .and_then(|s| s.read_manifest(&h.release.release().bundle_id).ok())
                .and_then(|man| man.files().first().map(|f| *f.blake3.as_bytes()));
            if let Some(b) = blob {
                m.blob = b;
            }
        }
        m
    }
}

/// How the `lie` mode lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum How {
    /// Pieces with bytes flipped, of the right length.
    WrongBytes,
    /// More bytes than asked, `raw_len` to match.
    ExtraBytes,
    /// The honest answer, one byte per `--trickle-ms`.
    Trickle,
    /// A frame length of `u32::MAX`, then bytes until the node stops
    /// reading.
    Endless,
    /// A manifest that does not hash to the bundle id asked for (the real
    /// one with one byte changed).
    BadManifest,
    /// Read the request, never answer, keep the stream open.
    Silent,
    /// Always `NotFound`.
    NotFound,
    /// A data answer whose declared body is 2^40 bytes long.
    HugeAnswer,
}

impl How {
    /// The `how` field of events.
    pub fn name(self) -> &'static str {
        match self {
            How::WrongBytes => "wrong-bytes",
            How::ExtraBytes => "extra-bytes",
            How::Trickle => "trickle",
            How::Endless => "endless",
            How::BadManifest => "bad-manifest",
            How::Silent => "silent",
            How::NotFound => "not-found",
            How::HugeAnswer => "huge-answer",
        }
    }

    /// Which requests it lies to unless told (`--on`).
    pub fn default_on(self) -> On {
        match self {
            How::WrongBytes | How::ExtraBytes => On::Pieces,
            How::BadManifest => On::Manifest,
            _ => On::All,
        }
    }
}

/// Which data requests a lie applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum On {
    /// `GetManifest` only.
    Manifest,
    /// `GetPieces` only.
    Pieces,
    /// Both.
    All,
}

/// How the liar answers requests.
pub enum Policy {
    /// As an honest seeder of its store.
    Honest,
    /// `lie`: `how`, on `on`, trickling every `trickle`.
    Lie {
        /// The lie.
        how: How,
        /// Which requests.
        on: On,
        /// Trickle pace.
        trickle: Duration,
    },
    /// `NotFound` to every data request (a lying `Have` peer).
    NotFound,
    /// `frames`: each request gets the next crafted answer; honest once
    /// they are all used.
    Frames {
        /// Which requests get them.
        on: On,
        /// The crafted answers.
        frames: Vec<Frame>,
        /// The next one.
        next: AtomicUsize,
        /// How long to watch what the node does with each.
        wait: Duration,
    },
}

/// Answers requests of a connection's inbound streams.
pub struct Server {
    /// What it holds.
    pub holdings: Holdings,
    /// How it answers.
    pub policy: Policy,
    /// Whether it accepts lines (`/lanseed/pieces/1`): requests one after
    /// the other on one stream, each answered (or lied to) in turn.
    pub lines: bool,
}

/// Streams kept open on purpose (`silent`, held frames) until exit.
pub static HELD_OPEN: std::sync::Mutex<Vec<Stream>> = std::sync::Mutex::new(Vec::new());

/// Keeps `s` open until the process ends.
pub fn hold(s: Stream) {
    HELD_OPEN.lock().unwrap_or_else(|e| e.into_inner()).push(s);
}

impl Server {
    /// Serves one inbound stream of `peer` (spawned per stream).
    pub fn serve(self: &Arc<Self>, raw: SubstreamBox, peer: PeerId, conn: conn::Conn) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.serve_stream(raw, peer, &conn).await {
                emit(
                    json!({"event": "inbound_error", "peer": peer.to_string(), "error": e.to_string()}),
                );
            }
        });
    }

    async fn serve_stream(
        &self,
        raw: SubstreamBox,
        peer: PeerId,
        conn: &conn::Conn,
    ) -> std::io::Result<()> {
        let (line, mut s) = conn::accept_any(raw, self.lines).await?;
        if line {
            emit(json!({"event": "line", "peer": peer.to_string()}));
        }
        loop {
            let bytes = match conn::read_request(&mut s).await {
                Ok(bytes) => bytes,
                // The node closed its line.
                Err(e) if line && e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            };
            let request = match wire::decode_request(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    emit(
                        json!({"event": "bad_request", "peer": peer.to_string(), "error": e.to_string()}),
                    );
                    return Ok(());
                }
            };
            match self.answer(s, request, peer, conn, line).await? {
                Some(back) => s = back,
                None => return Ok(()),
            }
        }
    }

    /// Answers `request` on `s` as the policy says; on a line (`line`),
    /// gives the stream back if it may carry the next request.
    async fn answer(
        &self,
        mut s: Stream,
        request: Request,
        peer: PeerId,
        conn: &conn::Conn,
        line: bool,
    ) -> std::io::Result<Option<Stream>> {
        let what = asked(&request, peer);
        if let Policy::Frames {
            on,
            frames,
            next,
            wait,
        } = &self.policy
        {
            let lied_to = match on {
                On::All => true,
                On::Manifest => matches!(request, Request::GetManifest { .. }),
                On::Pieces => matches!(request, Request::GetPieces { .. }),
            };
            if lied_to && let Some(f) = frames.get(next.fetch_add(1, Ordering::SeqCst)) {
                self.answer_frame(s, f, &what, *wait, conn).await?;
                return Ok(None);
            }
        }
        let (kind, lie) = match (&request, &self.policy) {
            (
                Request::GetManifest { .. },
                Policy::Lie {
                    how,
                    on: On::Manifest | On::All,
                    ..
                },
            ) => ("manifest", Some(*how)),
            (
                Request::GetPieces { .. },
                Policy::Lie {
                    how,
                    on: On::Pieces | On::All,
                    ..
                },
            ) => ("pieces", Some(*how)),
            (Request::GetManifest { .. }, _) => ("manifest", None),
            (Request::GetPieces { .. }, _) => ("pieces", None),
            _ => ("ack", None),
        };
        let honest = self.honest(&request);
        let how = match lie {
            None => {
                let bytes = craft::framed(&wire::encode_response(&honest));
                let r = write_answer(&mut s, &bytes, line).await;
                let how = match (&self.policy, kind) {
                    (Policy::NotFound, "manifest" | "pieces") => "not-found",
                    _ => "honest",
                };
                answered(
                    peer,
                    kind,
                    how,
                    conn::response_kind(&honest),
                    bytes.len(),
                    &r,
                );
                return Ok((line && r.is_ok()).then_some(s));
            }
            Some(how) => how,
        };
        let pieces = kind == "pieces";
        let (frame, answer): (Vec<u8>, &str) = match how {
            How::NotFound => (
                craft::framed(&wire::encode_response(&Response::NotFound)),
                "not_found",
            ),
            How::WrongBytes | How::ExtraBytes | How::BadManifest => {
                let lied = match (&honest, how) {
                    (Response::Pieces(p), How::WrongBytes) => {
                        let mut raw = p
                            .unpacked(usize::MAX)
                            .map(|c| c.into_owned())
                            .unwrap_or_default();
                        for i in (0..raw.len()).step_by(997) {
                            raw[i] ^= 0xa5;
                        }
                        Response::Pieces(Packed::compress(raw))
                    }
                    (Response::Pieces(p), How::ExtraBytes) => {
                        let mut raw = p
                            .unpacked(usize::MAX)
                            .map(|c| c.into_owned())
                            .unwrap_or_default();
                        raw.extend(std::iter::repeat_n(0x5a, 4096));
                        Response::Pieces(Packed::raw(raw))
                    }
                    (Response::Manifest(p), How::BadManifest) => {
                        let mut raw = p
                            .unpacked(usize::MAX)
                            .map(|c| c.into_owned())
                            .unwrap_or_default();
                        let mid = raw.len() / 2;
                        if let Some(b) = raw.get_mut(mid) {
                            *b ^= 0x01;
                        }
                        Response::Manifest(Packed::compress(raw))
                    }
                    // Nothing to lie about (not held): the honest answer.
                    _ => honest.clone(),
                };
                let kind = conn::response_kind(&lied);
                (craft::framed(&wire::encode_response(&lied)), kind)
            }
            How::HugeAnswer => {
                let head = craft::data_head(pieces, 1 << 20, 1 << 40);
                let mut body = head.clone();
                body.extend(std::iter::repeat_n(0u8, 1024));
                (craft::framed(&body), kind)
            }
            How::Silent => {
                answered(peer, kind, how.name(), "none", 0, &Ok(()));
                hold(s);
                return Ok(None);
            }
            How::Trickle => {
                let bytes = craft::framed(&wire::encode_response(&honest));
                let trickle = match &self.policy {
                    Policy::Lie { trickle, .. } => *trickle,
                    _ => Duration::from_secs(1),
                };
                let mut sent = 0;
                let mut result = Ok(());
                for b in &bytes {
                    let w = async {
                        s.write_all(std::slice::from_ref(b)).await?;
                        s.flush().await
                    };
                    if let Err(e) = w.await {
                        result = Err(e);
                        break;
                    }
                    sent += 1;
                    tokio::time::sleep(trickle).await;
                }
                if result.is_ok() {
                    result = s.close().await;
                }
                answered(
                    peer,
                    kind,
                    how.name(),
                    conn::response_kind(&honest),
                    sent,
                    &result,
                );
                return Ok(None);
            }
            How::Endless => {
                let mut sent = 4u64;
                let mut result = async {
                    s.write_all(&u32::MAX.to_le_bytes()).await?;
                    s.flush().await
                }
                .await;
                let chunk = vec![0x2au8; 64 << 10];
                while result.is_ok() && sent < u64::from(u32::MAX) {
                    result = async {
                        s.write_all(&chunk).await?;
                        s.flush().await
                    }
                    .await;
                    if result.is_ok() {
                        sent += chunk.len() as u64;
                    }
                }
                answered(peer, kind, how.name(), "endless", sent as usize, &result);
                return Ok(None);
            }
        };
        let r = write_answer(&mut s, &frame, line).await;
        answered(peer, kind, how.name(), answer, frame.len(), &r);
        Ok((line && r.is_ok()).then_some(s))
    }

    /// The honest answer to `request`.
    pub fn honest(&self, request: &Request) -> Response {
        match request {
            Request::Announce { .. } | Request::Have { .. } | Request::Report(_) => Response::Ack,
            Request::GetManifest { .. } if matches!(self.policy, Policy::NotFound) => {
                Response::NotFound
            }
            Request::GetPieces { .. } if matches!(self.policy, Policy::NotFound) => {
                Response::NotFound
            }
            Request::GetManifest { bundle } => match self.holdings.manifest(bundle) {
                Some(bytes) => Response::Manifest(Packed::compress(bytes)),
                None => Response::NotFound,
            },
            Request::GetPieces { pieces } => match self.holdings.pieces(pieces) {
                Some(bytes) => Response::Pieces(Packed::compress(bytes)),
                None => Response::NotFound,
            },
        }
    }

    /// Answers with crafted frame `f`, and watches the connection.
    async fn answer_frame(
        &self,
        mut s: Stream,
        f: &Frame,
        what: &str,
        wait: Duration,
        conn: &conn::Conn,
    ) -> std::io::Result<()> {
        let write = async {
            s.write_all(&f.bytes).await?;
            s.flush().await?;
            if f.half_close {
                s.close().await?;
            }
            std::io::Result::Ok(())
        };
        let written = tokio::time::timeout(wait, write).await;
        // The node's answer reader drops the stream either way, without a
        // word on it: the connection is what can be watched.
        let _ = tokio::time::timeout(wait, conn.closed()).await;
        let outcome = match written {
            _ if conn.is_closed() => "conn_lost",
            Ok(Ok(())) => "sent",
            Ok(Err(_)) => "reset",
            Err(_) => "timeout",
        };
        emit(json!({
            "event": "frame", "dir": "response", "name": f.name, "to": what,
            "bytes": f.bytes.len(), "outcome": outcome,
        }));
        if !f.half_close && outcome == "sent" {
            hold(s);
        }
        Ok(())
    }
}

/// Writes an answer; closes the stream after it unless it is a line.
async fn write_answer(s: &mut Stream, bytes: &[u8], line: bool) -> std::io::Result<()> {
    s.write_all(bytes).await?;
    s.flush().await?;
    if line {
        return Ok(());
    }
    s.close().await
}

/// Emits the `asked` event of a request; returns its kind.
fn asked(request: &Request, peer: PeerId) -> String {
    let peer = peer.to_string();
    let (what, detail) = match request {
        Request::Announce { releases } => ("announce", json!({"count": releases.len()})),
        Request::Have {
            bundle,
            release,
            bits,
            ..
        } => (
            "have",
            json!({"bundle": hex32(bundle), "record": !release.is_empty(), "bits_len": bits.len()}),
        ),
        Request::GetManifest { bundle } => ("manifest", json!({"bundle": hex32(bundle)})),
        Request::Report(r) => ("report", json!({"device": r.device_id})),
        Request::GetPieces { pieces } => (
            "pieces",
            json!({"count": pieces.len(), "first": pieces.first().map(|(b, i)| format!("{}:{i}", hex32(b)))}),
        ),
    };
    let mut ev = json!({"event": "asked", "what": what, "peer": peer});
    if let (Some(ev), Some(d)) = (ev.as_object_mut(), detail.as_object()) {
        ev.extend(d.clone());
    }
    emit(ev);
    what.to_owned()
}

fn answered(
    peer: PeerId,
    what: &str,
    how: &str,
    answer: &str,
    bytes: usize,
    result: &std::io::Result<()>,
) {
    emit(json!({
        "event": "answered", "peer": peer.to_string(), "what": what, "how": how,
        "answer": answer, "bytes": bytes,
        "result": match result { Ok(()) => "ok".to_owned(), Err(e) => format!("error: {e}") },
    }));
}

/// 64 hex digits.
pub fn hex32(b: &[u8; 32]) -> String {
    Hash::from_bytes(*b).to_hex()
}
