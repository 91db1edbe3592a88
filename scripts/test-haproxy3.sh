#!/usr/bin/env bash
# Runs every end-to-end test that starts a real HAProxy a second time, on
# HAProxy 3.x (scripts/haproxy3.sh builds one when there is none; HAPROXY3_BIN
# overrides it). The tests find it in HAPROXY_BIN, and SPOA_EXPECT_HAPROXY=3
# makes each of them fail if the binary they get is not 3.x. From 3.1 the
# tests use `spoa-host haproxy-config --haproxy 3` and examples/haproxy-3.x
# (`mode spop` backends).
#
# The tests are found, not listed: every test function in host/tests that
# calls `haproxy_binary()`, so a new end-to-end test runs on both versions.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=$(scripts/haproxy3.sh)
"$binary" -v | sed -n 1p

# One line per test binary: FILE NAME... (the tests of FILE that start an
# HAProxy, directly or through a helper of the same file).
found=$(python3 - <<'PY'
import glob, os, re
fn = re.compile(r"^(?:pub(?:\([^)]*\))? )?(?:async )?fn ([a-z0-9_]+)\s*[<(]", re.M)
for path in sorted(glob.glob("host/tests/*.rs")):
    text = open(path).read()
    starts = [(m.start(), m.group(1)) for m in fn.finditer(text)] + [(len(text), None)]
    bodies, tests = {}, set()
    for (begin, name), (end, _) in zip(starts, starts[1:]):
        bodies[name] = text[begin:end]
        # The attributes and doc comments right above the function.
        above = text[:begin].rstrip("\n").split("\n")
        while above and re.match(r"\s*(#\[|///)", above[-1]):
            if re.match(r"\s*#\[test\]", above[-1]):
                tests.add(name)
            above.pop()
    # Functions that start an HAProxy, directly or through helpers, to any depth.
    starting = {n for n, b in bodies.items() if "haproxy_binary()" in b}
    while True:
        more = {n for n, b in bodies.items() if n not in starting
                and any(re.search(r"\b%s\s*[(:<]" % h, b) for h in starting)}
        if not more:
            break
        starting |= more
    chosen = sorted(starting & tests)
    if starting and not chosen:
        raise SystemExit(f"{path}: {sorted(starting)} start HAProxy but no test calls them")
    if chosen:
        print(os.path.basename(path)[:-3], *chosen)
PY
)
files=()
names=()
while read -r file tests; do
    files+=(--test "$file")
    # shellcheck disable=SC2206
    names+=($tests)
done <<< "$found"
if [ ${#names[@]} -eq 0 ]; then
    echo "test-haproxy3: no end-to-end test found in host/tests" >&2
    exit 1
fi
# Every name must be a test cargo knows, so none is dropped silently.
# The packages of make test's first pass: the same feature set, so nothing
# is built again.
packages=(--workspace --exclude guest-hostile --exclude guest-tables --exclude guest-batch)
listed=$(${CARGO:-cargo} test --release "${packages[@]}" "${files[@]}" -- --list --exact "${names[@]}" 2>/dev/null | grep -c ': test$' || true)
if [ "$listed" != "${#names[@]}" ]; then
    echo "test-haproxy3: found ${#names[@]} end-to-end tests but cargo lists $listed of them: ${names[*]}" >&2
    exit 1
fi
echo "test-haproxy3: ${#names[@]} end-to-end tests on $binary"
HAPROXY_BIN=$binary SPOA_EXPECT_HAPROXY=3 \
    ${CARGO:-cargo} test --release "${packages[@]}" "${files[@]}" --no-fail-fast -- --exact "${names[@]}"
