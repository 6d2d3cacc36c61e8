#!/usr/bin/env bash
# The whole test suite: Rust unit tests (cargo test), then the Python tests
# against the installed package (pip install . first).
set -u
cd "$(dirname "$0")/.."
cargo test --quiet || exit $?
python3 -m pytest -q tests "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "tests/run.sh: pytest collected no tests; that is a failure here" >&2
    exit 1
fi
exit "$rc"
