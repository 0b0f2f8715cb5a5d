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
    let chrooted = !root.is_empty();
    let root = root.trim_end_matches('/');
    // Most paths arrive absolute and clean, and runc's pivot_root(".", ".") and umount2(".")
    // name a clean directory: concatenated, not split and rejoined.
    if let Some((d, rel)) = clean_parts(dir, p) {
        out.push_str(root);
        for part in [d, rel] {
            match part {
                "" | "/" => {}
                abs if abs.starts_with('/') => out.push_str(abs),
                name => {
                    out.push('/');
                    out.push_str(name);
                }
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        var_run_alias(out, chrooted);
        return;
    }
    by_components(out, root, chrooted, dir, p);
}

/// The general case of [`resolve_into`]: `p` (after `dir` when relative) split into components
/// and rejoined under `root` (trimmed of its trailing slash).
fn by_components(out: &mut String, root: &str, chrooted: bool, dir: Option<&str>, p: &str) {
    out.push_str(root);
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
    var_run_alias(out, chrooted);
}

/// /var/run is a symlink to /run on every current distribution; the kernel lists /run.
fn var_run_alias(out: &mut String, chrooted: bool) {
    if !chrooted && (out == "/var/run" || out.starts_with("/var/run/")) {
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
    let b = p.as_bytes();
    if b.ends_with(b"/") {
        return false;
    }
    // Most paths hold neither "//" nor "/.": one branch-free pass over the byte pairs, which the
    // compiler vectorises (this runs for most events' paths; a memchr per slash cost ~3x more).
    let suspect = b.iter().zip(&b[1..]).fold(false, |acc, (&a, &c)| {
        acc | ((a == b'/') & ((c == b'/') | (c == b'.')))
    });
    // A dot after a slash may still start a name (".hidden"): every component checked exactly.
    !suspect
        || memchr::memchr_iter(b'/', b).all(|i| {
            !matches!(
                &b[i + 1..],
                [] | [b'/', ..] | [b'.'] | [b'.', b'/', ..] | [b'.', b'.'] | [b'.', b'.', b'/', ..]
            )
        })
}

/// `p` as (directory, rest), both clean, when nothing needs splitting: a clean absolute `p`
/// alone, or "." or a clean relative `p` under a clean `dir`.
fn clean_parts<'a>(dir: Option<&'a str>, p: &'a str) -> Option<(&'a str, &'a str)> {
    if is_normal(p) {
        return Some(("", p));
    }
    let d = dir.filter(|d| !p.starts_with('/') && is_normal(d))?;
    if p.is_empty() || p == "." {
        Some((d, ""))
    } else {
        is_normal_relative(p).then_some((d, p))
    }
}

/// `p` is relative and normalized: `is_normal("/" + p)`, without building it.
fn is_normal_relative(p: &str) -> bool {
    !p.is_empty() && !p.starts_with('/') && p.split('/').all(|c| !matches!(c, "" | "." | ".."))
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

/// A path from a [`PathSet`] as a map key, hashed and compared by address: the set holds each
/// string once, so equal addresses are equal strings, and an index update costs no hashing or
/// comparing of the path's bytes (the engine's mount indexes change on every modelled mount).
#[derive(Clone, Debug)]
pub(crate) struct Interned(pub Arc<str>);

impl PartialEq for Interned {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Interned {}

impl std::hash::Hash for Interned {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        Arc::as_ptr(&self.0).cast::<u8>().hash(h);
    }
}

impl std::ops::Deref for Interned {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
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
    // A vectorised byte search: this runs for every unlink.
    match memchr::memrchr(b'/', p.as_bytes()) {
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
        assert_eq!(resolve("", Some("/var"), "run"), "/run");
        assert_eq!(resolve("", Some("/var/run"), "x"), "/run/x");
        assert_eq!(resolve("", Some("/var/run"), "."), "/run");
        assert_eq!(resolve("/jail", Some("/var"), "run/x"), "/jail/var/run/x");
        assert_eq!(resolve("/jail/", None, "/var/run"), "/jail/var/run");
        assert_eq!(resolve("/", None, "/var/run/x"), "/var/run/x");
        assert_eq!(resolve("", Some("/m/rootfs"), "."), "/m/rootfs");
        assert_eq!(resolve("", Some("/m/rootfs"), ""), "/m/rootfs");
        assert_eq!(resolve("", Some("/"), "."), "/");
        assert_eq!(resolve("", Some("/"), "a/b"), "/a/b");
        assert_eq!(resolve("/r", Some("/"), "."), "/r");
        assert_eq!(resolve("/r", Some("/d"), "a"), "/r/d/a");
        assert_eq!(resolve("/r", None, "/"), "/r");
        assert_eq!(resolve("/r/", None, "/a/b"), "/r/a/b");
        assert_eq!(resolve("", Some("/d"), "a//b"), "/d/a/b");
        assert_eq!(resolve("", Some("/d"), "./a"), "/d/a");
        assert_eq!(resolve("", Some("/d/"), "a"), "/d/a");
        assert_eq!(resolve("", Some("/d/../e"), "a"), "/e/a");
    }

    /// The shortcuts for clean paths give what splitting into components gives.
    #[test]
    fn shortcuts_agree_with_the_general_case() {
        let parts = [
            "",
            "/",
            ".",
            "..",
            "a",
            "run",
            "/var",
            "/var/run",
            "/var/run/x",
            "/var/runner",
            "a/b",
            "/a/b",
            "a//b",
            "./a",
            "a/.",
            "a/..",
            "/a/",
            "/a/.",
            "/a/..",
            "/.a",
            "/..a/b",
            "//",
            "/d/../e",
            "x/./y",
            "run/x",
            // Longer than a vector register, with the flaw past its first lanes.
            "/var/lib/docker/overlay2/0123456789abcdef/merged",
            "/var/lib/docker/overlay2/0123456789abcdef/.merged",
            "/var/lib/docker/overlay2/0123456789abcdef//merged",
            "/var/lib/docker/overlay2/0123456789abcdef/merged/",
            "/var/lib/docker/overlay2/0123456789abcdef/../merged",
            "/var/lib/docker/overlay2/0123456789abcdef/./merged",
        ];
        let mut compared = 0;
        for root in ["", "/", "/r", "/r/"] {
            let dirs = parts
                .iter()
                .filter(|d| d.starts_with('/'))
                .map(|d| Some(*d));
            for dir in dirs.chain([None]) {
                for p in parts {
                    let mut general = String::new();
                    let trimmed = root.trim_end_matches('/');
                    by_components(&mut general, trimmed, !root.is_empty(), dir, p);
                    assert_eq!(resolve(root, dir, p), general, "{root:?} {dir:?} {p:?}");
                    compared += 1;
                }
            }
        }
        assert!(compared > 1000);
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
