// The SONAME C plugins are linked against.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libvdeplug_mod.so.2");
}
