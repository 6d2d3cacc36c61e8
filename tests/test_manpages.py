"""The manual pages: libvdeplug(3) and its vde_*(3) links, one page per
built-in scheme (named as Debian names them), vde_plug(1) and dpipe(1).
Every scheme's option is documented with its default, every page renders
without a warning, `man` finds ours when the environment's bin comes first
on PATH, and every page a page refers to exists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from vdeplug import _core, vnl

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "python" / "vdeplug.data" / "data" / "share" / "man"
INSTALLED = Path(sysconfig.get_path("data")) / "share" / "man"
BIN = Path(sys.executable).parent
PAGES = sorted(SRC.glob("man[0-9]/*.[0-9]"))
NETNODE = {"switch", "hub", "multi", "bonding"}
# Pages outside this package that ours may name: Debian's vde2, and the
# system's own (man-pages, iproute2, tcpdump).
ELSEWHERE = {
    ("vde_switch", "1"),
    ("ip", "8"),
    ("tcpdump", "8"),
    ("dlopen", "3"),
    ("poll", "2"),
    ("select", "2"),
    ("epoll", "7"),
    ("kill", "2"),
    ("user_namespaces", "7"),
    ("capabilities", "7"),
    ("sshd", "8"),
    ("passwd", "5"),
    ("syslog", "3"),
}

needs_man = pytest.mark.skipif(shutil.which("man") is None, reason="needs man (man-db)")


def man_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, MANWIDTH="200", LC_ALL="C.UTF-8", **extra)


def render(page: Path) -> subprocess.CompletedProcess[str]:
    """`man -l` from the page's man root, so `.so man1/x.1` resolves."""
    return subprocess.run(["man", "--warnings", "-l", str(page.relative_to(page.parent.parent))], cwd=page.parent.parent, capture_output=True, text=True, env=man_env())


def section(text: str, title: str) -> str:
    """One section of rendered text: from its heading to the next one."""
    m = re.search(rf"^{re.escape(title)}\n(.*?)(?=^\S|\Z)", text, re.M | re.S)
    return m.group(1) if m else ""


def page_of(scheme: str) -> Path:
    return SRC / "man1" / f"libvdeplug_{'netnode' if scheme in NETNODE else scheme}.1"


def default_forms(default: object) -> list[str]:
    """How a page may write an option's default: 14789, 0600, 64M."""
    if not isinstance(default, int) or isinstance(default, bool):
        return []
    forms = [str(default), f"0{default:o}"]
    for shift, suffix in ((30, "G"), (20, "M"), (10, "K")):
        if default and default % (1 << shift) == 0:
            forms.append(f"{default >> shift}{suffix}")
    return forms


def documented_options(page: Path) -> dict[str, str]:
    """The terms of the OPTIONS section (`.TP` and `.TQ` items: `.BI port= n`,
    `.B v4`) → the paragraph that explains them (shared by grouped terms)."""
    src = page.read_text()
    assert "\n.SH OPTIONS\n" in src, f"{page.name}: no OPTIONS section"
    opts = src.split("\n.SH OPTIONS\n", 1)[1].split("\n.SH ", 1)[0]
    found: dict[str, str] = {}
    for item in ("\n" + opts).split("\n.TP\n")[1:]:
        lines = item.split("\n")
        terms = [lines[0]]
        while len(lines) > 2 and lines[1] == ".TQ":
            terms.append(lines[2])
            lines = lines[2:]
        body = "\n".join(lines[1:]).split("\n.PP\n", 1)[0]
        for term in terms:
            m = re.match(r"\.(?:B|BI|BR|I|IB)\s+\"?([\w-]+)", term)
            assert m, f"{page.name}: OPTIONS item {term!r} is not a term"
            found[m.group(1)] = body
    return found


@pytest.mark.parametrize("plugin", _core.builtin_plugins(), ids=lambda p: p[0])
def test_every_builtin_scheme_has_a_page_with_each_option_and_its_default(plugin: tuple) -> None:
    """A new scheme or option without documentation fails here."""
    name, _syntax, _nested, _descr, options = plugin
    page = page_of(name)
    assert page.is_file(), f"{name}:// has no page {page.name}"
    src = page.read_text()
    synopsis = src.split(".SH SYNOPSIS", 1)[1].split("\n.SH ", 1)[0] if ".SH SYNOPSIS" in src else ""
    assert f"{name}://" in synopsis.replace("\\fB", "").replace("\\fR", "").replace("\\fI", "").replace('"', "").replace(" ", ""), f"{page.name}: SYNOPSIS does not show {name}://"
    documented = documented_options(page)
    if not options:
        opts = src.split("\n.SH OPTIONS\n", 1)[1].split("\n.SH ", 1)[0]
        assert re.match(r"None\b", opts), f"{page.name}: say that {name}:// takes no option"
    for opt_name, default, _help in options:
        assert opt_name in documented, f"{page.name}: option {opt_name!r} of {name}:// is not documented under OPTIONS"
        forms = default_forms(default)
        if forms:
            body = documented[opt_name]
            assert re.search(r"\bDefault\b", body), f"{page.name}: {opt_name} does not say its default"
            assert any(re.search(rf"(?<![\w.]){re.escape(f)}(?!\w|\.\d)", body) for f in forms), f"{page.name}: {opt_name} does not give its default ({' or '.join(forms)})"


def test_netnode_names_are_links_to_one_page() -> None:
    """Debian has libvdeplug_switch(1) & co.: ours are `.so` links."""
    for name in sorted(NETNODE):
        link = SRC / "man1" / f"libvdeplug_{name}.1"
        assert link.read_text().strip() == ".so man1/libvdeplug_netnode.1", link


def test_every_function_of_the_header_has_a_page() -> None:
    """Each vde_* function of libvdeplug.h has a man3 page: libvdeplug.3,
    which names it, or a link to it."""
    header = (ROOT / "rust" / "include" / "libvdeplug.h").read_text()
    functions = sorted(set(re.findall(r"\b(vde_[a-z_]+)\s*\(", header)))
    assert {"vde_open", "vde_open_real", "vde_recv", "vde_send", "vde_datafd", "vde_ctlfd", "vde_close"} <= set(functions)
    main = SRC / "man3" / "libvdeplug.3"
    name_line = main.read_text().split(".SH SYNOPSIS")[0]
    for f in functions:
        assert re.search(rf"\b{f}\b", name_line), f"libvdeplug.3's NAME does not list {f}"
        link = SRC / "man3" / f"{f}.3"
        assert link.is_file() and link.read_text().strip() == ".so man3/libvdeplug.3", f"no {link.name}"


@needs_man
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_renders_without_warnings(page: Path) -> None:
    r = render(page)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    assert "NAME" in r.stdout and "SEE ALSO" in r.stdout


def references(text: str) -> set[tuple[str, str]]:
    """`.BR name (n)` and inline `\\fBname\\fR(n)` references."""
    refs = set(re.findall(r"^\.BR\s+([\w.-]+)\s+\((\d)\)", text, re.M))
    refs |= set(re.findall(r"\\fB([\w.-]+)\\fR\s*\((\d)\)", text))
    return refs


def test_every_page_named_exists() -> None:
    """SEE ALSO (and any reference in the text) names our pages or the
    few well-known ones of other packages; nothing that does not exist."""
    ours = {(p.stem, p.suffix[1:]) for p in PAGES}
    for page in PAGES:
        text = page.read_text()
        if text.startswith(".so "):
            continue
        see_also = text.split(".SH SEE ALSO", 1)[1].split("\n.SH", 1)[0] if ".SH SEE ALSO" in text else ""
        assert references(see_also), f"{page.name}: no SEE ALSO"
        for ref in sorted(references(text)):
            assert ref in ours or ref in ELSEWHERE, f"{page.name} names {ref[0]}({ref[1]}), which is neither ours nor a known page"


def test_installed_pages_are_the_sources() -> None:
    """`pip install .` puts every page, man1 and man3, under the prefix."""
    if not INSTALLED.is_dir():
        pytest.skip(f"no {INSTALLED}: the package is not installed in this environment")
    for page in PAGES:
        inst = INSTALLED / page.parent.name / page.name
        assert inst.is_file(), f"{inst} not installed"
        assert inst.read_text() == page.read_text(), f"{inst} differs from the source (reinstall)"


@needs_man
@pytest.mark.parametrize(
    "name, section_, page",
    [
        ("libvdeplug_vxvde", None, "man1/libvdeplug_vxvde.1"),
        ("libvdeplug_switch", None, "man1/libvdeplug_netnode.1"),
        ("vde_open", None, "man3/libvdeplug.3"),
        ("vde_recv", "3", "man3/libvdeplug.3"),
        ("libvdeplug", "3", "man3/libvdeplug.3"),
        ("vde_plug", None, "man1/vde_plug.1"),
    ],
)
def test_man_finds_ours_before_debians(name: str, section_: str | None, page: str) -> None:
    """Debian's vdeplug4 has pages of these names; with the environment's
    bin first on PATH (MANPATH unset), man picks ours."""
    if not (INSTALLED / page).is_file():
        pytest.skip("the package is not installed in this environment")
    env = man_env()
    env.pop("MANPATH", None)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    r = subprocess.run(["man", "-w", *([section_] if section_ else []), name], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.split()[0]).resolve() == (INSTALLED / page).resolve(), r.stdout


@needs_man
def test_vde_plug_page_lists_the_default_network_in_the_order_the_code_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".vdeplug").mkdir()
    (tmp_path / ".vde2").mkdir()
    (tmp_path / ".vde2" / "default.switch").write_text("vxlan://239.9.9.8\n")
    assert vnl.default_vnl() == "vxlan://239.9.9.8"
    (tmp_path / ".vdeplug" / "default").write_text("vxvde://239.9.9.9\n")
    assert vnl.default_vnl() == "vxvde://239.9.9.9", "~/.vdeplug/default comes first"
    (tmp_path / ".vdeplug" / "default").unlink()
    (tmp_path / ".vde2" / "default.switch").unlink()
    assert vnl.default_vnl() == "vde://"
    text = section(render(SRC / "man1" / "vde_plug.1").stdout, "DEFAULT NETWORK")
    order = [text.find(s) for s in ("~/.vdeplug/default", "~/.vde2/default.switch", "/run/vde.ctl", "/tmp/vde.ctl")]
    assert -1 not in order and order == sorted(order), text


def test_vde_plug_without_url_or_default_network_says_where_it_looked(tmp_path: Path) -> None:
    """No URL, no ~/.vdeplug/default, no ~/.vde2/default.switch and no
    system switch: the message names the files looked for and the fix."""
    if any(os.path.lexists(p) for p in ("/run/vde.ctl", "/var/run/vde.ctl", "/tmp/vde.ctl")):
        pytest.skip("a system switch directory exists on this machine")
    home = tmp_path / "home"
    home.mkdir()
    r = subprocess.run([str(BIN / "vde_plug")], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, env=dict(os.environ, HOME=str(home)))
    assert r.returncode == 1, r.stderr
    for said in (f"{home}/.vdeplug/default", f"{home}/.vde2/default.switch", "/tmp/vde.ctl", "~/.vdeplug/default", "switch:///tmp/vde.ctl"):
        assert said in r.stderr, (said, r.stderr)
    # A default network that is there but down gets the plain hint.
    (home / ".vdeplug").mkdir()
    (home / ".vdeplug" / "default").write_text("vde:///nonexistent/switch\n")
    r = subprocess.run([str(BIN / "vde_plug")], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, env=dict(os.environ, HOME=str(home)))
    assert r.returncode == 1 and "no default network" not in r.stderr and "/nonexistent/switch" in r.stderr, r.stderr
