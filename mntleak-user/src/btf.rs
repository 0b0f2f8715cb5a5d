//! Kernel struct offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`), passed to the
//! eBPF programs as the `OFFSETS` global so nothing is fixed to one kernel.
//!
//! A small parser of our own: `aya-obj`'s `Btf` does not expose member offsets, and the crates
//! that do are either LGPL (`btf-rs`) or far larger than the ~40 lines of format we need.
//! It never panics on malformed input: every read is bounds-checked.

use std::path::Path;

use mntleak_common::KernelOffsets;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF {path}: {source} (is CONFIG_DEBUG_INFO_BTF enabled?)")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF at byte {offset}: {what}")]
    Format { offset: usize, what: &'static str },
    #[error("kernel BTF has no {0}")]
    Missing(String),
    /// A parse or lookup error in a file, named (the two above come from bytes alone). Not a
    /// `source`: the message already holds it, and error chains would print it twice.
    #[error("kernel BTF {path}: {error}")]
    InFile {
        path: &'static str,
        error: Box<BtfError>,
    },
}

#[derive(Clone, Copy, Debug)]
struct Type {
    name_off: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    /// Size (structs, ints) or referenced type id (typedef, pointer, ...).
    size_type: u32,
    /// Byte offset of the kind-specific data that follows the common header.
    data: usize,
}

/// A parsed BTF blob: only what offset lookups need.
pub struct Btf {
    raw: Vec<u8>,
    strings: usize,
    strings_end: usize,
    /// Index = type id; id 0 is `void`.
    types: Vec<Type>,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

impl Btf {
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let raw = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(raw)
    }

    pub fn parse(raw: Vec<u8>) -> Result<Self, BtfError> {
        let bad = |offset, what| BtfError::Format { offset, what };
        if u16_at(&raw, 0) != Some(BTF_MAGIC) {
            return Err(bad(0, "bad magic (not little-endian BTF)"));
        }
        let hdr = |i: usize| u32_at(&raw, 8 + 4 * i).ok_or(bad(8 + 4 * i, "short header"));
        let hdr_len = u32_at(&raw, 4).ok_or(bad(4, "short header"))? as usize;
        let (type_off, type_len, str_off, str_len) = (
            hdr(0)? as usize,
            hdr(1)? as usize,
            hdr(2)? as usize,
            hdr(3)? as usize,
        );
        let types_start = hdr_len.saturating_add(type_off);
        let types_end = types_start.saturating_add(type_len);
        let strings = hdr_len.saturating_add(str_off);
        let strings_end = strings.saturating_add(str_len);
        if types_end > raw.len() || strings_end > raw.len() {
            return Err(bad(8, "sections past the end of the file"));
        }
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            vlen: 0,
            kind_flag: false,
            size_type: 0,
            data: 0,
        }];
        let mut pos = types_start;
        while pos < types_end {
            let name_off = u32_at(&raw, pos).ok_or(bad(pos, "truncated type"))?;
            let info = u32_at(&raw, pos + 4).ok_or(bad(pos, "truncated type"))?;
            let size_type = u32_at(&raw, pos + 8).ok_or(bad(pos, "truncated type"))?;
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let data = pos + 12;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                0..=19 => 0,
                _ => return Err(bad(pos, "unknown type kind")),
            };
            types.push(Type {
                name_off,
                kind,
                vlen,
                kind_flag: info >> 31 == 1,
                size_type,
                data,
            });
            pos = data + extra;
        }
        if pos != types_end {
            return Err(bad(pos, "type section does not end on a type boundary"));
        }
        Ok(Self {
            raw,
            strings,
            strings_end,
            types,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let start = self.strings.saturating_add(off as usize);
        let Some(rest) = self.raw.get(start..self.strings_end) else {
            return b"";
        };
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// The first struct called `name`.
    pub fn struct_id(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| {
                t.kind == KIND_STRUCT && t.vlen > 0 && self.name(t.name_off) == name.as_bytes()
            })
            .map(|i| i as u32)
    }

    /// Follows typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_type
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Byte offset and type id of member `field` of struct/union `id`, looking inside anonymous
    /// struct/union members.
    pub fn member(&self, id: u32, field: &str) -> Option<(u32, u32)> {
        self.member_depth(id, field, 0)
    }

    fn member_depth(&self, id: u32, field: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        let t = self.resolve(id)?;
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
            return None;
        }
        for i in 0..t.vlen as usize {
            let m = t.data + 12 * i;
            let name_off = u32_at(&self.raw, m)?;
            let ty = u32_at(&self.raw, m + 4)?;
            let raw_off = u32_at(&self.raw, m + 8)?;
            // With kind_flag the top 8 bits hold a bitfield size.
            let bits = if t.kind_flag {
                raw_off & 0x00ff_ffff
            } else {
                raw_off
            };
            let name = self.name(name_off);
            if name == field.as_bytes() {
                return (bits % 8 == 0).then_some((bits / 8, ty));
            }
            if name.is_empty()
                && let Some((off, ty)) = self.member_depth(ty, field, depth + 1)
            {
                return Some((bits / 8 + off, ty));
            }
        }
        None
    }

    /// Offset of a dotted path such as `mnt_namespace`, `["ns", "inum"]`.
    pub fn offset_of(&self, strukt: &str, path: &[&str]) -> Option<u32> {
        let mut id = self.struct_id(strukt)?;
        let mut total = 0u32;
        for field in path {
            let (off, ty) = self.member(id, field)?;
            total = total.checked_add(off)?;
            id = ty;
        }
        Some(total)
    }

    fn need(&self, strukt: &str, path: &[&str]) -> Result<u32, BtfError> {
        self.offset_of(strukt, path)
            .ok_or_else(|| BtfError::Missing(format!("{strukt}.{}", path.join("."))))
    }

    /// Offsets for the eBPF side. The mount namespace id is `ns_common.ns_id` on >= 6.18 and
    /// `mnt_namespace.seq` on 6.8..6.17 (what NS_GET_MNTNS_ID returned there); 0 when neither.
    /// The path-walk offsets are optional: without them paths are not resolved in the kernel.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        let mnt_ns_id = self
            .offset_of("mnt_namespace", &["ns", "ns_id"])
            .or_else(|| self.offset_of("mnt_namespace", &["seq"]))
            .unwrap_or(0);
        let mut o = KernelOffsets {
            valid: 1,
            task_nsproxy: self.need("task_struct", &["nsproxy"])?,
            task_real_parent: self.need("task_struct", &["real_parent"])?,
            task_tgid: self.need("task_struct", &["tgid"])?,
            nsproxy_mnt_ns: self.need("nsproxy", &["mnt_ns"])?,
            nsproxy_net_ns: self.need("nsproxy", &["net_ns"])?,
            mnt_ns_inum: self.need("mnt_namespace", &["ns", "inum"])?,
            mnt_ns_id,
            net_ns_inum: self.need("net", &["ns", "inum"])?,
            ..KernelOffsets::default()
        };
        o.task_comm = self.offset_of("task_struct", &["comm"]).unwrap_or(0);
        let cgroup = (
            self.offset_of("task_struct", &["cgroups"]),
            self.offset_of("css_set", &["dfl_cgrp"]),
            self.offset_of("cgroup", &["kn"]),
            self.offset_of("kernfs_node", &["id"]),
        );
        if let (Some(a), Some(b), Some(c), Some(d)) = cgroup {
            (
                o.task_cgroups,
                o.css_set_dfl_cgrp,
                o.cgroup_kn,
                o.kernfs_node_id,
            ) = (a, b, c, d);
            o.cgroup_valid = 1;
        }
        match self.path_offsets(&mut o) {
            Ok(()) => o.path_valid = 1,
            Err(e) => tracing::warn!("fd and cwd paths will not be resolved in the kernel: {e}"),
        }
        Ok(o)
    }

    /// What the eBPF path walk reads (task -> fs/files -> file -> path -> dentry/mount).
    fn path_offsets(&self, o: &mut KernelOffsets) -> Result<(), BtfError> {
        o.task_fs = self.need("task_struct", &["fs"])?;
        o.task_files = self.need("task_struct", &["files"])?;
        o.fs_root = self.need("fs_struct", &["root"])?;
        o.fs_pwd = self.need("fs_struct", &["pwd"])?;
        o.files_fdt = self.need("files_struct", &["fdt"])?;
        o.fdt_max_fds = self.need("fdtable", &["max_fds"])?;
        o.fdt_fd = self.need("fdtable", &["fd"])?;
        o.file_path = self.need("file", &["f_path"])?;
        o.path_mnt = self.need("path", &["mnt"])?;
        o.path_dentry = self.need("path", &["dentry"])?;
        o.dentry_parent = self.need("dentry", &["d_parent"])?;
        o.dentry_name_len = self.need("dentry", &["d_name", "len"])?;
        o.dentry_name = self.need("dentry", &["d_name", "name"])?;
        o.vfsmount_root = self.need("vfsmount", &["mnt_root"])?;
        o.mount_mnt = self.need("mount", &["mnt"])?;
        o.mount_parent = self.need("mount", &["mnt_parent"])?;
        o.mount_mountpoint = self.need("mount", &["mnt_mountpoint"])?;
        o.mount_id_unique = self.offset_of("mount", &["mnt_id_unique"]).unwrap_or(0);
        Ok(())
    }
}

/// Offsets for the running kernel.
pub fn kernel_offsets() -> Result<KernelOffsets, BtfError> {
    Btf::from_file(Path::new(VMLINUX))
        .and_then(|btf| btf.kernel_offsets())
        .map_err(|e| match e {
            BtfError::Io { .. } => e,
            e => BtfError::InFile {
                path: VMLINUX,
                error: Box::new(e),
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_kernel_offsets() {
        let btf = Btf::from_file(Path::new(VMLINUX)).expect("this machine has kernel BTF");
        let o = btf.kernel_offsets().expect("offsets");
        assert_eq!(o.valid, 1);
        // mnt_namespace starts with its ns_common; inum sits inside it, after at least ns_type
        // (6.18) or the stashed dentry (older).
        let ns = btf.offset_of("mnt_namespace", &["ns"]).unwrap();
        let inum = btf.offset_of("ns_common", &["inum"]).unwrap();
        assert_eq!(o.mnt_ns_inum, ns + inum);
        assert!(inum > 0);
        // Both pointers of nsproxy are distinct and 8-aligned.
        assert_ne!(o.nsproxy_mnt_ns, o.nsproxy_net_ns);
        assert_eq!(o.nsproxy_mnt_ns % 8, 0);
        assert_ne!(o.task_nsproxy, o.task_tgid);
        // 6.18 has ns_common.ns_id (see kernel-facts.md).
        assert_ne!(o.mnt_ns_id, 0);
        // What the eBPF side reads instead of the comm and cgroup-id helpers.
        assert_eq!(o.cgroup_valid, 1, "{o:?}");
        assert!(o.task_comm > 0 && o.task_comm.is_multiple_of(8), "{o:?}");
        assert!(o.task_cgroups.is_multiple_of(8) && o.css_set_dfl_cgrp.is_multiple_of(8));
        assert_eq!(btf.offset_of("task_struct", &["no_such_field"]), None);
    }

    #[test]
    fn path_walk_offsets() {
        let btf = Btf::from_file(Path::new(VMLINUX)).unwrap();
        let o = btf.kernel_offsets().unwrap();
        assert_eq!(o.path_valid, 1, "{o:?}");
        // struct path is { mnt, dentry }; fs_struct holds two of them.
        assert_eq!((o.path_mnt, o.path_dentry), (0, 8));
        assert_ne!(o.fs_root, o.fs_pwd);
        // qstr: the 32-bit len (inside an anonymous union) comes before the name pointer.
        assert!(
            o.dentry_name_len < o.dentry_name && o.dentry_name.is_multiple_of(8),
            "{o:?}"
        );
        assert!(o.mount_mnt > 0 && o.mount_parent > 0 && o.mount_mountpoint > 0);
        // 6.8+ has a 64-bit unique mount id.
        assert_ne!(o.mount_id_unique, 0);
    }

    #[test]
    fn anonymous_members_are_searched() {
        let btf = Btf::from_file(Path::new(VMLINUX)).unwrap();
        // `struct page` keeps most of its fields inside anonymous unions/structs.
        let page = btf.struct_id("page").unwrap();
        assert!(btf.member(page, "flags").is_some());
        assert!(btf.member(page, "mapping").is_some());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for raw in [
            vec![],
            vec![0x9f, 0xeb],
            vec![
                0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0,
            ],
        ] {
            assert!(Btf::parse(raw).is_err());
        }
        let mut real = std::fs::read(VMLINUX).unwrap();
        real.truncate(real.len() / 2);
        assert!(Btf::parse(real).is_err());
    }
}
