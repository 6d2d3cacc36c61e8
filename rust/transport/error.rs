//! io::Errors with context: a message that says what failed, keeping the
//! errno so Python raises the right OSError subclass.

use std::io;

/// An io::Error with a message, for setup failures.
pub fn err(kind: io::ErrorKind, msg: impl Into<String>) -> io::Error {
    io::Error::new(kind, msg.into())
}

/// An io::Error message with the errno it came from, so Python can raise
/// the right `OSError` subclass (FileNotFoundError, PermissionError...).
#[derive(Debug)]
pub struct Context {
    pub errno: Option<i32>,
    pub msg: String,
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Context {}

/// Prefix an io::Error with context, keeping its kind and errno.
pub fn ctx(e: io::Error, what: impl std::fmt::Display) -> io::Error {
    let errno = e.raw_os_error().or_else(|| errno_of(&e));
    io::Error::new(e.kind(), Context { errno, msg: format!("{what}: {}", describe(&e)) })
}

/// An io::Error's message without std's " (os error N)" suffix.
pub fn describe(e: &io::Error) -> String {
    match e.get_ref().and_then(|r| r.downcast_ref::<Context>()) {
        Some(c) => c.msg.clone(),
        None => {
            let t = e.to_string();
            match t.rfind(" (os error ") {
                Some(i) => t[..i].to_string(),
                None => t,
            }
        }
    }
}

/// The errno behind an io::Error, looking through `Context`.
pub fn errno_of(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| e.get_ref().and_then(|r| r.downcast_ref::<Context>()).and_then(|c| c.errno))
}
