//! Which process removes what a transport made (socket files, a switch
//! directory) and stops what it started (commands): the process that opened
//! it, or the one it was handed to across a fork (a daemon), never a forked
//! child that merely holds a copy.

use std::sync::atomic::{AtomicU64, Ordering};

/// (from_pid << 32) | to_pid: `to` has taken over what `from` opened (a
/// daemon after its forks). 0: nobody has.
static HEIR: AtomicU64 = AtomicU64::new(0);

/// This process takes over the files and commands opened by process
/// `from` (its ancestor, before daemonizing): it removes and stops them at close.
pub fn inherit_from(from: u32) {
    HEIR.store((u64::from(from) << 32) | u64::from(std::process::id()), Ordering::SeqCst);
}

/// Whether this process owns what process `owner` opened: it is that
/// process, or inherited from it. A forked child that did not inherit must
/// not remove its parent's socket files or stop its parent's commands.
pub fn owns(owner: u32) -> bool {
    let me = std::process::id();
    me == owner || HEIR.load(Ordering::SeqCst) == (u64::from(owner) << 32) | u64::from(me)
}
