//! vdeplug's Rust core: everything that touches frames. Wire formats
//! (`wire`), the MAC learning table, the transports (one per plugin) and the
//! forwarding loop. `py` is the only module that knows about Python.
#![deny(unsafe_code)]

pub mod cplugin;
pub mod fwd;
pub mod mac_table;
pub mod offload;
pub mod plugins;
pub mod sys;
pub mod transport;
pub mod vnl;
pub mod wire;

#[cfg(test)]
mod fuzz;

#[cfg(feature = "python")]
mod py;
#[cfg(feature = "python")]
mod py_vnl;
