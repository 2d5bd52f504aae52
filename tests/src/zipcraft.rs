//! A raw zip writer for hostile test archives: every field is the test's
//! to choose, including the ones a well-behaved zip library refuses to
//! write (duplicate names, overlapping entries, lying sizes, symlinks).

use flate2::Compression;
use flate2::write::DeflateEncoder;
use std::io::Write;

/// One entry of a crafted zip.
#[derive(Clone, Debug, Default)]
pub struct Craft {
    /// The stored name, any bytes.
    pub name: Vec<u8>,
    /// The content.
    pub data: Vec<u8>,
    /// Deflate the content (else stored).
    pub deflate: bool,
    /// A compression method number to claim instead.
    pub method: Option<u16>,
    /// General-purpose flags (bit 0 = encrypted).
    pub flags: u16,
    /// Unix mode in the external attributes (e.g. 0o120777 for a symlink).
    pub unix_mode: Option<u32>,
    /// Uncompressed size to declare instead of the real one.
    pub declared_size: Option<u32>,
    /// Point this entry's central record at entry N's local header and
    /// data instead of writing its own (an overlapping entry).
    pub alias_of: Option<usize>,
}

impl Craft {
    /// A plain stored file.
    pub fn file(name: &str, data: &[u8]) -> Self {
        Craft {
            name: name.as_bytes().to_vec(),
            data: data.to_vec(),
            ..Craft::default()
        }
    }
}

/// Builds the zip's bytes.
pub fn craft_zip(entries: &[Craft]) -> Vec<u8> {
    struct Written {
        offset: u32,
        crc: u32,
        csize: u32,
        usize_: u32,
        method: u16,
    }
    let mut out = Vec::new();
    let mut written: Vec<Written> = Vec::new();
    for e in entries {
        if let Some(i) = e.alias_of {
            let w = &written[i];
            written.push(Written { ..*w });
            continue;
        }
        let mut crc = flate2::Crc::new();
        crc.update(&e.data);
        let (payload, method) = if e.deflate {
            let mut enc = DeflateEncoder::new(Vec::new(), Compression::new(9));
            enc.write_all(&e.data).unwrap();
            (enc.finish().unwrap(), 8u16)
        } else {
            (e.data.clone(), 0u16)
        };
        let method = e.method.unwrap_or(method);
        let w = Written {
            offset: out.len() as u32,
            crc: crc.sum(),
            csize: payload.len() as u32,
            usize_: e.declared_size.unwrap_or(e.data.len() as u32),
            method,
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&e.flags.to_le_bytes());
        out.extend_from_slice(&w.method.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0x21, 0]); // 1980-01-01 00:00
        out.extend_from_slice(&w.crc.to_le_bytes());
        out.extend_from_slice(&w.csize.to_le_bytes());
        out.extend_from_slice(&w.usize_.to_le_bytes());
        out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&e.name);
        out.extend_from_slice(&payload);
        written.push(w);
    }
    let cd_start = out.len() as u32;
    for (e, w) in entries.iter().zip(&written) {
        out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        out.extend_from_slice(&(3u16 << 8 | 20).to_le_bytes()); // made by Unix
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&e.flags.to_le_bytes());
        out.extend_from_slice(&w.method.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0x21, 0]);
        out.extend_from_slice(&w.crc.to_le_bytes());
        out.extend_from_slice(&w.csize.to_le_bytes());
        out.extend_from_slice(&w.usize_.to_le_bytes());
        out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attrs
        let default_mode = if e.name.ends_with(b"/") {
            0o040_755
        } else {
            0o100_644
        };
        let mode = e.unix_mode.unwrap_or(default_mode);
        out.extend_from_slice(&(mode << 16).to_le_bytes());
        out.extend_from_slice(&w.offset.to_le_bytes());
        out.extend_from_slice(&e.name);
    }
    let cd_len = out.len() as u32 - cd_start;
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&cd_len.to_le_bytes());
    out.extend_from_slice(&cd_start.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}
