//! One event as a readable line or as one NDJSON object; lost-event notices; the summary.
//! These are the only renderers of the event stream, so replay prints exactly what live printed.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{Map, Value, json};

use super::escape::{escape, quoted};
use super::names::{self, FlagTable};
use crate::model::{Action, CALL_NAMES, Event, KStr, Record, UnlinkCall};
use crate::uapi::AT_REMOVEDIR;

/// Unix-epoch nanoseconds as UTC with millisecond precision: `2026-12-01T15:19:12.123Z`.
pub fn format_wall(wall_ns: i64) -> String {
    let secs = wall_ns.div_euclid(1_000_000_000);
    let ms = wall_ns.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn qs(s: &KStr) -> String {
    let mut q = quoted(&s.text);
    if s.truncated {
        q.push_str("...");
    }
    q
}

fn flags(v: u64, table: FlagTable) -> String {
    names::join_flags(names::flag_list(v, table))
}

/// The decoded arguments as text, strace-style: `"src", "/target", "ext4", MS_BIND|MS_REC`.
fn args_text(a: &Action) -> String {
    use names::fd_name as fd;
    match a {
        Action::Mount {
            source,
            target,
            fstype,
            flags: f,
        } => format!(
            "{}, {}, {}, {}",
            qs(source),
            qs(target),
            qs(fstype),
            names::mount_flags(*f)
        ),
        Action::Umount { target, flags: f } => {
            format!("{}, {}", qs(target), names::umount_flags(*f))
        }
        Action::Unlink {
            dirfd,
            path,
            rmdir,
            call,
        } => match call {
            UnlinkCall::Unlinkat => format!(
                "{}, {}, {}",
                fd(*dirfd),
                qs(path),
                if *rmdir { "AT_REMOVEDIR" } else { "0" }
            ),
            _ => qs(path),
        },
        Action::Unshare { flags: f } => names::clone_flags(*f),
        Action::Setns { fd: f, nstype } => format!("{f}, {}", names::clone_flags(*nstype)),
        Action::Clone {
            flags: f,
            clone3: false,
        } => names::join_flags(names::clone_flag_list_with_signal(*f)),
        Action::Clone {
            flags: f,
            clone3: true,
        } => format!("{{flags={}}}", names::clone_flags(*f)),
        Action::Fsopen { fstype, flags: f } => {
            format!("{}, {}", qs(fstype), flags(*f, names::FSOPEN_FLAGS))
        }
        Action::Fsconfig {
            fd: f,
            cmd,
            key,
            value,
        } => format!(
            "{f}, {}, {}, {}",
            names::fsconfig_cmd(*cmd).map_or_else(|| cmd.to_string(), str::to_owned),
            qs(key),
            qs(value)
        ),
        Action::Fsmount {
            fd: f,
            flags: fl,
            attr_flags,
        } => format!(
            "{f}, {}, {}",
            flags(*fl, names::FSMOUNT_FLAGS),
            names::mount_attr_flags(*attr_flags)
        ),
        Action::MoveMount {
            from_dirfd,
            from_path,
            to_dirfd,
            to_path,
            flags: f,
        } => format!(
            "{}, {}, {}, {}, {}",
            fd(*from_dirfd),
            qs(from_path),
            fd(*to_dirfd),
            qs(to_path),
            names::move_mount_flags(*f)
        ),
        Action::OpenTree {
            dirfd,
            path,
            flags: f,
        } => format!(
            "{}, {}, {}",
            fd(*dirfd),
            qs(path),
            names::open_tree_flags(*f)
        ),
        Action::MountSetattr {
            dirfd,
            path,
            flags: f,
            attr_set,
            attr_clr,
            propagation,
        } => format!(
            "{}, {}, {}, {{attr_set={}, attr_clr={}, propagation={}}}",
            fd(*dirfd),
            qs(path),
            names::at_flags(*f),
            names::mount_attr_flags(*attr_set),
            names::mount_attr_flags(*attr_clr),
            names::mount_flags(*propagation)
        ),
        Action::PivotRoot { new_root, put_old } => format!("{}, {}", qs(new_root), qs(put_old)),
        Action::Chroot { path } => qs(path),
        Action::Fork { child } => format!("child={child}"),
        Action::Exec { filename } => qs(filename),
        Action::Exit => String::new(),
    }
}

/// A return value that is a negative errno.
fn is_errno(ret: i64) -> bool {
    (-4095..0).contains(&ret)
}

fn errno_of(ret: i64) -> Option<String> {
    if !is_errno(ret) {
        return None;
    }
    let n = (-ret) as i32;
    Some(names::errno_name(n).map_or_else(|| format!("errno {n}"), str::to_owned))
}

/// One readable line: time, pid[/tid](comm), mount namespace, call with decoded arguments, result.
pub fn event_line(ev: &Event, wall_ns: i64) -> String {
    let t = &ev.task;
    let mut s = format_wall(wall_ns);
    let _ = write!(s, " {}", t.pid);
    if t.tid != t.pid {
        let _ = write!(s, "/{}", t.tid);
    }
    let _ = write!(s, "({}", escape(&t.comm.text));
    if t.comm.truncated {
        s.push_str("...");
    }
    let _ = write!(
        s,
        ") mnt:{} {}({})",
        t.mnt_ns.inum,
        ev.action.name(),
        args_text(&ev.action)
    );
    match (&ev.action, ev.ret) {
        // Lifecycle events (tracepoints, not syscalls) have no result.
        (Action::Fork { .. } | Action::Exec { .. } | Action::Exit, None) => {}
        (_, None) => s.push_str(" = ?"),
        (_, Some(r)) => match errno_of(r) {
            Some(name) => {
                let _ = write!(s, " = -1 {name}");
            }
            None => {
                let _ = write!(s, " = {r}");
            }
        },
    }
    if let Some(ns) = ev.new_mnt_ns {
        let _ = write!(s, " -> mnt:{}", ns.inum);
    }
    if let Some(d) = &ev.dir {
        let _ = write!(s, " (dir {})", qs(d));
    }
    // What an fd, dirfd or cwd argument named, when the kernel resolved it.
    for (arg, r) in ev.action.path_args().iter().zip(&ev.resolved) {
        if let (Some((name, _)), Some(r)) = (arg, r) {
            let _ = write!(s, " ({name} {})", qs(&r.path));
        }
    }
    s
}

fn kstr_json(m: &mut Map<String, Value>, trunc: &mut Vec<Value>, key: &str, v: &KStr) {
    m.insert(key.to_owned(), Value::String(v.text.clone()));
    if v.truncated {
        trunc.push(Value::String(key.to_owned()));
    }
}

fn list(v: Vec<String>) -> Value {
    Value::Array(v.into_iter().map(Value::String).collect())
}

/// The decoded arguments under their man-page names.
fn args_json(a: &Action, m: &mut Map<String, Value>, tr: &mut Vec<Value>) {
    use names::flag_list as fl;
    match a {
        Action::Mount {
            source,
            target,
            fstype,
            flags,
        } => {
            kstr_json(m, tr, "source", source);
            kstr_json(m, tr, "target", target);
            kstr_json(m, tr, "filesystemtype", fstype);
            m.insert("mountflags".into(), list(names::mount_flag_list(*flags)));
        }
        Action::Umount { target, flags } => {
            kstr_json(m, tr, "target", target);
            m.insert("flags".into(), list(fl(*flags, names::UMOUNT_FLAGS)));
        }
        Action::Unlink {
            dirfd,
            path,
            rmdir,
            call,
        } => {
            if *call == UnlinkCall::Unlinkat {
                m.insert("dirfd".into(), json!(dirfd));
                let f = if *rmdir { AT_REMOVEDIR } else { 0 };
                m.insert("flags".into(), list(fl(f, names::AT_FLAGS)));
            }
            kstr_json(m, tr, "pathname", path);
        }
        Action::Unshare { flags } => {
            m.insert("flags".into(), list(fl(*flags, names::CLONE_FLAGS)));
        }
        Action::Setns { fd, nstype } => {
            m.insert("fd".into(), json!(fd));
            m.insert("nstype".into(), list(fl(*nstype, names::CLONE_FLAGS)));
        }
        Action::Clone { flags, clone3 } => {
            let l = if *clone3 {
                fl(*flags, names::CLONE_FLAGS)
            } else {
                names::clone_flag_list_with_signal(*flags)
            };
            m.insert("flags".into(), list(l));
        }
        Action::Fsopen { fstype, flags } => {
            kstr_json(m, tr, "fsname", fstype);
            m.insert("flags".into(), list(fl(*flags, names::FSOPEN_FLAGS)));
        }
        Action::Fsconfig {
            fd,
            cmd,
            key,
            value,
        } => {
            m.insert("fd".into(), json!(fd));
            m.insert(
                "cmd".into(),
                names::fsconfig_cmd(*cmd).map_or_else(|| json!(cmd), |n| json!(n)),
            );
            kstr_json(m, tr, "key", key);
            kstr_json(m, tr, "value", value);
        }
        Action::Fsmount {
            fd,
            flags,
            attr_flags,
        } => {
            m.insert("fd".into(), json!(fd));
            m.insert("flags".into(), list(fl(*flags, names::FSMOUNT_FLAGS)));
            m.insert(
                "attr_flags".into(),
                list(fl(*attr_flags, names::MOUNT_ATTR_FLAGS)),
            );
        }
        Action::MoveMount {
            from_dirfd,
            from_path,
            to_dirfd,
            to_path,
            flags,
        } => {
            m.insert("from_dirfd".into(), json!(from_dirfd));
            kstr_json(m, tr, "from_pathname", from_path);
            m.insert("to_dirfd".into(), json!(to_dirfd));
            kstr_json(m, tr, "to_pathname", to_path);
            m.insert("flags".into(), list(fl(*flags, names::MOVE_MOUNT_FLAGS)));
        }
        Action::OpenTree { dirfd, path, flags } => {
            m.insert("dirfd".into(), json!(dirfd));
            kstr_json(m, tr, "path", path);
            m.insert("flags".into(), list(fl(*flags, names::OPEN_TREE_FLAGS)));
        }
        Action::MountSetattr {
            dirfd,
            path,
            flags,
            attr_set,
            attr_clr,
            propagation,
        } => {
            m.insert("dirfd".into(), json!(dirfd));
            kstr_json(m, tr, "path", path);
            m.insert("flags".into(), list(fl(*flags, names::AT_FLAGS)));
            m.insert(
                "attr_set".into(),
                list(fl(*attr_set, names::MOUNT_ATTR_FLAGS)),
            );
            m.insert(
                "attr_clr".into(),
                list(fl(*attr_clr, names::MOUNT_ATTR_FLAGS)),
            );
            m.insert(
                "propagation".into(),
                list(names::mount_flag_list(*propagation)),
            );
        }
        Action::PivotRoot { new_root, put_old } => {
            kstr_json(m, tr, "new_root", new_root);
            kstr_json(m, tr, "put_old", put_old);
        }
        Action::Chroot { path } => kstr_json(m, tr, "path", path),
        Action::Fork { child } => {
            m.insert("child".into(), json!(child));
        }
        Action::Exec { filename } => kstr_json(m, tr, "filename", filename),
        Action::Exit => {}
    }
}

/// One NDJSON object. Stable keys: kind, time, ts_ns, pid, tid, ppid, comm, mnt_ns (inode),
/// mnt_ns_id, net_ns, cgroup_id, syscall, ret, errno, then the arguments under their man-page
/// names; `truncated` lists the string fields the kernel cut short.
pub fn event_json(ev: &Event, wall_ns: i64) -> Value {
    let t = &ev.task;
    let mut m = Map::new();
    let mut tr = Vec::new();
    m.insert("kind".into(), json!("event"));
    m.insert("time".into(), json!(format_wall(wall_ns)));
    m.insert("ts_ns".into(), json!(t.ts_ns));
    m.insert("pid".into(), json!(t.pid));
    m.insert("tid".into(), json!(t.tid));
    m.insert("ppid".into(), json!(t.ppid));
    kstr_json(&mut m, &mut tr, "comm", &t.comm);
    m.insert("mnt_ns".into(), json!(t.mnt_ns.inum));
    m.insert("mnt_ns_id".into(), json!(t.mnt_ns.id));
    m.insert("net_ns".into(), json!(t.net_ns_inum));
    m.insert("cgroup_id".into(), json!(t.cgroup_id));
    m.insert("syscall".into(), json!(ev.action.name()));
    m.insert("ret".into(), json!(ev.ret));
    m.insert("errno".into(), json!(ev.ret.and_then(errno_of)));
    args_json(&ev.action, &mut m, &mut tr);
    if let Some(ns) = ev.new_mnt_ns {
        m.insert("new_mnt_ns".into(), json!(ns.inum));
        m.insert("new_mnt_ns_id".into(), json!(ns.id));
    }
    if let Some(d) = &ev.dir {
        kstr_json(&mut m, &mut tr, "dir", d);
    }
    let mut resolved = Map::new();
    for (arg, r) in ev.action.path_args().iter().zip(&ev.resolved) {
        if let (Some((name, _)), Some(r)) = (arg, r) {
            resolved.insert(
                (*name).into(),
                json!({"path": r.path.text, "mnt_id": r.mnt_id}),
            );
        }
    }
    if !resolved.is_empty() {
        m.insert("resolved".into(), Value::Object(resolved));
    }
    if !tr.is_empty() {
        m.insert("truncated".into(), Value::Array(tr));
    }
    Value::Object(m)
}

/// `N events lost between T1 and T2`.
pub fn lost_line(count: u64, first_wall_ns: i64, last_wall_ns: i64) -> String {
    format!(
        "{count} events lost between {} and {}",
        format_wall(first_wall_ns),
        format_wall(last_wall_ns)
    )
}

pub fn lost_json(count: u64, first_wall_ns: i64, last_wall_ns: i64) -> Value {
    json!({
        "kind": "lost",
        "time": format_wall(first_wall_ns),
        "count": count,
        "first": format_wall(first_wall_ns),
        "last": format_wall(last_wall_ns),
    })
}

/// Counts by syscall, failures, and lost events, for the end of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub lost: u64,
    /// What the run could not trace (a degraded run; the capture header's list): its events
    /// are missing, not absent.
    pub not_traced: Vec<String>,
    /// By [`Action::call_index`]: an array, as this is counted for every event.
    calls: [u64; CALL_NAMES.len()],
    failed: [u64; CALL_NAMES.len()],
}

impl Summary {
    pub fn add(&mut self, rec: &Record) {
        match rec {
            Record::Event(ev) => {
                self.events += 1;
                let i = ev.action.call_index();
                self.calls[i] += 1;
                if ev.ret.is_some_and(is_errno) {
                    self.failed[i] += 1;
                }
            }
            Record::Lost { count, .. } => self.lost = self.lost.saturating_add(*count),
            _ => {}
        }
    }

    /// Events by call name, calls seen only.
    pub fn by_syscall(&self) -> BTreeMap<&'static str, u64> {
        by_name(&self.calls)
    }

    /// Failed events by call name, calls that failed only.
    pub fn failed(&self) -> BTreeMap<&'static str, u64> {
        by_name(&self.failed)
    }

    pub fn render_text(&self) -> String {
        let mut s = format!("summary: {} events, {} lost\n", self.events, self.lost);
        if !self.not_traced.is_empty() {
            let _ = writeln!(
                s,
                "  degraded run, not traced: {}",
                escape(&self.not_traced.join(", "))
            );
        }
        let failed = self.failed();
        for (name, n) in &self.by_syscall() {
            let _ = write!(s, "  {name:<14} {n:>10}");
            if let Some(f) = failed.get(name) {
                let _ = write!(s, "  ({f} failed)");
            }
            s.push('\n');
        }
        s
    }

    pub fn render_json(&self) -> Value {
        json!({
            "kind": "summary",
            "events": self.events,
            "lost": self.lost,
            "not_traced": self.not_traced,
            "by_syscall": self.by_syscall(),
            "failed": self.failed(),
        })
    }
}

fn by_name(counts: &[u64; CALL_NAMES.len()]) -> BTreeMap<&'static str, u64> {
    CALL_NAMES
        .iter()
        .zip(counts)
        .filter(|&(_, &n)| n > 0)
        .map(|(&name, &n)| (name, n))
        .collect()
}
