//! `vde_plug` as a login shell (`/etc/passwd`: `vdeuser:…:/path/to/vdeplug/lib/vde_plug`).
//!
//! A login starts its shell with argv[0] `-vde_plug` (interactive) or with
//! `-c COMMAND` (`ssh vdeuser@host vde_plug`). A Python console script never
//! sees argv[0] (the kernel starts the interpreter with the script's path),
//! so this small program does: it runs the package's `vde_plug` with
//! `--login-shell ARGV0` in front of the login's arguments, and the CLI
//! applies vdeplug4's rules (cli.py: `login_shell`).
//!
//! The package is the directory above this program's (`vdeplug/lib/..`);
//! the interpreter is the environment's (`<prefix>/bin/python3`, for
//! `<prefix>/lib/pythonX.Y/site-packages/vdeplug/lib`), else the system's.
//! Python runs isolated (-I): the login's environment cannot point it at
//! other code.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The interpreter for the package at `site` (the directory holding `vdeplug`).
fn interpreter(site: &Path) -> Option<PathBuf> {
    let prefix = site.ancestors().nth(3).map(|p| p.join("bin").join("python3"));
    prefix.into_iter().chain(["/usr/bin/python3", "/usr/local/bin/python3"].map(PathBuf::from)).find(|p| p.is_file())
}

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| OsString::from("vde_plug"));
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vde_plug: cannot find myself: {e}");
            return ExitCode::from(1);
        }
    };
    // <site>/vdeplug/lib/vde_plug
    let Some(site) = exe.parent().and_then(Path::parent).and_then(Path::parent) else {
        eprintln!("vde_plug: {} is not inside the vdeplug package", exe.display());
        return ExitCode::from(1);
    };
    let Some(python) = interpreter(site) else {
        eprintln!("vde_plug: no python3 found for {}", site.display());
        return ExitCode::from(1);
    };
    let boot = "import sys; sys.path.insert(0, sys.argv.pop(1)); from vdeplug.cli import main; sys.exit(main())";
    let mut cmd = Command::new(&python);
    cmd.arg("-I").arg("-c").arg(boot).arg(site).arg("--login-shell").arg(&argv0).args(args);
    let e = cmd.exec();
    eprintln!("vde_plug: {}: {e}", python.display());
    ExitCode::from(1)
}
