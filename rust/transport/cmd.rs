//! cmd://command args — runs a command and talks to it with the stream
//! framing over its stdin/stdout (also `vde_plug URL = command args`).
//! At close the command and every process it started get SIGTERM (vdeplug4
//! means to, but swaps kill's arguments), SIGKILL after `GRACE` if still
//! running, and it is reaped: a command that ignores SIGTERM delays the end
//! of `vde_plug` by half a second, never beyond the second it promises. Descendants are found through /proc rather than by giving the
//! command its own process group, which would stop `ssh` asking for a
//! password on the terminal (SIGTTIN).

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::stream::{self, Stream};
use super::{ctx, err, Batch, Link, Recv, SendOutcome, Transport};
use crate::sys;

/// How long a command and its descendants have to exit after SIGTERM
/// before they get SIGKILL.
pub const GRACE: Duration = Duration::from_millis(500);

pub struct Cmd {
    stream: Stream,
    child: Child,
    status: Option<i32>,
    /// The process that started the command: only it stops the command.
    owner: u32,
}

/// Spawn `argv` (no shell) with its stdin/stdout as our stream.
pub fn open(argv: &[String]) -> io::Result<Cmd> {
    let (prog, args) = argv.split_first().ok_or_else(|| err(io::ErrorKind::InvalidInput, "cmd: empty command"))?;
    let mut child = Command::new(prog).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().map_err(|e| ctx(e, format!("cmd: cannot run {prog}")))?;
    let to_child: OwnedFd = child.stdin.take().ok_or_else(|| err(io::ErrorKind::Other, "cmd: no stdin pipe"))?.into();
    let from_child: OwnedFd = child.stdout.take().ok_or_else(|| err(io::ErrorKind::Other, "cmd: no stdout pipe"))?.into();
    Ok(Cmd { stream: stream::open(from_child, to_child)?, child, status: None, owner: std::process::id() })
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
    fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<Link> {
        self.stream.recv_batch(batch)
    }
    fn send_batch(&mut self, batch: &Batch, idx: &[usize]) -> SendOutcome {
        self.stream.send_batch(batch, idx)
    }
    fn exit_status(&mut self) -> Option<i32> {
        Cmd::exit_status(self)
    }
}

/// Every live descendant of `root` (children before their children), from
/// the parent pids in /proc.
fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces.
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
            let Some((_, rest)) = stat.rsplit_once(')') else { continue };
            let mut f = rest.split_whitespace();
            let state = f.next().unwrap_or("");
            if let Some(ppid) = f.next().and_then(|p| p.parse::<i32>().ok()) {
                if state != "Z" {
                    parent_of.push((pid, ppid));
                }
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent_of.iter().filter(|&&(_, pp)| pp == p).map(|&(c, _)| c));
        i += 1;
    }
    out.remove(0);
    out
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, r)| !r.trim_start().starts_with('Z')))
}

impl Drop for Cmd {
    fn drop(&mut self) {
        if !super::owner::owns(self.owner) {
            return; // a forked child's copy: the command is the parent's
        }
        let pid = self.child.id() as i32;
        let running = matches!(self.child.try_wait(), Ok(None));
        let family = if running { descendants(pid) } else { Vec::new() };
        if running {
            sys::kill(pid, libc::SIGTERM);
        }
        for &p in &family {
            sys::kill(p, libc::SIGTERM);
        }
        let deadline = Instant::now() + GRACE;
        let mut done = false;
        while Instant::now() < deadline {
            let child_gone = !matches!(self.child.try_wait(), Ok(None));
            if child_gone && !family.iter().any(|&p| alive(p)) {
                done = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !done {
            // Also what the command started meanwhile (a shell loop ignoring TERM).
            let late = if matches!(self.child.try_wait(), Ok(None)) { descendants(pid) } else { Vec::new() };
            let _ = self.child.kill();
            for &p in family.iter().chain(&late).filter(|&&p| alive(p)) {
                sys::kill(p, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- VNL

fn open_vnl(t: &Target, _args: &OpenArgs) -> OpenResult {
    // Quotes group words of the command (s2argv), so the text is taken verbatim.
    let words = crate::vnl::shell_words(&t.address).map_err(|e| t.error(format!("bad command line: {}", e.msg), &t.address))?;
    if words.is_empty() {
        return Err(t.error("cmd:// needs a command", &t.vnl));
    }
    let argv: Vec<String> = words.iter().map(|w| String::from_utf8_lossy(w).into_owned()).collect();
    Ok(Box::new(open(&argv)?))
}

pub const PLUGIN: Builtin =
    Builtin { scheme: "cmd", syntax: Syntax::Verbatim, options: &[], bare: None, nests: false, summary: "run a command speaking the stream framing on stdin/stdout", open: open_vnl };

use crate::plugins::{Builtin, OpenArgs, OpenResult, Target};
use crate::vnl::Syntax;
