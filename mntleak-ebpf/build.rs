// Rebuild when bpf-linker changes (it links the object). A missing linker is reported by rustc
// itself when linking, so it is only a warning here.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found: {err}"),
    }
}
