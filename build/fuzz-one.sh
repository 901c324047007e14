#!/bin/sh
# fuzz-one.sh GO PKG TARGET FUZZTIME: run one fuzz target for FUZZTIME.
#
# Go's fuzzing coordinator can fail a run with a bare "context deadline
# exceeded" when a duration -fuzztime expires while a worker is mid-call
# (golang/go#75804): no input failed, nothing is written to testdata/fuzz.
# CI's fuzz-short therefore passes a count (50000x), which has no deadline;
# this retry is for duration runs such as `make fuzz` (2m each).
# A real finding always writes "Failing input written to ..." and fails
# here at once; a bare deadline failure is retried once, and only a second
# one in a row fails the run, so the short CI fuzzing stays a real gate.
set -u
go=$1 pkg=$2 target=$3 fuzztime=$4
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for attempt in 1 2; do
	if "$go" test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" >"$log" 2>&1; then
		cat "$log"
		exit 0
	fi
	cat "$log"
	if grep -q 'Failing input written to' "$log" || ! grep -q 'context deadline exceeded' "$log" \
		|| grep -qE 'panic:|_test\.go:[0-9]+:' "$log"; then
		exit 1
	fi
	echo "fuzz-one: $pkg $target stopped on the fuzzing deadline race without a failing input (attempt $attempt)"
done
exit 1
