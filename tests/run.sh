#!/usr/bin/env bash
# The whole test suite: Rust unit tests (cargo test), then the Python tests
# against the installed package (pip install . first).
set -u
cd "$(dirname "$0")/.."
cargo test --quiet || exit $?
# The Python test dependencies (pyproject's "test" extra), if missing.
if ! python3 -c "import pytest, hypothesis, pytest_timeout, wheel, mypy, vermin, ruff" 2>/dev/null; then
    python3 -c 'from importlib.metadata import requires; print("\n".join(r.partition(";")[0] for r in requires("vdeplug") or [] if "test" in r.partition(";")[2]))' \
        | xargs python3 -m pip install -q || exit $?
fi
# Gates: formatting, lints and types, Rust and Python.
cargo fmt --check || { echo "tests/run.sh: run cargo fmt" >&2; exit 1; }
cargo clippy --quiet --workspace --all-targets --features python -- -D warnings || exit $?
python3 -m ruff check python tests benches || exit $?
python3 -m ruff format --check python tests benches || { echo "tests/run.sh: run ruff format python tests benches" >&2; exit 1; }
python3 -m mypy python/vdeplug || exit $?
python3 -m pytest -q tests "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "tests/run.sh: pytest collected no tests; that is a failure here" >&2
    exit 1
fi
exit "$rc"
