//! The VNL grammar and the built-in plugin tables, for Python
//! (`vdeplug.vnl`, `vdeplug.registry`): one grammar, in `vnl.rs` and
//! `plugins.rs`; Python only adds converters for third-party plugins.
//! Text crosses as bytes (a `%XX` may decode to any byte); Python decodes
//! with surrogateescape.

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use crate::plugins::{self, Value};
use crate::vnl::{self, Syntax, VnlError};

/// `vdeplug.vnl.VNLError(msg, vnl, part)`.
pub fn vnl_error(py: Python<'_>, e: VnlError, vnl: &str) -> PyErr {
    match py.import("vdeplug.vnl").and_then(|m| m.getattr("VNLError")).and_then(|c| c.call1((e.msg.clone(), vnl, e.part.clone()))) {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    }
}

/// `vdeplug.registry.UnknownScheme`, listing what is available.
pub fn unknown_scheme(py: Python<'_>, scheme: &str, vnl: &str) -> PyErr {
    match py.import("vdeplug.registry").and_then(|m| m.getattr("unknown_scheme")).and_then(|f| f.call1((scheme, vnl))) {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    }
}

/// A str (encoded with surrogateescape) or bytes argument: (text, bytes).
pub fn text_arg(obj: &Bound<'_, PyAny>) -> PyResult<(String, Vec<u8>)> {
    if let Ok(s) = obj.cast::<PyString>() {
        let b = s.call_method1("encode", ("utf-8", "surrogateescape"))?;
        let bytes: Vec<u8> = b.extract()?;
        return Ok((String::from_utf8_lossy(&bytes).into_owned(), bytes));
    }
    let bytes: Vec<u8> = obj.extract()?;
    Ok((String::from_utf8_lossy(&bytes).into_owned(), bytes))
}

fn syntax_of(name: &str) -> PyResult<Syntax> {
    Ok(match name {
        "net" => Syntax::Net,
        "path" => Syntax::Path,
        "raw" => Syntax::Raw,
        "verbatim" => Syntax::Verbatim,
        other => return Err(PyValueError::new_err(format!("unknown syntax {other:?}"))),
    })
}

fn syntax_name(s: Syntax) -> &'static str {
    match s {
        Syntax::Net => "net",
        Syntax::Path => "path",
        Syntax::Raw => "raw",
        Syntax::Verbatim => "verbatim",
    }
}

fn b<'py>(py: Python<'py>, v: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, v)
}

/// Split at unquoted delimiters, quotes/escapes removed, %XX decoded.
#[pyfunction]
pub(crate) fn vnl_split<'py>(py: Python<'py>, text: &[u8], delims: &[u8], vnl: &str) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let parts = vnl::split(text, delims).map_err(|e| vnl_error(py, e, vnl))?;
    Ok(parts.iter().map(|p| b(py, p)).collect())
}

/// (scheme, rest): no `://` means vde; empty means the default VNL.
#[pyfunction]
pub(crate) fn vnl_split_scheme<'py>(py: Python<'py>, vnl: &[u8], shown: &str) -> PyResult<(String, Bound<'py, PyBytes>)> {
    let (s, rest) = vnl::split_scheme(vnl).map_err(|e| vnl_error(py, e, shown))?;
    Ok((s, b(py, &rest)))
}

#[pyfunction]
pub(crate) fn vnl_default<'py>(py: Python<'py>) -> Bound<'py, PyBytes> {
    b(py, &vnl::default_vnl())
}

/// (address, [(key, value or None)]) of the text after `scheme://`.
#[pyfunction]
#[allow(clippy::type_complexity)]
pub(crate) fn vnl_parse<'py>(py: Python<'py>, rest: &[u8], syntax: &str, vnl: &str) -> PyResult<(Bound<'py, PyBytes>, Vec<(Bound<'py, PyBytes>, Option<Bound<'py, PyBytes>>)>)> {
    let p = vnl::parse_rest(rest, syntax_of(syntax)?).map_err(|e| vnl_error(py, e, vnl))?;
    Ok((b(py, &p.address), p.items.iter().map(|(k, v)| (b(py, k), v.as_deref().map(|v| b(py, v)))).collect()))
}

/// (head, inner) of `head{inner}`.
#[pyfunction]
pub(crate) fn vnl_split_nested<'py>(py: Python<'py>, rest: &[u8], vnl: &str) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let scheme = vnl.split("://").next().unwrap_or("");
    let example = format!("{scheme}://{}{{vde:///tmp/sw}}", String::from_utf8_lossy(rest));
    let (h, i) = vnl::split_nested(rest, &example).map_err(|e| vnl_error(py, e, vnl))?;
    Ok((b(py, &h), b(py, &i)))
}

/// Index of the option `key` names (prefix match), else a VNLError.
#[pyfunction]
pub(crate) fn vnl_match(py: Python<'_>, key: &[u8], names: Vec<String>, scheme: &str, vnl: &str) -> PyResult<usize> {
    vnl::match_option(key, &names).ok_or_else(|| vnl_error(py, vnl::unknown_option(key, &names, scheme), vnl))
}

/// strtoullm: a size with an optional K/M/G/T suffix.
#[pyfunction]
pub(crate) fn vnl_size(text: &str) -> PyResult<u64> {
    plugins::size(text).map_err(PyValueError::new_err)
}

fn value<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Unset => py.None().into_bound(py),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Bool(x) => pyo3::types::PyBool::new(py, *x).to_owned().into_any(),
        Value::Text(t) => PyBytes::new(py, t).call_method1("decode", ("utf-8", "surrogateescape"))?,
        Value::TagMap(m) => PyTuple::new(py, m.iter().map(|&(a, c)| (a, c)))?.into_any(),
    })
}

/// A built-in's option value from text (for CLI flags that share a URL
/// option's rules, e.g. `--pcap-limit` is capture's `limit`).
#[pyfunction]
pub(crate) fn option_value<'py>(py: Python<'py>, scheme: &str, name: &str, text: &str) -> PyResult<Bound<'py, PyAny>> {
    let o = plugins::builtin(scheme).and_then(|p| p.options.iter().find(|o| o.name == name)).ok_or_else(|| PyValueError::new_err(format!("no option {name} for {scheme}://")))?;
    let v = plugins::convert(o.kind, text.as_bytes()).map_err(PyValueError::new_err)?;
    value(py, &v)
}

/// The built-in plugins: [(scheme, syntax, nests, summary, [(option, default, help)])].
#[pyfunction]
#[allow(clippy::type_complexity)]
pub(crate) fn builtin_plugins<'py>(py: Python<'py>) -> PyResult<Vec<(&'static str, &'static str, bool, &'static str, Vec<(&'static str, Bound<'py, PyAny>, &'static str)>)>> {
    plugins::builtins()
        .iter()
        .map(|p| {
            let opts = p.options.iter().map(|o| Ok((o.name, value(py, &o.default.into())?, o.help))).collect::<PyResult<Vec<_>>>()?;
            Ok((p.scheme, syntax_name(p.syntax), p.nests, p.summary, opts))
        })
        .collect()
}

/// Parse a VNL of a built-in plugin: (scheme, address, options, given,
/// nested), or None when its scheme is not built in.
#[pyfunction]
#[allow(clippy::type_complexity)]
pub(crate) fn resolve_builtin<'py>(py: Python<'py>, vnl: &Bound<'py, PyAny>) -> PyResult<Option<(String, Bound<'py, PyAny>, Bound<'py, PyDict>, Vec<&'static str>, Option<Bound<'py, PyAny>>)>> {
    let (text, bytes) = text_arg(vnl)?;
    let plugins::Resolved::Builtin(_, t) = plugins::resolve(&bytes).map_err(|e| vnl_error(py, e, &text))? else { return Ok(None) };
    let d = PyDict::new(py);
    for (o, v) in t.options.iter().zip(&t.values) {
        d.set_item(o.name, value(py, v)?)?;
    }
    let given = t.options.iter().zip(&t.given).filter(|(_, g)| **g).map(|(o, _)| o.name).collect();
    let dec = |x: &[u8]| PyBytes::new(py, x).call_method1("decode", ("utf-8", "surrogateescape"));
    let nested = t.nested.as_deref().map(dec).transpose()?;
    Ok(Some((t.scheme.clone(), dec(&t.address)?, d, given, nested)))
}

/// vdeplug4's description: "<descr> user=<euid> pid=<pid>[ SSH=<client>]".
#[pyfunction]
pub(crate) fn full_descr(descr: &str) -> String {
    plugins::full_descr(descr)
}

/// The C plugins found in the plugin search directories: [(scheme, file)].
#[pyfunction]
pub(crate) fn c_plugins() -> Vec<(String, PathBuf)> {
    crate::cplugin::available()
}

/// Python: our libvdeplug.so.2 (loaded RTLD_GLOBAL before the first C
/// plugin, so nested plugins reach our vde_open_real).
#[pyfunction]
pub(crate) fn set_library(path: PathBuf) {
    crate::cplugin::set_library(path);
}
