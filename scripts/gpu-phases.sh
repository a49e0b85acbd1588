# Sourced by a device call's run script (docs/dev/gpu-runs/*-script.sh) after gpu-env.sh: one
# time budget for the whole call and a phase runner under it, so a slow phase cannot eat the
# call's limit and the table at the end still prints.
#   w=$(mktemp -d); BUDGET=420; source scripts/gpu-phases.sh
#   ph LABEL NEED CMD...   runs CMD into $w/LABEL.log if NEED seconds are left (else records
#                          it as skipped), with a timeout of the time left; one line a phase
#                          (exit status, seconds left) goes to $w/summary.txt.
#   ab_lines LABEL...      the compared fields of each phase's cases, a line a case.
# A call brings back at most 8 files from $OUT (the device README's limits): with `keep` set
# to a file under $OUT, each phase's log is appended there as it ends (a "===== LABEL" line
# first), so one file holds every phase, and a call cut short still brings back those that
# ran. Keep `w` outside $OUT then:  w=$(mktemp -d); keep=$OUT/run180.log; BUDGET=...; source ...
# (session 34's runs 175-179 lost up to 14 phase logs to the count.)
# Scripts up to run 85 carry their own copy of these lines, runs 137-138 their own clock
# sampling (they are records of what ran).
phases_start=$(date +%s)
phases_budget=${BUDGET:-420}
left() { echo $((phases_budget - ($(date +%s) - phases_start))); }
ph() {
  local label=$1 need=$2
  shift 2
  if [ "$(left)" -lt "$need" ]; then
    echo "$label SKIPPED ($(left) s left)" >> "$w/summary.txt"
    if [ -n "${keep:-}" ]; then echo "===== $label SKIPPED ($(left) s left)" >> "$keep"; fi
    return
  fi
  timeout $(($(left) - 5)) "$@" > "$w/$label.log" 2>&1
  local rc=$?
  echo "$label rc=$rc left $(left)" >> "$w/summary.txt"
  if [ -n "${keep:-}" ]; then
    { echo "===== $label rc=$rc left $(left)"; cat "$w/$label.log"; } >> "$keep"
  fi
}
# ab_lines LABEL...: for each phase's log, one line a case: its verdict and name, the fields an
# A/B run compares (first task, phase marks (top-k, placed), the first wave, the combine tasks, a streamed
# combine's kernel label, back-to-back time, the GEMM tasks' times by row fill, their and the streamed combines' in-task marks) and its output
# digest (equal = the same bits).
ab_lines() {
  local b
  for b in "$@"; do
    [ -f "$w/$b.log" ] || continue
    echo "== $b"
    grep -E "^\[(ok|FAIL)\]" "$w/$b.log" |
      grep -o -E "^\[[a-zA-Z]+\] [^(]*|\[[a-z0-9.-]*-cs\]|spill fallback [A-Z_,=0-9]*|first task at [0-9]+us|top-k [0-9]+us|placed [0-9]+us|first wave [0-9]+ tasks( \([^)]*\))?(, [0-9]+ paired)?|combine n=[^;]*|back to back [0-9.]+ ms|output digest [0-9a-f]+|row fill \(bm [0-9]+\): gemm0 [^;]*; gemm1 [^;]*|in-task µs \([^)]*\): [^;]*|streamed combine µs \([^)]*\): [^;]*|gaps before [^;]*" |
      paste -s -d' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g' | cut -c1-900
  done
}
# Clocks and power beside the phases (run 137 on; scripts/gpu-clocks.py summarises them):
#   clocks_start           samples SM clock, power, temperature and the clock-event reasons
#                          every 50 ms into $w/smi.csv
#   mph LABEL NEED CMD...  ph, between LABEL's start and end marks in $w/marks.txt
#   clocks_stop            stops the sampling and prints a line a marked phase
clocks_start() {
  local reasons=clocks_event_reasons.active
  nvidia-smi --query-gpu=$reasons --format=csv,noheader >/dev/null 2>&1 || reasons=clocks_throttle_reasons.active
  nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,$reasons --format=csv,noheader,nounits \
    -lms 50 > "$w/smi.csv" 2>&1 &
  clocks_pid=$!
}
mark() { echo "$1 $2 $(date +%s.%N)" >> "$w/marks.txt"; }
mph() {
  local label=$1
  mark "$label" start
  ph "$@"
  mark "$label" end
}
clocks_stop() {
  kill "$clocks_pid" 2>/dev/null
  python3 scripts/gpu-clocks.py "$w/smi.csv" "$w/marks.txt" 300
}
