//! The capture file: a versioned binary format of self-checking frames, its writer (bounded
//! buffering, rotation) and its reader (a rotated set in order, stopping cleanly at a torn tail).
//!
//! Layout: `MNTLEAK\0`, format version (u16 LE), header length (u32 LE), header, CRC32 of
//! version..header; then blocks, one per write. A block is a varint length, that many bytes of
//! frames and a CRC32 (LE) of everything before it in the block. A frame is a varint length of
//! (type + payload), a type byte and the payload. (Before format 4 there were no blocks, and each
//! frame ended in a CRC32 of its own.) See `wire.rs` for the payloads.

mod wire;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::model::{CaptureHeader, ContainerInfo, Record, Snapshot};

use wire::{BLOCKS_SINCE, Decoder, Encoder, MAX_BLOCK, PREAMBLE, PREFIX_LEN};
pub use wire::{FORMAT_VERSION, MAGIC, MAX_FRAME};

/// The writer flushes on its own beyond this much buffered data, so memory stays bounded. It
/// bounds a block too (but for one big record), and so what one damaged block loses.
const MAX_BUFFER: usize = 256 << 10;
/// How often `flush_if_due` writes: a SIGKILL loses at most this much.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// Containers re-emitted at the head of a rotated file; beyond this the oldest are dropped.
const MAX_PREAMBLE_CONTAINERS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error(
        "{}: write failed at byte {offset}: {source}; {records} records were safely written before it",
        path.display()
    )]
    Write {
        path: PathBuf,
        offset: u64,
        records: u64,
        source: io::Error,
    },
    #[error("{}: not an mntleak capture (bad magic at byte 0)", path.display())]
    Foreign { path: PathBuf },
    #[error(
        "{}: capture format version {version} (byte 8) is newer than this mntleak reads ({FORMAT_VERSION}); upgrade mntleak",
        path.display()
    )]
    NewerVersion { path: PathBuf, version: u16 },
    #[error("{}: corrupt capture at byte {offset}: {what}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{}: a {size}-byte record exceeds the frame limit of {MAX_FRAME} bytes", path.display())]
    TooLarge { path: PathBuf, size: usize },
    #[error(
        "{}: not part of the same capture run as {} (the headers differ); give one run's files, oldest first",
        path.display(), first.display()
    )]
    OtherRun { path: PathBuf, first: PathBuf },
    #[error("no capture files given")]
    NoFiles,
}

/// When to start a new file. `size: None` never rotates; `keep: None` keeps every old file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RotateOptions {
    pub size: Option<u64>,
    pub keep: Option<u32>,
}

/// `path.N`: the N-th most recent rotated file.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The rotated set of `path` that exists on disk, oldest first (`path.K ... path.1 path`).
pub fn rotated_set(path: &Path) -> Vec<PathBuf> {
    let mut old = Vec::new();
    let mut n = 1;
    while rotated_path(path, n).exists() {
        old.push(rotated_path(path, n));
        n += 1;
    }
    old.reverse();
    old.push(path.to_owned());
    old
}

pub struct CaptureWriter {
    path: PathBuf,
    header: CaptureHeader,
    rotate: RotateOptions,
    file: Option<File>,
    /// The file prefix of a file just opened, written with the first block.
    head: BytesMut,
    /// Whole frames not yet written: the next block.
    buf: BytesMut,
    /// What one write puts on disk (the head and a block), kept for its capacity.
    out: BytesMut,
    enc: Encoder,
    /// Bytes of the current file on disk.
    file_len: u64,
    /// Bytes of the header and re-emitted records at the head of the current file.
    preamble_len: u64,
    /// Records on disk in all files of this run.
    durable: u64,
    /// Records in `buf`.
    pending: u64,
    last_flush: Instant,
    /// What a rotated file starts with, so it replays alone.
    snapshot: Option<Snapshot>,
    containers: VecDeque<ContainerInfo>,
    /// A failed write poisons the writer: later calls return the same story.
    failed: Option<String>,
}

impl CaptureWriter {
    /// Creates (or truncates) `path` with mode 0600 and writes the header.
    pub fn create(
        path: impl AsRef<Path>,
        header: &CaptureHeader,
        rotate: RotateOptions,
    ) -> Result<Self, CaptureError> {
        let path = path.as_ref().to_owned();
        let mut w = Self {
            path,
            header: CaptureHeader {
                format_version: FORMAT_VERSION,
                ..header.clone()
            },
            rotate,
            file: None,
            head: BytesMut::new(),
            buf: BytesMut::with_capacity(64 << 10),
            out: BytesMut::with_capacity(64 << 10),
            enc: Encoder::default(),
            file_len: 0,
            preamble_len: 0,
            durable: 0,
            pending: 0,
            last_flush: Instant::now(),
            snapshot: None,
            containers: VecDeque::new(),
            failed: None,
        };
        w.open_file()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records written to disk so far (all files).
    pub fn records_written(&self) -> u64 {
        self.durable
    }

    fn open_file(&mut self) -> Result<(), CaptureError> {
        let io_err = |op, source| CaptureError::Io {
            path: self.path.clone(),
            op,
            source,
        };
        // O_NOFOLLOW: never write through a planted symlink; fchmod: a pre-existing file keeps
        // its old mode on O_TRUNC, so set it explicitly.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(|e| io_err("create the capture file", e))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_err("set mode 0600 on the capture file", e))?;
        self.file = Some(file);
        self.file_len = 0;
        self.enc.reset();
        self.buf.clear();
        self.head = wire::encode_header(&self.header, FORMAT_VERSION);
        let preamble: Vec<Record> = self
            .snapshot
            .iter()
            .map(|s| Record::Snapshot(s.clone()))
            .chain(self.containers.iter().map(|c| Record::Container(c.clone())))
            .collect();
        for rec in &preamble {
            self.enc.encode(rec, true, &mut self.buf);
        }
        // Preamble records are copies, not new records: they do not count.
        self.write_buf(0)?;
        self.preamble_len = self.file_len;
        Ok(())
    }

    /// Replaces the snapshot that a rotated file starts with (the caller's current view).
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        self.snapshot = Some(snapshot);
    }

    /// Buffers one record; writes when the buffer is full and rotates when the file is too big.
    pub fn write(&mut self, rec: &Record) -> Result<(), CaptureError> {
        self.check_failed()?;
        match rec {
            Record::Snapshot(s) => self.snapshot = Some(s.clone()),
            Record::Container(c) => {
                self.containers.retain(|k| k.id != c.id);
                if self.containers.len() >= MAX_PREAMBLE_CONTAINERS {
                    self.containers.pop_front();
                }
                self.containers.push_back(c.clone());
            }
            _ => {}
        }
        let before = self.buf.len();
        self.enc.encode(rec, false, &mut self.buf);
        let size = self.buf.len() - before;
        if size > MAX_FRAME {
            // Do not write a frame no reader would accept. Dictionary entries went with it, so
            // restart the dictionaries (the records before still resolve: they precede the reset).
            self.buf.truncate(before);
            self.enc.reset_with_frame(&mut self.buf);
            return Err(CaptureError::TooLarge {
                path: self.path.clone(),
                size,
            });
        }
        self.pending += 1;
        let size = self.file_len + self.buf.len() as u64;
        // A file holds at least half a limit of new records, so a snapshot bigger than the limit
        // cannot make every record rotate.
        if let Some(limit) = self.rotate.size
            && size >= limit
            && size - self.preamble_len >= limit / 2
        {
            self.flush()?;
            return self.rotate_now();
        }
        if self.buf.len() >= MAX_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes every buffered whole frame.
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        self.check_failed()?;
        let n = self.pending;
        self.write_buf(n)?;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Flushes if `FLUSH_INTERVAL` has passed since the last flush; says whether it did.
    pub fn flush_if_due(&mut self, now: Instant) -> Result<bool, CaptureError> {
        if now.duration_since(self.last_flush) >= FLUSH_INTERVAL {
            self.flush()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Flushes and syncs to disk; the end of a clean run.
    pub fn finish(mut self) -> Result<u64, CaptureError> {
        self.flush()?;
        if let Some(f) = &self.file {
            f.sync_all().map_err(|e| CaptureError::Io {
                path: self.path.clone(),
                op: "sync the capture file",
                source: e,
            })?;
        }
        Ok(self.durable)
    }

    fn check_failed(&self) -> Result<(), CaptureError> {
        match &self.failed {
            None => Ok(()),
            Some(msg) => Err(CaptureError::Write {
                path: self.path.clone(),
                offset: self.file_len,
                records: self.durable,
                source: io::Error::other(msg.clone()),
            }),
        }
    }

    /// Writes the buffered frames as one block (after the file prefix of a new file).
    fn write_buf(&mut self, records: u64) -> Result<(), CaptureError> {
        if self.buf.is_empty() && self.head.is_empty() {
            return Ok(());
        }
        let Some(file) = self.file.as_mut() else {
            // Only after a failed rotation, which poisoned the writer already.
            return Err(CaptureError::Write {
                path: self.path.clone(),
                offset: self.file_len,
                records: self.durable,
                source: io::Error::other("no capture file is open"),
            });
        };
        // One write per block: a SIGKILL leaves whole blocks, and at worst a torn last one.
        self.out.clear();
        self.out.extend_from_slice(&self.head);
        if !self.buf.is_empty() {
            wire::put_block(&mut self.out, &self.buf);
        }
        match file.write_all(&self.out) {
            Ok(()) => {
                self.file_len += self.out.len() as u64;
                self.durable += records;
                self.pending -= records;
                self.buf.clear();
                self.head.clear();
                Ok(())
            }
            Err(e) => {
                // Cut the file back to the last whole flush, so it ends on a frame boundary
                // (the reader copes with a torn tail anyway, so a failure here is harmless).
                let _ = file.set_len(self.file_len);
                self.failed = Some(e.to_string());
                self.buf.clear();
                self.head.clear();
                Err(CaptureError::Write {
                    path: self.path.clone(),
                    offset: self.file_len,
                    records: self.durable,
                    source: e,
                })
            }
        }
    }

    fn rotate_now(&mut self) -> Result<(), CaptureError> {
        let res = self.rotate_files();
        if let Err(e) = &res {
            // Half-rotated: stop writing rather than guess which file is which.
            self.failed.get_or_insert_with(|| e.to_string());
            self.file = None;
        }
        res
    }

    fn rotate_files(&mut self) -> Result<(), CaptureError> {
        self.file = None;
        let ren = |from: &Path, to: &Path| {
            std::fs::rename(from, to).map_err(|e| CaptureError::Io {
                path: from.to_owned(),
                op: "rotate the capture file",
                source: e,
            })
        };
        let mut highest = 0;
        while rotated_path(&self.path, highest + 1).exists() {
            highest += 1;
        }
        for n in (1..=highest).rev() {
            let from = rotated_path(&self.path, n);
            if self.rotate.keep.is_some_and(|k| n >= k) {
                let _ = std::fs::remove_file(&from);
            } else {
                ren(&from, &rotated_path(&self.path, n + 1))?;
            }
        }
        if self.rotate.keep == Some(0) {
            let _ = std::fs::remove_file(&self.path);
        } else {
            ren(&self.path.clone(), &rotated_path(&self.path, 1))?;
        }
        self.open_file()
    }
}

impl Drop for CaptureWriter {
    fn drop(&mut self) {
        if self.failed.is_none() && self.file.is_some() {
            let _ = self.flush();
        }
    }
}

/// One open file of the set being read.
struct Source {
    path: PathBuf,
    src: Box<dyn Read + Send>,
    buf: Vec<u8>,
    pos: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    chunk: usize,
    dec: Decoder,
    /// Skip preamble records (every file of a set but the first).
    skip_preamble: bool,
    /// Frames come in blocks (format 4 on).
    blocks: bool,
    /// Bytes of the current block's frames after `pos` (its CRC follows them); 0 between blocks.
    in_block: usize,
}

impl Source {
    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Makes at least `n` bytes available after `pos`, unless the file ends first.
    #[inline]
    fn fill(&mut self, n: usize) -> Result<bool, CaptureError> {
        // Almost always there already: only reading is out of line.
        if self.buf.len() - self.pos >= n {
            return Ok(true);
        }
        self.read_more(n)
    }

    #[inline(never)]
    fn read_more(&mut self, n: usize) -> Result<bool, CaptureError> {
        while self.buf.len() - self.pos < n {
            if self.eof {
                return Ok(false);
            }
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.base += self.pos as u64;
                self.pos = 0;
            }
            // Grow by what actually arrives, never by what a (possibly corrupt) length claims;
            // small reads first so tiny inputs stay cheap, up to 256 KiB for big files.
            let want = self.chunk;
            self.chunk = (self.chunk * 2).min(256 << 10);
            let old = self.buf.len();
            self.buf.resize(old + want, 0);
            let got = loop {
                match self.src.read(&mut self.buf[old..]) {
                    Ok(g) => break g,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.buf.truncate(old);
                        return Err(CaptureError::Io {
                            path: self.path.clone(),
                            op: "read the capture file",
                            source: e,
                        });
                    }
                }
            };
            self.buf.truncate(old + got);
            if got == 0 {
                self.eof = true;
            }
        }
        Ok(true)
    }

    fn corrupt(&self, offset: u64, what: impl Into<String>) -> CaptureError {
        CaptureError::Corrupt {
            path: self.path.clone(),
            offset,
            what: what.into(),
        }
    }

    /// Reads and checks the file prefix.
    fn header(&mut self) -> Result<CaptureHeader, CaptureError> {
        if !self.fill(8)? || self.buf[..8] != MAGIC {
            if self.buf.is_empty() {
                return Err(self.corrupt(0, "the file is empty"));
            }
            if self.buf.len() < 8 && MAGIC.starts_with(&self.buf) && !self.buf.is_empty() {
                return Err(self.corrupt(self.buf.len() as u64, "the file ends inside the header"));
            }
            return Err(CaptureError::Foreign {
                path: self.path.clone(),
            });
        }
        if !self.fill(PREFIX_LEN)? {
            return Err(self.corrupt(self.buf.len() as u64, "the file ends inside the header"));
        }
        let version = u16::from_le_bytes([self.buf[8], self.buf[9]]);
        if version > FORMAT_VERSION {
            return Err(CaptureError::NewerVersion {
                path: self.path.clone(),
                version,
            });
        }
        if version == 0 {
            return Err(self.corrupt(8, "format version 0"));
        }
        let len = u32::from_le_bytes([self.buf[10], self.buf[11], self.buf[12], self.buf[13]]);
        let len = len as usize;
        if len > wire::MAX_HEADER {
            return Err(self.corrupt(10, format!("header length {len} is implausible")));
        }
        if !self.fill(PREFIX_LEN + len + 4)? {
            return Err(self.corrupt(self.buf.len() as u64, "the file ends inside the header"));
        }
        let end = PREFIX_LEN + len;
        let crc = u32::from_le_bytes(self.buf[end..end + 4].try_into().expect("4 bytes"));
        if crc32fast::hash(&self.buf[8..end]) != crc {
            return Err(self.corrupt(end as u64, "header checksum mismatch"));
        }
        let h = wire::decode_header_body(&self.buf[PREFIX_LEN..end], version)
            .map_err(|e| self.corrupt(PREFIX_LEN as u64, format!("header: {e}")))?;
        self.dec.set_version(version);
        self.blocks = version >= BLOCKS_SINCE;
        self.pos = end + 4;
        Ok(h)
    }

    /// Reads the checksummed unit at `pos` (a block, or a frame before format 4: a varint length,
    /// that many bytes, and a CRC32 of both) into `buf` and checks it; `pos` stays at its start.
    fn checked_unit(&mut self, what: &str, max: usize) -> Result<Unit, CaptureError> {
        let start = self.offset();
        if !self.fill(1)? {
            return Ok(Unit::End);
        }
        let (len, vlen) = loop {
            let avail = &self.buf[self.pos..];
            match wire::parse_varint(avail) {
                Ok(Some(v)) => break v,
                Ok(None) => {
                    let have = avail.len();
                    if !self.fill(have + 1)? {
                        return Ok(Unit::Torn(start));
                    }
                }
                Err(e) => return Err(self.corrupt(start, e)),
            }
        };
        if len < 1 || len > max as u64 {
            return Err(self.corrupt(start, format!("{what} length {len} is implausible")));
        }
        let len = len as usize;
        let total = vlen + len + 4;
        if !self.fill(total)? {
            return Ok(Unit::Torn(start));
        }
        let unit = &self.buf[self.pos..self.pos + total];
        let crc = u32::from_le_bytes(unit[total - 4..].try_into().expect("4 bytes"));
        if crc32fast::hash(&unit[..total - 4]) != crc {
            return Err(self.corrupt(start, format!("{what} checksum mismatch")));
        }
        Ok(Unit::Whole { vlen, len })
    }

    /// The next frame of the open block, checked by the block's CRC: (type, body range in `buf`).
    fn block_frame(&mut self, start: u64) -> Result<(u8, Range<usize>), CaptureError> {
        let avail = &self.buf[self.pos..self.pos + self.in_block];
        let (len, vlen) = match wire::parse_varint(avail) {
            Ok(Some(v)) => v,
            Ok(None) => return Err(self.corrupt(start, "frame runs past the end of its block")),
            Err(e) => return Err(self.corrupt(start, e)),
        };
        if len < 1 || len > (avail.len() - vlen) as u64 {
            return Err(self.corrupt(start, format!("frame length {len} runs past its block")));
        }
        let total = vlen + len as usize;
        let ty = avail[vlen];
        let body = self.pos + vlen + 1..self.pos + total;
        self.pos += total;
        self.in_block -= total;
        if self.in_block == 0 {
            // Past the block's CRC, checked when it was opened.
            self.pos += 4;
        }
        Ok((ty, body))
    }

    /// The next record of this file (into `slot`, see [`Decoder::frame`]), its clean end, or
    /// where it ends inside a frame (inside a block, from format 4 on).
    fn next(&mut self, slot: &mut Record) -> Result<Next, CaptureError> {
        loop {
            if self.blocks && self.in_block == 0 {
                match self.checked_unit("block", MAX_BLOCK)? {
                    Unit::Whole { vlen, len } => {
                        self.pos += vlen;
                        self.in_block = len;
                    }
                    Unit::End => return Ok(Next::End),
                    Unit::Torn(at) => return Ok(Next::Torn(at)),
                }
            }
            let start = self.offset();
            let (ty, body) = if self.blocks {
                self.block_frame(start)?
            } else {
                match self.checked_unit("frame", MAX_FRAME)? {
                    Unit::Whole { vlen, len } => {
                        let at = self.pos + vlen;
                        self.pos = at + len + 4;
                        (self.buf[at], at + 1..at + len)
                    }
                    Unit::End => return Ok(Next::End),
                    Unit::Torn(at) => return Ok(Next::Torn(at)),
                }
            };
            let record =
                self.dec
                    .frame(ty, &self.buf[body], slot)
                    .map_err(|e| CaptureError::Corrupt {
                        path: self.path.clone(),
                        offset: start,
                        what: e,
                    })?;
            if record && !(self.skip_preamble && ty & PREAMBLE != 0) {
                return Ok(Next::Record);
            }
        }
    }
}

/// What [`Source::checked_unit`] found at its position.
enum Unit {
    /// The unit's length varint is `vlen` bytes long and gives `len`; its CRC follows.
    Whole {
        vlen: usize,
        len: usize,
    },
    End,
    /// The file ends inside the unit starting at this offset.
    Torn(u64),
}

enum Next {
    /// In the slot given.
    Record,
    End,
    /// The file ends inside the frame starting at this offset.
    Torn(u64),
}

/// Reads a capture, or a rotated set oldest first, as one stream of records: owned ones as an
/// iterator, or borrowed ones from [`CaptureReader::next_record`], which reuses their buffers.
pub struct CaptureReader {
    header: CaptureHeader,
    first: PathBuf,
    cur: Option<Source>,
    rest: VecDeque<PathBuf>,
    stopped: Option<(PathBuf, u64)>,
    done: bool,
    /// The record `next_record` lent out last, decoded over by the next one (boxed: taking it
    /// out while decoding moves a pointer, not the record).
    slot: Option<Box<Record>>,
}

impl CaptureReader {
    pub fn open(paths: &[PathBuf]) -> Result<Self, CaptureError> {
        let (first, rest) = paths.split_first().ok_or(CaptureError::NoFiles)?;
        let mut src = open_source(first, false)?;
        let header = src.header()?;
        Ok(Self {
            header,
            first: first.clone(),
            cur: Some(src),
            rest: rest.iter().cloned().collect(),
            stopped: None,
            done: false,
            slot: None,
        })
    }

    /// A capture held in memory (tests, the fuzzer); `name` is used in errors.
    pub fn from_bytes(name: impl Into<PathBuf>, data: Vec<u8>) -> Result<Self, CaptureError> {
        Self::from_reader(name, Box::new(io::Cursor::new(data)))
    }

    /// A capture from any byte stream; `name` is used in errors.
    pub fn from_reader(
        name: impl Into<PathBuf>,
        r: Box<dyn Read + Send>,
    ) -> Result<Self, CaptureError> {
        let name = name.into();
        let mut src = new_source(name.clone(), r, false);
        let header = src.header()?;
        Ok(Self {
            header,
            first: name,
            cur: Some(src),
            rest: VecDeque::new(),
            stopped: None,
            done: false,
            slot: None,
        })
    }

    pub fn header(&self) -> &CaptureHeader {
        &self.header
    }

    /// Where reading stopped because a file ended inside a record (file, byte offset of that
    /// record); `None` if every file ended cleanly (or reading is not finished).
    pub fn stopped_at(&self) -> Option<(PathBuf, u64)> {
        self.stopped.clone()
    }

    /// Decodes the next record into `slot`; false at the end.
    fn advance(&mut self, slot: &mut Record) -> Result<bool, CaptureError> {
        loop {
            let Some(src) = self.cur.as_mut() else {
                return Ok(false);
            };
            match src.next(slot)? {
                Next::Record => return Ok(true),
                Next::Torn(off) => {
                    self.stopped = Some((src.path.clone(), off));
                    self.cur = None;
                    return Ok(false);
                }
                Next::End => {
                    self.cur = None;
                    if let Some(p) = self.rest.pop_front() {
                        let mut s = open_source(&p, true)?;
                        // Rotated files of one run carry the same header (same clock offset):
                        // a file of another run would put events at wrong times.
                        if s.header()? != self.header {
                            return Err(CaptureError::OtherRun {
                                path: p,
                                first: self.first.clone(),
                            });
                        }
                        self.cur = Some(s);
                    }
                }
            }
        }
    }

    /// The next record, lent until the next call: the same stream as the iterator, decoded in
    /// place over the previous one (no allocation or copy per record).
    pub fn next_record(&mut self) -> Result<Option<&Record>, CaptureError> {
        let mut slot = self.slot.take().unwrap_or_else(|| Box::new(EMPTY_SLOT));
        let got = self.step(&mut slot);
        self.slot = Some(slot);
        Ok(if got? { self.slot.as_deref() } else { None })
    }

    /// The next record decoded into `slot`, over the record it holds (reusing its buffers); false
    /// at the end. For a caller that keeps its own slots, such as the replay reader thread.
    pub fn read_into(&mut self, slot: &mut Record) -> Result<bool, CaptureError> {
        self.step(slot)
    }

    fn step(&mut self, slot: &mut Record) -> Result<bool, CaptureError> {
        if self.done {
            return Ok(false);
        }
        match self.advance(slot) {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.done = true;
                Ok(false)
            }
            Err(e) => {
                // One error ends the stream: what follows a corrupt frame cannot be trusted.
                self.done = true;
                self.cur = None;
                Err(e)
            }
        }
    }
}

/// A placeholder slot, cheap to make: the first record decoded replaces it.
pub const EMPTY_SLOT: Record = Record::Lost {
    count: 0,
    first_ts_ns: 0,
    last_ts_ns: 0,
};

impl Iterator for CaptureReader {
    type Item = Result<Record, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut slot = EMPTY_SLOT;
        self.step(&mut slot)
            .map(|got| got.then_some(slot))
            .transpose()
    }
}

fn new_source(path: PathBuf, src: Box<dyn Read + Send>, skip_preamble: bool) -> Source {
    Source {
        path,
        src,
        buf: Vec::new(),
        pos: 0,
        base: 0,
        eof: false,
        chunk: 4096,
        dec: Decoder::default(),
        skip_preamble,
        blocks: false,
        in_block: 0,
    }
}

fn open_source(path: &Path, skip_preamble: bool) -> Result<Source, CaptureError> {
    let f = File::open(path).map_err(|e| CaptureError::Io {
        path: path.to_owned(),
        op: "open the capture",
        source: e,
    })?;
    Ok(new_source(path.to_owned(), Box::new(f), skip_preamble))
}

/// Encodes records into an in-memory capture (tests, the fuzzer's seeds), each record in a block
/// of its own: the bytes a writer flushing after every record puts on disk.
pub fn encode_to_vec(header: &CaptureHeader, records: &[Record]) -> Vec<u8> {
    let mut buf = wire::encode_header(header, FORMAT_VERSION);
    let mut enc = Encoder::default();
    let mut frames = BytesMut::new();
    for r in records {
        frames.clear();
        enc.encode(r, false, &mut frames);
        wire::put_block(&mut buf, &frames);
    }
    buf.to_vec()
}

/// Byte ranges of the checksummed units in `data` (after the header) as far as they parse:
/// blocks from format 4 on, frames before. `(start, end)`, the end after the CRC. For the fuzzer
/// (structure-aware mutations) and tests.
#[doc(hidden)]
pub fn frame_spans(data: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    if data.len() < PREFIX_LEN {
        return spans;
    }
    let hlen = u32::from_le_bytes([data[10], data[11], data[12], data[13]]) as usize;
    let mut pos = PREFIX_LEN.saturating_add(hlen).saturating_add(4);
    while pos < data.len() {
        let Ok(Some((len, vlen))) = wire::parse_varint(&data[pos..]) else {
            break;
        };
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(vlen + l + 4))
        else {
            break;
        };
        if len == 0 || end > data.len() {
            break;
        }
        spans.push((pos, end));
        pos = end;
    }
    spans
}

/// Recomputes the CRC of every block (or frame, before format 4) that parses, and of the header,
/// so that mutations reach the decoders behind the checksums.
#[doc(hidden)]
pub fn fix_checksums(data: &mut [u8]) {
    if data.len() >= PREFIX_LEN {
        let hlen = u32::from_le_bytes([data[10], data[11], data[12], data[13]]) as usize;
        let end = PREFIX_LEN.saturating_add(hlen);
        if end.saturating_add(4) <= data.len() {
            let crc = crc32fast::hash(&data[8..end]);
            data[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        }
    }
    for (s, e) in frame_spans(data) {
        let crc = crc32fast::hash(&data[s..e - 4]);
        data[e - 4..e].copy_from_slice(&crc.to_le_bytes());
    }
}
