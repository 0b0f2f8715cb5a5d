//! Byte-level encoding shared by the writer and the reader: varints, frames, and the binary form
//! of each record. Strings and task identities are dictionary-coded so that an event costs a few
//! bytes; the dictionaries live in frames of their own, written before the first record using them.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::mem::size_of;
use std::ops::Bound;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::model::{
    Action, ContainerInfo, Event, Fd, KStr, MntNs, MountInfo, NamespaceListing, NamespaceState,
    ProcessState, Propagation, Record, ResolvedPath, Snapshot, Task, UnlinkCall,
};

pub const MAGIC: [u8; 8] = *b"MNTLEAK\0";
/// Bumped on any incompatible change; readers refuse newer files and read older ones.
/// 2: events may carry kernel-resolved paths (presence bits 3 and 4), each stored as the length
/// of the prefix it shares with the previous resolved path plus the rest (runc's are long and
/// unique, but share the container's rootfs prefix); version 1 files never set them, so they read
/// unchanged.
/// 3: a namespace listing ends with how long its read took (varint ns; see
/// `NamespaceListing`); older files read as an instant read.
/// 4: frames come in checksummed blocks, one per write (see `put_block`), and carry no CRC of
/// their own: on container churn the per-frame CRC was 12 % of the file. A `T_STRING_DELTA` names
/// the earlier string it extends, not always the previous one.
pub const FORMAT_VERSION: u16 = 4;
/// The first format whose frames come in blocks.
pub const BLOCKS_SINCE: u16 = 4;
/// The first format whose `T_STRING_DELTA` names its base string.
const STRING_BASES_SINCE: u16 = 4;
/// A frame larger than this is corruption (a snapshot of 100k mounts is a few MiB).
pub const MAX_FRAME: usize = 16 << 20;
/// A block holds what one flush wrote: under 256 KiB of buffered frames plus at most one record of
/// up to `MAX_FRAME` bytes (with its dictionary entries); anything bigger is corruption.
pub const MAX_BLOCK: usize = 2 * MAX_FRAME;
/// What one frame may decode to (strings are shared in the file but copied out per record, so a
/// crafted frame could otherwise expand a 16 MiB frame into terabytes).
pub const MAX_EXPANSION: usize = 256 << 20;
/// The header is small; anything bigger is corruption.
pub const MAX_HEADER: usize = 1 << 20;
/// Magic, version, header length.
pub const PREFIX_LEN: usize = 8 + 2 + 4;

// Frame types. `PREAMBLE` marks records re-emitted at the head of a rotated file so the file replays
// alone; a reader of the whole set skips them in every file but the first.
pub const T_STRING: u8 = 1;
/// A dictionary string as an earlier dictionary string (how many entries back from the previous
/// one, 0 for the previous one; from format 4 on, before always the previous one), the length of
/// the prefix it shares with that one, then the rest: container paths share long
/// `/var/lib/docker/overlay2/<id>/` prefixes, but a namespace listing interleaves them with
/// options and fs types, so the best base is seldom the string just before.
pub const T_STRING_DELTA: u8 = 4;
pub const T_TASK: u8 = 2;
pub const T_RESET: u8 = 3;
pub const T_SNAPSHOT: u8 = 10;
pub const T_EVENT: u8 = 11;
pub const T_LOST: u8 = 12;
pub const T_NSMOUNTS: u8 = 13;
pub const T_CONTAINER: u8 = 14;
pub const PREAMBLE: u8 = 0x80;

/// The writer restarts its dictionaries beyond these sizes, so memory stays bounded over days.
pub const WRITER_MAX_ENTRIES: usize = 1 << 16;
pub const WRITER_MAX_STRING_BYTES: usize = 8 << 20;
/// The reader refuses dictionaries beyond these (a writer never gets there).
pub const READER_MAX_ENTRIES: usize = 1 << 20;
pub const READER_MAX_STRING_BYTES: usize = 64 << 20;

pub fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Decodes a varint at the start of `b`: `Ok(None)` if `b` ends inside it.
#[inline]
pub fn parse_varint(b: &[u8]) -> Result<Option<(u64, usize)>, &'static str> {
    // Most numbers of a record (indexes, deltas, flags) fit in one byte.
    if let Some(&first) = b.first()
        && first < 0x80
    {
        return Ok(Some((u64::from(first), 1)));
    }
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        let part = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return Err("varint overflows 64 bits");
        }
        v |= part << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    if b.len() >= 10 {
        Err("varint longer than 10 bytes")
    } else {
        Ok(None)
    }
}

/// Appends one frame: varint length of (type + payload), type, payload.
pub fn put_frame(out: &mut BytesMut, ty: u8, payload: &[u8]) {
    put_varint(out, payload.len() as u64 + 1);
    out.put_u8(ty);
    out.put_slice(payload);
}

/// Appends one block: varint length of `frames`, the frames, and a CRC32 (LE) of all before it.
/// A block is what one write put on disk, so a torn or damaged write loses that block alone.
pub fn put_block(out: &mut BytesMut, frames: &[u8]) {
    let start = out.len();
    put_varint(out, frames.len() as u64);
    out.put_slice(frames);
    let crc = crc32fast::hash(&out[start..]);
    out.put_u32_le(crc);
}

/// The file prefix: magic, version, header length, header, CRC32 of version..header.
pub fn encode_header(h: &crate::model::CaptureHeader, version: u16) -> BytesMut {
    let mut body = BytesMut::new();
    put_bytes(&mut body, h.kernel_release.as_bytes());
    put_bytes(&mut body, h.hostname.as_bytes());
    put_varint(&mut body, zigzag(h.monotonic_to_wall_ns));
    put_varint(&mut body, h.missing.len() as u64);
    for m in &h.missing {
        put_bytes(&mut body, m.as_bytes());
    }
    let mut out = BytesMut::with_capacity(PREFIX_LEN + body.len() + 4);
    out.put_slice(&MAGIC);
    out.put_u16_le(version);
    out.put_u32_le(body.len() as u32);
    out.put_slice(&body);
    let crc = crc32fast::hash(&out[8..]);
    out.put_u32_le(crc);
    out
}

pub fn decode_header_body(
    body: &[u8],
    version: u16,
) -> Result<crate::model::CaptureHeader, String> {
    let mut c = Cursor::new(body);
    let kernel_release = String::from_utf8_lossy(c.bytes()?).into_owned();
    let hostname = String::from_utf8_lossy(c.bytes()?).into_owned();
    let monotonic_to_wall_ns = unzigzag(c.varint()?);
    let n = c.count()?;
    let mut missing = Vec::with_capacity(n);
    for _ in 0..n {
        missing.push(String::from_utf8_lossy(c.bytes()?).into_owned());
    }
    c.end()?;
    Ok(crate::model::CaptureHeader {
        format_version: version,
        kernel_release,
        hostname,
        monotonic_to_wall_ns,
        missing,
    })
}

/// Bytes `a` and `b` share at the start.
fn shared_prefix(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    put_varint(buf, b.len() as u64);
    buf.put_slice(b);
}

/// Bounds-checked reads from a frame payload; every failure is a short reason string.
pub struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Self { b }
    }
    /// The next byte, not consumed.
    pub fn peek(&self) -> Option<u8> {
        self.b.first().copied()
    }
    #[inline]
    pub fn u8(&mut self) -> Result<u8, String> {
        let (&v, rest) = self.b.split_first().ok_or("record ends early")?;
        self.b = rest;
        Ok(v)
    }
    #[inline]
    pub fn varint(&mut self) -> Result<u64, String> {
        // One- and two-byte numbers (indexes, time deltas, flags) inline; the rest (and every
        // error) out of line.
        match *self.b {
            [b0, ..] if b0 < 0x80 => {
                self.b = &self.b[1..];
                Ok(u64::from(b0))
            }
            [b0, b1, ..] if b1 < 0x80 => {
                self.b = &self.b[2..];
                Ok(u64::from(b0 & 0x7f) | (u64::from(b1) << 7))
            }
            _ => self.varint_long(),
        }
    }
    #[inline(never)]
    fn varint_long(&mut self) -> Result<u64, String> {
        match parse_varint(self.b)? {
            Some((v, n)) => {
                self.b = &self.b[n..];
                Ok(v)
            }
            None => Err("record ends inside a number".into()),
        }
    }
    #[inline]
    pub fn u32(&mut self) -> Result<u32, String> {
        u32::try_from(self.varint()?).map_err(|_| "number exceeds 32 bits".into())
    }
    #[inline]
    pub fn fd(&mut self) -> Result<Fd, String> {
        i32::try_from(unzigzag(self.varint()?)).map_err(|_| "fd exceeds 32 bits".into())
    }
    /// An element count: each element takes at least one byte, so a count beyond what remains is
    /// corruption; this also bounds the allocation.
    pub fn count(&mut self) -> Result<usize, String> {
        let n = self.varint()?;
        if n > self.b.len() as u64 {
            return Err(format!("count {n} exceeds the record"));
        }
        Ok(n as usize)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.count()?;
        let (v, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(v)
    }
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.b)
    }
    pub fn end(&self) -> Result<(), String> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected bytes at the end of a record",
                self.b.len()
            ))
        }
    }
}

#[derive(Hash, PartialEq, Eq, Clone)]
struct TaskKey {
    pid: u32,
    tid: u32,
    ppid: u32,
    comm: KStr,
    mnt_ns: MntNs,
    net_ns_inum: u32,
    cgroup_id: u64,
}

/// Writer-side state of one file: dictionaries and the timestamp base.
#[derive(Default)]
pub struct Encoder {
    strings: HashMap<Arc<str>, u32>,
    /// The same strings in order: the one sharing the longest prefix with a new string is one of
    /// its two neighbours here.
    sorted: BTreeMap<Arc<str>, u32>,
    string_bytes: usize,
    tasks: HashMap<TaskKey, u32>,
    prev_ts: u64,
    /// The last resolved path written: the next one is stored as a delta against it.
    prev_resolved: String,
    scratch: BytesMut,
    sub: BytesMut,
}

impl Encoder {
    /// Forget all dictionaries (new file, or after a `T_RESET` frame).
    pub fn reset(&mut self) {
        self.strings.clear();
        self.sorted.clear();
        self.tasks.clear();
        self.string_bytes = 0;
        self.prev_ts = 0;
        self.prev_resolved.clear();
    }

    /// Forgets the dictionaries and tells the reader to do the same (after frames were dropped).
    pub fn reset_with_frame(&mut self, out: &mut BytesMut) {
        self.reset();
        put_frame(out, T_RESET, &[]);
    }

    /// Appends the frames for `rec` (dictionary entries first) to `out`.
    pub fn encode(&mut self, rec: &Record, preamble: bool, out: &mut BytesMut) {
        if self.strings.len() >= WRITER_MAX_ENTRIES
            || self.tasks.len() >= WRITER_MAX_ENTRIES
            || self.string_bytes >= WRITER_MAX_STRING_BYTES
        {
            self.reset();
            put_frame(out, T_RESET, &[]);
        }
        let mut p = std::mem::take(&mut self.scratch);
        p.clear();
        let ty = match rec {
            Record::Snapshot(s) => {
                self.snapshot(s, &mut p, out);
                T_SNAPSHOT
            }
            Record::Event(e) => {
                self.event(e, &mut p, out);
                T_EVENT
            }
            Record::Lost {
                count,
                first_ts_ns,
                last_ts_ns,
            } => {
                put_varint(&mut p, *count);
                put_varint(&mut p, *first_ts_ns);
                put_varint(&mut p, *last_ts_ns);
                T_LOST
            }
            Record::NamespaceMounts(l) => {
                put_varint(&mut p, l.ts_ns);
                ns_put(&mut p, l.ns);
                self.mounts(&l.mounts, &mut p, out);
                put_varint(&mut p, l.read_end_ns.saturating_sub(l.ts_ns));
                T_NSMOUNTS
            }
            Record::Container(c) => {
                // Rare and schema-rich: JSON keeps it evolvable.
                p.put_slice(&serde_json::to_vec(c).unwrap_or_default());
                T_CONTAINER
            }
        };
        put_frame(out, if preamble { ty | PREAMBLE } else { ty }, &p);
        self.scratch = p;
    }

    fn str_ref(&mut self, s: &KStr, p: &mut BytesMut, out: &mut BytesMut) {
        let idx = match self.strings.get(s.text.as_str()) {
            Some(&i) => i,
            None => {
                let i = self.strings.len() as u32;
                let text = s.text.as_str();
                let (base, mut common) = self.nearest(text);
                while !text.is_char_boundary(common) {
                    common -= 1;
                }
                // A short shared prefix does not pay for its varints.
                if common >= 4 {
                    let mut d = std::mem::take(&mut self.sub);
                    d.clear();
                    put_varint(&mut d, u64::from(i - 1 - base));
                    put_varint(&mut d, common as u64);
                    d.put_slice(&text.as_bytes()[common..]);
                    put_frame(out, T_STRING_DELTA, &d);
                    self.sub = d;
                } else {
                    put_frame(out, T_STRING, text.as_bytes());
                }
                self.string_bytes += text.len();
                let key: Arc<str> = Arc::from(text);
                self.strings.insert(Arc::clone(&key), i);
                self.sorted.insert(key, i);
                i
            }
        };
        put_varint(p, (u64::from(idx) << 1) | u64::from(s.truncated));
    }

    /// The dictionary string sharing the longest prefix with `text` (not in the dictionary):
    /// its index and the shared length, or (0, 0) when there is none.
    fn nearest(&self, text: &str) -> (u32, usize) {
        let below = self
            .sorted
            .range::<str, _>((Bound::Unbounded, Bound::Excluded(text)))
            .next_back();
        let above = self
            .sorted
            .range::<str, _>((Bound::Excluded(text), Bound::Unbounded))
            .next();
        below
            .into_iter()
            .chain(above)
            .map(|(k, &i)| (i, shared_prefix(k, text)))
            .max_by_key(|&(i, common)| (common, i))
            .unwrap_or((0, 0))
    }

    fn event(&mut self, e: &Event, p: &mut BytesMut, out: &mut BytesMut) {
        let t = &e.task;
        put_varint(p, zigzag(t.ts_ns.wrapping_sub(self.prev_ts) as i64));
        self.prev_ts = t.ts_ns;
        let key = TaskKey {
            pid: t.pid,
            tid: t.tid,
            ppid: t.ppid,
            comm: t.comm.clone(),
            mnt_ns: t.mnt_ns,
            net_ns_inum: t.net_ns_inum,
            cgroup_id: t.cgroup_id,
        };
        let idx = match self.tasks.get(&key) {
            Some(&i) => i,
            None => {
                let mut sub = std::mem::take(&mut self.sub);
                sub.clear();
                put_varint(&mut sub, u64::from(t.pid));
                put_varint(&mut sub, u64::from(t.tid));
                put_varint(&mut sub, u64::from(t.ppid));
                self.str_ref(&t.comm, &mut sub, out);
                ns_put(&mut sub, t.mnt_ns);
                put_varint(&mut sub, u64::from(t.net_ns_inum));
                put_varint(&mut sub, t.cgroup_id);
                put_frame(out, T_TASK, &sub);
                self.sub = sub;
                let i = self.tasks.len() as u32;
                self.tasks.insert(key, i);
                i
            }
        };
        put_varint(p, u64::from(idx));
        self.action(&e.action, p, out);
        let presence = u8::from(e.ret.is_some())
            | (u8::from(e.new_mnt_ns.is_some()) << 1)
            | (u8::from(e.dir.is_some()) << 2)
            | (u8::from(e.resolved[0].is_some()) << 3)
            | (u8::from(e.resolved[1].is_some()) << 4);
        p.put_u8(presence);
        if let Some(r) = e.ret {
            put_varint(p, zigzag(r));
        }
        if let Some(ns) = e.new_mnt_ns {
            ns_put(p, ns);
        }
        if let Some(d) = &e.dir {
            self.str_ref(d, p, out);
        }
        for r in e.resolved.iter().flatten() {
            let text = r.path.text.as_str();
            let mut common = shared_prefix(&self.prev_resolved, text);
            while !text.is_char_boundary(common) {
                common -= 1;
            }
            put_varint(p, ((common as u64) << 1) | u64::from(r.path.truncated));
            put_bytes(p, &text.as_bytes()[common..]);
            put_varint(p, r.mnt_id);
            self.prev_resolved.clear();
            self.prev_resolved.push_str(text);
        }
    }

    fn action(&mut self, a: &Action, p: &mut BytesMut, out: &mut BytesMut) {
        let fd = |p: &mut BytesMut, fd: Fd| put_varint(p, zigzag(i64::from(fd)));
        match a {
            Action::Mount {
                source,
                target,
                fstype,
                flags,
            } => {
                p.put_u8(0);
                self.str_ref(source, p, out);
                self.str_ref(target, p, out);
                self.str_ref(fstype, p, out);
                put_varint(p, *flags);
            }
            Action::Umount { target, flags } => {
                p.put_u8(1);
                self.str_ref(target, p, out);
                put_varint(p, *flags);
            }
            Action::Unlink {
                dirfd,
                path,
                rmdir,
                call,
            } => {
                p.put_u8(2);
                fd(p, *dirfd);
                self.str_ref(path, p, out);
                let call = match call {
                    UnlinkCall::Unlink => 0,
                    UnlinkCall::Unlinkat => 1,
                    UnlinkCall::Rmdir => 2,
                };
                p.put_u8(call | (u8::from(*rmdir) << 2));
            }
            Action::Unshare { flags } => {
                p.put_u8(3);
                put_varint(p, *flags);
            }
            Action::Setns { fd: f, nstype } => {
                p.put_u8(4);
                fd(p, *f);
                put_varint(p, *nstype);
            }
            Action::Clone { flags, clone3 } => {
                p.put_u8(if *clone3 { 6 } else { 5 });
                put_varint(p, *flags);
            }
            Action::Fsopen { fstype, flags } => {
                p.put_u8(7);
                self.str_ref(fstype, p, out);
                put_varint(p, *flags);
            }
            Action::Fsconfig {
                fd: f,
                cmd,
                key,
                value,
            } => {
                p.put_u8(8);
                fd(p, *f);
                put_varint(p, u64::from(*cmd));
                self.str_ref(key, p, out);
                self.str_ref(value, p, out);
            }
            Action::Fsmount {
                fd: f,
                flags,
                attr_flags,
            } => {
                p.put_u8(9);
                fd(p, *f);
                put_varint(p, *flags);
                put_varint(p, *attr_flags);
            }
            Action::MoveMount {
                from_dirfd,
                from_path,
                to_dirfd,
                to_path,
                flags,
            } => {
                p.put_u8(10);
                fd(p, *from_dirfd);
                self.str_ref(from_path, p, out);
                fd(p, *to_dirfd);
                self.str_ref(to_path, p, out);
                put_varint(p, *flags);
            }
            Action::OpenTree { dirfd, path, flags } => {
                p.put_u8(11);
                fd(p, *dirfd);
                self.str_ref(path, p, out);
                put_varint(p, *flags);
            }
            Action::MountSetattr {
                dirfd,
                path,
                flags,
                attr_set,
                attr_clr,
                propagation,
            } => {
                p.put_u8(12);
                fd(p, *dirfd);
                self.str_ref(path, p, out);
                put_varint(p, *flags);
                put_varint(p, *attr_set);
                put_varint(p, *attr_clr);
                put_varint(p, *propagation);
            }
            Action::PivotRoot { new_root, put_old } => {
                p.put_u8(13);
                self.str_ref(new_root, p, out);
                self.str_ref(put_old, p, out);
            }
            Action::Chroot { path } => {
                p.put_u8(14);
                self.str_ref(path, p, out);
            }
            Action::Fork { child } => {
                p.put_u8(15);
                put_varint(p, u64::from(*child));
            }
            Action::Exec { filename } => {
                p.put_u8(16);
                self.str_ref(filename, p, out);
            }
            Action::Exit => p.put_u8(17),
        }
    }

    fn mounts(&mut self, mounts: &[MountInfo], p: &mut BytesMut, out: &mut BytesMut) {
        put_varint(p, mounts.len() as u64);
        for m in mounts {
            put_varint(p, m.mnt_id);
            put_varint(p, m.parent_id);
            put_varint(p, u64::from(m.mnt_id_old));
            put_varint(p, u64::from(m.dev_major));
            put_varint(p, u64::from(m.dev_minor));
            self.str_ref(&m.root, p, out);
            self.str_ref(&m.mountpoint, p, out);
            self.str_ref(&m.fstype, p, out);
            self.str_ref(&m.source, p, out);
            self.str_ref(&m.options, p, out);
            let pr = &m.propagation;
            p.put_u8(
                u8::from(pr.shared.is_some())
                    | (u8::from(pr.master.is_some()) << 1)
                    | (u8::from(pr.unbindable) << 2),
            );
            if let Some(s) = pr.shared {
                put_varint(p, u64::from(s));
            }
            if let Some(m) = pr.master {
                put_varint(p, u64::from(m));
            }
        }
    }

    fn snapshot(&mut self, s: &Snapshot, p: &mut BytesMut, out: &mut BytesMut) {
        put_varint(p, s.ts_ns);
        ns_put(p, s.host_ns);
        put_varint(p, s.namespaces.len() as u64);
        for n in &s.namespaces {
            ns_put(p, n.ns);
            put_varint(p, n.pids.len() as u64);
            for &pid in &n.pids {
                put_varint(p, u64::from(pid));
            }
            self.mounts(&n.mounts, p, out);
        }
        put_varint(p, s.processes.len() as u64);
        for pr in &s.processes {
            put_varint(p, u64::from(pr.pid));
            put_varint(p, u64::from(pr.ppid));
            self.str_ref(&pr.comm, p, out);
            ns_put(p, pr.mnt_ns);
            self.str_ref(&pr.cgroup, p, out);
        }
    }
}

fn ns_put(p: &mut BytesMut, ns: MntNs) {
    put_varint(p, ns.id);
    put_varint(p, u64::from(ns.inum));
}

/// Reader-side state of one file.
#[derive(Default)]
pub struct Decoder {
    strings: Vec<String>,
    string_bytes: usize,
    tasks: Vec<Task>,
    prev_ts: u64,
    /// The last resolved path read (see [`FORMAT_VERSION`]).
    prev_resolved: String,
    /// Bytes the current frame may still expand to.
    budget: Cell<usize>,
    /// String buffers of the previous record, reused for the next one: replay decodes millions
    /// of records and would otherwise allocate and free each of their strings.
    pool: Vec<String>,
    /// The file's format version (frames of older versions lack later fields).
    version: u16,
}

/// Buffers kept for reuse at most, and the largest kept (a snapshot's strings are not worth it).
const POOL_MAX: usize = 32;
const POOL_MAX_CAPACITY: usize = 4096;

/// `s` in a buffer from `pool` when one is there.
fn pooled(pool: &mut Vec<String>, s: &str) -> String {
    match pool.pop() {
        Some(mut b) => {
            b.push_str(s);
            b
        }
        None => s.to_owned(),
    }
}

impl Decoder {
    pub fn set_version(&mut self, version: u16) {
        self.version = version;
    }

    pub fn reset(&mut self) {
        self.strings.clear();
        self.tasks.clear();
        self.string_bytes = 0;
        self.prev_ts = 0;
        self.prev_resolved.clear();
    }

    /// A resolved path: a prefix of the previous one plus the bytes that follow.
    fn resolved_path(&mut self, c: &mut Cursor) -> Result<KStr, String> {
        let v = c.varint()?;
        let common = usize::try_from(v >> 1).map_err(|_| "resolved path prefix too long")?;
        if common > self.prev_resolved.len() || !self.prev_resolved.is_char_boundary(common) {
            return Err(format!(
                "resolved path shares {common} bytes with a shorter one"
            ));
        }
        let rest = std::str::from_utf8(c.bytes()?).map_err(|_| "resolved path is not UTF-8")?;
        self.spend(common + rest.len() + size_of::<KStr>())?;
        self.prev_resolved.truncate(common);
        self.prev_resolved.push_str(rest);
        Ok(KStr {
            text: pooled(&mut self.pool, &self.prev_resolved),
            truncated: v & 1 == 1,
        })
    }

    /// Keeps a string buffer for the next records.
    fn give(&mut self, k: KStr) {
        let mut t = k.text;
        if self.pool.len() < POOL_MAX && t.capacity() <= POOL_MAX_CAPACITY {
            t.clear();
            self.pool.push(t);
        }
    }

    /// Takes the string buffers of a record being replaced.
    fn recycle(&mut self, rec: Record) {
        if let Record::Event(mut e) = rec {
            self.recycle_parts(&mut e);
            self.give(e.task.comm);
        }
    }

    /// Takes the string buffers of an event's action and optional parts, leaving them empty.
    fn recycle_parts(&mut self, e: &mut Event) {
        self.recycle_optional(e);
        self.recycle_action(&mut e.action);
    }

    /// Takes the buffers of an event's directory and resolved paths, leaving them `None`.
    fn recycle_optional(&mut self, e: &mut Event) {
        if let Some(d) = e.dir.take() {
            self.give(d);
        }
        for r in e.resolved.iter_mut() {
            if let Some(r) = r.take() {
                self.give(r.path);
            }
        }
    }

    /// Takes the string buffers of an action, leaving `Exit`.
    fn recycle_action(&mut self, a: &mut Action) {
        match std::mem::replace(a, Action::Exit) {
            Action::Mount {
                source,
                target,
                fstype,
                ..
            } => [source, target, fstype]
                .into_iter()
                .for_each(|k| self.give(k)),
            Action::Fsconfig { key, value, .. } => {
                self.give(key);
                self.give(value);
            }
            Action::MoveMount {
                from_path, to_path, ..
            } => {
                self.give(from_path);
                self.give(to_path);
            }
            Action::PivotRoot { new_root, put_old } => {
                self.give(new_root);
                self.give(put_old);
            }
            Action::Umount { target: k, .. }
            | Action::Unlink { path: k, .. }
            | Action::Fsopen { fstype: k, .. }
            | Action::OpenTree { path: k, .. }
            | Action::MountSetattr { path: k, .. }
            | Action::Chroot { path: k }
            | Action::Exec { filename: k } => self.give(k),
            Action::Unshare { .. }
            | Action::Setns { .. }
            | Action::Clone { .. }
            | Action::Fsmount { .. }
            | Action::Fork { .. }
            | Action::Exit => {}
        }
    }

    /// Decodes the body (type byte stripped) of a CRC-checked frame into `slot`, which holds the
    /// previous record: an event is decoded in place, reusing its buffers. Returns whether the
    /// frame was a record (else a dictionary update, and `slot` is unchanged).
    pub fn frame(&mut self, ty: u8, body: &[u8], slot: &mut Record) -> Result<bool, String> {
        let mut c = Cursor::new(body);
        self.budget.set(MAX_EXPANSION);
        let rec = match ty & !PREAMBLE {
            T_STRING => {
                if self.strings.len() >= READER_MAX_ENTRIES
                    || self.string_bytes + body.len() > READER_MAX_STRING_BYTES
                {
                    return Err("string dictionary exceeds its limit".into());
                }
                let s = std::str::from_utf8(body).map_err(|_| "dictionary string is not UTF-8")?;
                self.string_bytes += s.len();
                self.strings.push(s.to_owned());
                return Ok(false);
            }
            T_STRING_DELTA => {
                let back = if self.version >= STRING_BASES_SINCE {
                    c.varint()?
                } else {
                    0
                };
                let common = usize::try_from(c.varint()?).map_err(|_| "prefix too long")?;
                let base = usize::try_from(back)
                    .ok()
                    .and_then(|back| self.strings.len().checked_sub(back.checked_add(1)?));
                let last = match base {
                    Some(b) => self.strings[b].as_str(),
                    // Before format 4, a delta on an empty dictionary extends the empty string.
                    None if back == 0 => "",
                    None => {
                        return Err(format!(
                            "dictionary string extends the string {back} entries before the last, of {}",
                            self.strings.len()
                        ));
                    }
                };
                if common > last.len() || !last.is_char_boundary(common) {
                    return Err(format!(
                        "dictionary string shares {common} bytes with a shorter one"
                    ));
                }
                let rest =
                    std::str::from_utf8(c.rest()).map_err(|_| "dictionary string is not UTF-8")?;
                if self.strings.len() >= READER_MAX_ENTRIES
                    || self.string_bytes + common + rest.len() > READER_MAX_STRING_BYTES
                {
                    return Err("string dictionary exceeds its limit".into());
                }
                let mut s = String::with_capacity(common + rest.len());
                s.push_str(&last[..common]);
                s.push_str(rest);
                self.string_bytes += s.len();
                self.strings.push(s);
                return Ok(false);
            }
            T_TASK => {
                if self.tasks.len() >= READER_MAX_ENTRIES {
                    return Err("task dictionary exceeds its limit".into());
                }
                let task = Task {
                    ts_ns: 0,
                    pid: c.u32()?,
                    tid: c.u32()?,
                    ppid: c.u32()?,
                    comm: self.kstr(&mut c)?,
                    mnt_ns: ns_get(&mut c)?,
                    net_ns_inum: c.u32()?,
                    cgroup_id: c.varint()?,
                };
                c.end()?;
                self.tasks.push(task);
                return Ok(false);
            }
            T_RESET => {
                c.end()?;
                self.reset();
                return Ok(false);
            }
            T_EVENT => {
                if !matches!(slot, Record::Event(_)) {
                    let old = std::mem::replace(slot, Record::Event(empty_event()));
                    self.recycle(old);
                }
                let Record::Event(ev) = slot else {
                    unreachable!("made an event above")
                };
                self.event(&mut c, ev)?;
                c.end()?;
                return Ok(true);
            }
            T_LOST => Record::Lost {
                count: c.varint()?,
                first_ts_ns: c.varint()?,
                last_ts_ns: c.varint()?,
            },
            T_NSMOUNTS => {
                let ts_ns = c.varint()?;
                let ns = ns_get(&mut c)?;
                let mounts = self.mounts(&mut c)?;
                let took = if self.version >= 3 { c.varint()? } else { 0 };
                Record::NamespaceMounts(NamespaceListing {
                    ts_ns,
                    read_end_ns: ts_ns.saturating_add(took),
                    ns,
                    mounts,
                })
            }
            T_SNAPSHOT => Record::Snapshot(self.snapshot(&mut c)?),
            T_CONTAINER => {
                let info: ContainerInfo = serde_json::from_slice(c.rest()).map_err(|e| {
                    // serde quotes input in its messages: keep the error one safe line.
                    format!(
                        "container record: {}",
                        crate::report::escape::escape(&e.to_string())
                    )
                })?;
                Record::Container(info)
            }
            other => return Err(format!("unknown record type {other}")),
        };
        c.end()?;
        let old = std::mem::replace(slot, rec);
        self.recycle(old);
        Ok(true)
    }

    fn spend(&self, n: usize) -> Result<(), String> {
        let left = self.budget.get();
        if n > left {
            return Err(format!("record expands beyond {MAX_EXPANSION} bytes"));
        }
        self.budget.set(left - n);
        Ok(())
    }

    fn kstr(&mut self, c: &mut Cursor) -> Result<KStr, String> {
        let mut k = KStr {
            text: self.pool.pop().unwrap_or_default(),
            truncated: false,
        };
        self.kstr_into(c, &mut k)?;
        Ok(k)
    }

    /// A dictionary string into `k`, reusing its buffer.
    fn kstr_into(&mut self, c: &mut Cursor, k: &mut KStr) -> Result<(), String> {
        let v = c.varint()?;
        let idx = v >> 1;
        let text = usize::try_from(idx)
            .ok()
            .and_then(|i| self.strings.get(i))
            .ok_or_else(|| format!("unknown dictionary index {idx}"))?;
        self.spend(text.len() + size_of::<KStr>())?;
        k.text.clear();
        k.text.push_str(text);
        k.truncated = v & 1 == 1;
        Ok(())
    }

    /// Decodes an event into `ev`, the previous one: its buffers are reused.
    fn event(&mut self, c: &mut Cursor, ev: &mut Event) -> Result<(), String> {
        let ts = self.prev_ts.wrapping_add(unzigzag(c.varint()?) as u64);
        self.prev_ts = ts;
        let idx = c.varint()?;
        let t = usize::try_from(idx)
            .ok()
            .and_then(|i| self.tasks.get(i))
            .ok_or_else(|| format!("unknown task index {idx}"))?;
        let task = &mut ev.task;
        task.ts_ns = ts;
        task.pid = t.pid;
        task.tid = t.tid;
        task.ppid = t.ppid;
        task.comm.text.clear();
        task.comm.text.push_str(&t.comm.text);
        task.comm.truncated = t.comm.truncated;
        task.mnt_ns = t.mnt_ns;
        task.net_ns_inum = t.net_ns_inum;
        task.cgroup_id = t.cgroup_id;
        self.recycle_optional(ev);
        if !self.unlink_in_place(c, &mut ev.action)? {
            self.recycle_action(&mut ev.action);
            ev.action = self.action(c)?;
        }
        let presence = c.u8()?;
        if presence & !0x1f != 0 {
            return Err(format!("bad presence bits {presence:#x}"));
        }
        ev.ret = if presence & 1 != 0 {
            Some(unzigzag(c.varint()?))
        } else {
            None
        };
        ev.new_mnt_ns = if presence & 2 != 0 {
            Some(ns_get(c)?)
        } else {
            None
        };
        if presence & 4 != 0 {
            ev.dir = Some(self.kstr(c)?);
        }
        for i in 0..2 {
            if presence & (8 << i) != 0 {
                ev.resolved[i] = Some(ResolvedPath {
                    path: self.resolved_path(c)?,
                    mnt_id: c.varint()?,
                });
            }
        }
        Ok(())
    }

    /// An unlink decoded over the previous action when that was an unlink too (most events of a
    /// busy node): false, consuming nothing, otherwise.
    fn unlink_in_place(&mut self, c: &mut Cursor, a: &mut Action) -> Result<bool, String> {
        let Action::Unlink {
            dirfd,
            path,
            rmdir,
            call,
        } = a
        else {
            return Ok(false);
        };
        if c.peek() != Some(2) {
            return Ok(false);
        }
        c.u8()?;
        *dirfd = c.fd()?;
        self.kstr_into(c, path)?;
        let (r, k) = unlink_bits(c.u8()?)?;
        (*rmdir, *call) = (r, k);
        Ok(true)
    }

    fn action(&mut self, c: &mut Cursor) -> Result<Action, String> {
        Ok(match c.u8()? {
            0 => Action::Mount {
                source: self.kstr(c)?,
                target: self.kstr(c)?,
                fstype: self.kstr(c)?,
                flags: c.varint()?,
            },
            1 => Action::Umount {
                target: self.kstr(c)?,
                flags: c.varint()?,
            },
            2 => {
                let dirfd = c.fd()?;
                let path = self.kstr(c)?;
                let (rmdir, call) = unlink_bits(c.u8()?)?;
                Action::Unlink {
                    dirfd,
                    path,
                    rmdir,
                    call,
                }
            }
            3 => Action::Unshare { flags: c.varint()? },
            4 => Action::Setns {
                fd: c.fd()?,
                nstype: c.varint()?,
            },
            t @ (5 | 6) => Action::Clone {
                flags: c.varint()?,
                clone3: t == 6,
            },
            7 => Action::Fsopen {
                fstype: self.kstr(c)?,
                flags: c.varint()?,
            },
            8 => Action::Fsconfig {
                fd: c.fd()?,
                cmd: c.u32()?,
                key: self.kstr(c)?,
                value: self.kstr(c)?,
            },
            9 => Action::Fsmount {
                fd: c.fd()?,
                flags: c.varint()?,
                attr_flags: c.varint()?,
            },
            10 => Action::MoveMount {
                from_dirfd: c.fd()?,
                from_path: self.kstr(c)?,
                to_dirfd: c.fd()?,
                to_path: self.kstr(c)?,
                flags: c.varint()?,
            },
            11 => Action::OpenTree {
                dirfd: c.fd()?,
                path: self.kstr(c)?,
                flags: c.varint()?,
            },
            12 => Action::MountSetattr {
                dirfd: c.fd()?,
                path: self.kstr(c)?,
                flags: c.varint()?,
                attr_set: c.varint()?,
                attr_clr: c.varint()?,
                propagation: c.varint()?,
            },
            13 => Action::PivotRoot {
                new_root: self.kstr(c)?,
                put_old: self.kstr(c)?,
            },
            14 => Action::Chroot {
                path: self.kstr(c)?,
            },
            15 => Action::Fork { child: c.u32()? },
            16 => Action::Exec {
                filename: self.kstr(c)?,
            },
            17 => Action::Exit,
            t => return Err(format!("unknown action {t}")),
        })
    }

    fn mounts(&mut self, c: &mut Cursor) -> Result<Vec<MountInfo>, String> {
        let n = c.count()?;
        // Capacity grows with what decodes, not with what a count claims.
        let mut v = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            self.spend(size_of::<MountInfo>())?;
            let mut m = MountInfo {
                mnt_id: c.varint()?,
                parent_id: c.varint()?,
                mnt_id_old: c.u32()?,
                dev_major: c.u32()?,
                dev_minor: c.u32()?,
                root: self.kstr(c)?,
                mountpoint: self.kstr(c)?,
                fstype: self.kstr(c)?,
                source: self.kstr(c)?,
                options: self.kstr(c)?,
                propagation: Propagation::default(),
            };
            let bits = c.u8()?;
            if bits & !7 != 0 {
                return Err(format!("bad propagation bits {bits:#x}"));
            }
            if bits & 1 != 0 {
                m.propagation.shared = Some(c.u32()?);
            }
            if bits & 2 != 0 {
                m.propagation.master = Some(c.u32()?);
            }
            m.propagation.unbindable = bits & 4 != 0;
            v.push(m);
        }
        Ok(v)
    }

    fn snapshot(&mut self, c: &mut Cursor) -> Result<Snapshot, String> {
        let ts_ns = c.varint()?;
        let host_ns = ns_get(c)?;
        let n = c.count()?;
        let mut namespaces = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            self.spend(size_of::<NamespaceState>())?;
            let ns = ns_get(c)?;
            let np = c.count()?;
            self.spend(np * size_of::<u32>())?;
            let mut pids = Vec::with_capacity(np);
            for _ in 0..np {
                pids.push(c.u32()?);
            }
            let mounts = self.mounts(c)?;
            namespaces.push(NamespaceState { ns, pids, mounts });
        }
        let n = c.count()?;
        let mut processes = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            self.spend(size_of::<ProcessState>())?;
            processes.push(ProcessState {
                pid: c.u32()?,
                ppid: c.u32()?,
                comm: self.kstr(c)?,
                mnt_ns: ns_get(c)?,
                cgroup: self.kstr(c)?,
            });
        }
        Ok(Snapshot {
            ts_ns,
            host_ns,
            namespaces,
            processes,
        })
    }
}

/// An unlink's last byte: (rmdir, which call).
fn unlink_bits(b: u8) -> Result<(bool, UnlinkCall), String> {
    let call = match b & 3 {
        0 => UnlinkCall::Unlink,
        1 => UnlinkCall::Unlinkat,
        2 => UnlinkCall::Rmdir,
        _ => return Err(format!("bad unlink call {b:#x}")),
    };
    if b & !7 != 0 {
        return Err(format!("bad unlink bits {b:#x}"));
    }
    Ok((b & 4 != 0, call))
}

/// The slot an event is decoded into when the previous record was not one.
fn empty_event() -> Event {
    Event {
        task: Task::default(),
        action: Action::Exit,
        ret: None,
        new_mnt_ns: None,
        dir: None,
        resolved: [None, None],
    }
}

fn ns_get(c: &mut Cursor) -> Result<MntNs, String> {
    Ok(MntNs {
        id: c.varint()?,
        inum: c.u32()?,
    })
}
