//! Path arithmetic on absolute, normalized paths ("/" or "/a/b", never a trailing slash).

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use super::HashSet;

/// Normalizes `p` as seen by a process whose root is `root` ("" for the namespace root) and whose
/// relative paths resolve against `dir` (absolute inside the process root; "/" when unknown).
pub fn resolve(root: &str, dir: Option<&str>, p: &str) -> String {
    let mut out = String::with_capacity(root.len() + dir.map_or(0, str::len) + p.len() + 1);
    resolve_into(&mut out, root, dir, p);
    out
}

/// [`resolve`] into `out` (cleared first), reusing its buffer.
pub fn resolve_into(out: &mut String, root: &str, dir: Option<&str>, p: &str) {
    out.clear();
    // At most this long: one allocation, if any.
    out.reserve(root.len() + dir.map_or(0, str::len) + p.len() + 1);
    if root.is_empty() && is_normal(p) {
        // Most paths arrive absolute and clean: nothing to split and rejoin.
        out.push_str(p);
        return;
    }
    out.push_str(root.trim_end_matches('/'));
    // Components are appended as "/name"; ".." drops the last one, never the root.
    let base = out.len();
    if !p.starts_with('/')
        && let Some(d) = dir
    {
        push_components(out, base, d);
    }
    push_components(out, base, p);
    if out.is_empty() {
        out.push('/');
    }
    // /var/run is a symlink to /run on every current distribution; the kernel lists /run.
    if root.is_empty() && (out == "/var/run" || out.starts_with("/var/run/")) {
        out.replace_range(..8, "/run");
    }
}

/// `p` is absolute and normalized already (no empty, `.` or `..` component, no trailing slash),
/// and not under the `/var/run` alias that `resolve` rewrites.
fn is_normal(p: &str) -> bool {
    if p == "/" {
        return true;
    }
    if !p.starts_with('/') || p == "/var/run" || p.starts_with("/var/run/") {
        return false;
    }
    // Bytewise: every component non-empty and neither `.` nor `..`.
    let b = p.as_bytes();
    let mut start = 1;
    for i in 1..=b.len() {
        if i == b.len() || b[i] == b'/' {
            if matches!(&b[start..i], b"" | b"." | b"..") {
                return false;
            }
            start = i + 1;
        }
    }
    true
}

fn push_components(out: &mut String, base: usize, s: &str) {
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if let Some(i) = out[base..].rfind('/') {
                    out.truncate(base + i);
                }
            }
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
}

/// `base` joined with a relative path (no leading slash), "" meaning `base` itself.
pub fn join(base: &str, rel: &str) -> String {
    let mut out = String::with_capacity(base.len() + 1 + rel.len());
    join_into(&mut out, base, rel);
    out
}

fn join_into(out: &mut String, base: &str, rel: &str) {
    if rel.is_empty() {
        out.push_str(base);
        return;
    }
    // Concatenated directly: `format!` costs more than the copy (this runs per modelled mount).
    out.push_str(if base == "/" { "" } else { base });
    out.push('/');
    out.push_str(rel);
}

/// The path strings of the model (mountpoints, roots, dentries, sources), each held once: a
/// namespace copy or a re-index finds its strings here instead of allocating them again.
#[derive(Default)]
pub(crate) struct PathSet {
    set: RefCell<HashSet<Arc<str>>>,
    /// Strings no longer used elsewhere are dropped when the set reaches this size.
    sweep_at: Cell<usize>,
    scratch: RefCell<String>,
}

/// The set is swept no more often than at this size.
const PATHS_MIN_SWEEP: usize = 4096;

impl PathSet {
    pub fn get(&self, s: &str) -> Arc<str> {
        let mut set = self.set.borrow_mut();
        if let Some(a) = set.get(s) {
            return a.clone();
        }
        if set.len() >= self.sweep_at.get().max(PATHS_MIN_SWEEP) {
            set.retain(|a| Arc::strong_count(a) > 1);
            self.sweep_at.set(set.len() * 2);
        }
        let a: Arc<str> = Arc::from(s);
        set.insert(a.clone());
        a
    }

    /// [`join`], held in the set.
    pub fn join(&self, base: &str, rel: &str) -> Arc<str> {
        let mut buf = self.scratch.borrow_mut();
        buf.clear();
        join_into(&mut buf, base, rel);
        self.get(&buf)
    }
}

/// The part of `path` below `prefix` ("" for equal), or None when `path` is not under it.
pub fn strip<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix == "/" {
        return Some(path.strip_prefix('/').unwrap_or(path));
    }
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

#[cfg(test)]
pub fn parent(p: &str) -> Option<&str> {
    if p == "/" {
        return None;
    }
    match p.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&p[..i]),
        None => None,
    }
}

pub fn basename(p: &str) -> &str {
    // A byte search: this runs for every unlink.
    match p.bytes().rposition(|b| b == b'/') {
        Some(i) => &p[i + 1..],
        None => p,
    }
}

#[cfg(test)]
mod t {
    use super::*;
    #[test]
    fn paths() {
        assert_eq!(resolve("", None, "/a//b/./c/"), "/a/b/c");
        assert_eq!(resolve("", Some("/x/y"), "../z"), "/x/z");
        assert_eq!(resolve("/jail", None, "/a"), "/jail/a");
        assert_eq!(resolve("", None, "/"), "/");
        assert_eq!(resolve("", None, "/var/run/netns/x"), "/run/netns/x");
        assert_eq!(resolve("", None, "/var/runner"), "/var/runner");
        assert_eq!(resolve("", None, "/var/run"), "/run");
        assert_eq!(resolve("", None, "/a/.."), "/");
        assert_eq!(resolve("", Some("/x"), "/a/b"), "/a/b");
        assert_eq!(resolve("", Some("/x"), "a"), "/x/a");
        assert_eq!(resolve("", None, "/a/./b"), "/a/b");
        assert_eq!(resolve("", None, "/a/"), "/a");
        assert_eq!(resolve("", None, "a"), "/a");
        assert_eq!(resolve("", None, ""), "/");
        assert_eq!(resolve("", None, "/.x/..y"), "/.x/..y");
        assert_eq!(resolve("", None, "/.."), "/");
        assert_eq!(resolve("/jail", None, "/../a/../.."), "/jail");
        assert_eq!(resolve("", Some("/a/b"), "../../../c"), "/c");
        assert_eq!(resolve("", Some("/var"), "run/x"), "/run/x");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", ""), "/a");
        let set = PathSet::default();
        let a = set.join("/a", "b");
        assert_eq!(&*a, "/a/b");
        assert!(Arc::ptr_eq(&a, &set.get("/a/b")), "held once");
        assert_eq!(strip("/a/b", "/a"), Some("b"));
        assert_eq!(strip("/ab", "/a"), None);
        assert_eq!(strip("/a", "/"), Some("a"));
        assert_eq!(strip("/", "/"), Some(""));
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(basename("/a/b"), "b");
    }
}
