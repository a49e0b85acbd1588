# Sourced by a device call's run script (docs/dev/gpu-runs/*-script.sh) after gpu-env.sh: one
# time budget for the whole call and a phase runner under it, so a slow phase cannot eat the
# call's limit and the table at the end still prints.
#   w=$(mktemp -d); BUDGET=420; source scripts/gpu-phases.sh
#   ph LABEL NEED CMD...   runs CMD into $w/LABEL.log if NEED seconds are left (else records
#                          it as skipped), with a timeout of the time left; one line a phase
#                          (exit status, seconds left) goes to $w/summary.txt.
# Scripts up to run 85 carry their own copy of these lines (they are records of what ran).
phases_start=$(date +%s)
phases_budget=${BUDGET:-420}
left() { echo $((phases_budget - ($(date +%s) - phases_start))); }
ph() {
  local label=$1 need=$2
  shift 2
  if [ "$(left)" -lt "$need" ]; then
    echo "$label SKIPPED ($(left) s left)" >> "$w/summary.txt"
    return
  fi
  timeout $(($(left) - 5)) "$@" > "$w/$label.log" 2>&1
  echo "$label rc=$? left $(left)" >> "$w/summary.txt"
}
