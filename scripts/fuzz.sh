#!/usr/bin/env bash
# Runs every fuzz target of the protocol crate (shared/fuzz) for a while and
# prints, per target, total executions and executions per second.
#
#   scripts/fuzz.sh            # the short run of the test command: 5 s a target
#   scripts/fuzz.sh 600        # a long run: 10 minutes a target
#   scripts/fuzz.sh 60 jwe     # one target
#
# Needs cargo-fuzz (scripts/setup.sh installs it) and the nightly toolchain, or,
# where rustup has no nightly and cannot fetch one, the stable toolchain with
# RUSTC_BOOTSTRAP=1 (sanitizer flags are unstable; stable ships their runtime).
# Corpora grow in shared/fuzz/corpus/<target> (gitignored) between runs; a
# crash leaves its input in shared/fuzz/artifacts/<target> and fails the run.
set -euo pipefail
cd "$(dirname "$0")/../shared/fuzz"
toolchains="$(rustup toolchain list 2>/dev/null || true)"
if grep -q '^nightly' <<<"$toolchains"; then
  fuzz() { cargo +nightly fuzz "$@"; }
else
  echo "fuzz: no nightly toolchain: cargo fuzz on stable with RUSTC_BOOTSTRAP=1"
  fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }
fi
secs=${1:-5}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(fuzz list)
fi
# One build of every target (debug assertions on, so the asserts inside count);
# its whole output when it fails.
build_log=$(mktemp)
if ! fuzz build --debug-assertions >"$build_log" 2>&1; then
  cat "$build_log"
  rm -f "$build_log"
  echo "fuzz: building the targets FAILED" >&2
  exit 1
fi
tail -n 2 "$build_log"
rm -f "$build_log"
total=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  if ! fuzz run --debug-assertions "$t" "corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=1024 -max_len=8192 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: target $t FAILED" >&2
    rm -f "$log"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
  printf 'fuzz %-8s %10s executions in %ss  %8s exec/s\n' "$t" "${runs:-?}" "$secs" "${rate:-?}"
  total=$((total + ${runs:-0}))
  rm -f "$log"
done
echo "fuzz: ${#targets[@]} targets, $total executions, no crash"
