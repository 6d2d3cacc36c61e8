#!/usr/bin/env bash
# The whole test suite: Rust unit tests (cargo test), then the Python tests
# against the installed package (pip install . first).
set -u
cd "$(dirname "$0")/.."
cargo test --quiet || exit $?
# The Python test dependencies (pyproject's "test" extra), if missing.
if ! python3 -c "import pytest, hypothesis, pytest_timeout, wheel, mypy, vermin" 2>/dev/null; then
    python3 -c 'from importlib.metadata import requires; print("\n".join(r.partition(";")[0] for r in requires("vdeplug") or [] if "test" in r.partition(";")[2]))' \
        | xargs python3 -m pip install -q || exit $?
fi
python3 -m pytest -q tests "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "tests/run.sh: pytest collected no tests; that is a failure here" >&2
    exit 1
fi
exit "$rc"
