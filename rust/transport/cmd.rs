//! cmd://command args — runs a command and talks to it with the stream
//! framing over its stdin/stdout (also `vde_plug URL = command args`).
//! At close the command gets SIGTERM (vdeplug4 means to, but swaps kill's
//! arguments) and is reaped.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::stream::{self, Stream};
use super::{ctx, err, Batch, Recv, SendOutcome, Transport};
use crate::sys;

pub struct Cmd {
    stream: Stream,
    child: Child,
    status: Option<i32>,
}

/// Spawn `argv` (no shell) with its stdin/stdout as our stream.
pub fn open(argv: &[String]) -> io::Result<Cmd> {
    let (prog, args) = argv.split_first().ok_or_else(|| err(io::ErrorKind::InvalidInput, "cmd: empty command"))?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| ctx(e, format!("cmd: cannot run {prog}")))?;
    let to_child: OwnedFd = child.stdin.take().ok_or_else(|| err(io::ErrorKind::Other, "cmd: no stdin pipe"))?.into();
    let from_child: OwnedFd = child.stdout.take().ok_or_else(|| err(io::ErrorKind::Other, "cmd: no stdout pipe"))?.into();
    Ok(Cmd { stream: stream::open(from_child, to_child)?, child, status: None })
}

/// Shell-style exit code of a finished child (128+signal when killed).
fn code(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

impl Cmd {
    /// The command's exit code once it has ended (waits briefly after EOF).
    pub fn exit_status(&mut self) -> Option<i32> {
        if self.status.is_none() {
            let deadline = Instant::now() + Duration::from_millis(500);
            while Instant::now() < deadline {
                match self.child.try_wait() {
                    Ok(Some(st)) => {
                        self.status = Some(code(st));
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
        }
        self.status
    }
}

impl Transport for Cmd {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        self.stream.recv(buf)
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.stream.send(frame)
    }
    fn data_fd(&self) -> RawFd {
        self.stream.data_fd()
    }
    fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<bool> {
        self.stream.recv_batch(batch)
    }
    fn send_batch(&mut self, batch: &Batch, idx: &[usize]) -> SendOutcome {
        self.stream.send_batch(batch, idx)
    }
    fn exit_status(&mut self) -> Option<i32> {
        Cmd::exit_status(self)
    }
}

impl Drop for Cmd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            sys::kill(self.child.id() as i32, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
