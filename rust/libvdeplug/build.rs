// The drop-in's SONAME: what qemu and every libvdeplug program ask for.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libvdeplug.so.2");
}
