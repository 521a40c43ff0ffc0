#!/usr/bin/env bash
# A stand-in for systemd, for the chaos tests of `--member-control systemd`: just what
# lifeboat relies on, with real processes. Installed as `systemctl` on the agent's PATH.
#
#   systemctl start|stop|is-active UNIT   what the agent and `lifeboat replace` call
#   systemctl-standin supervise SECONDS   Restart=always with RestartSec=SECONDS, for
#                                         every unit (the test runs one per cluster)
#
# A unit is a directory $LIFEBOAT_TEST_SYSTEMD/UNIT holding:
#   pre      ExecStartPre (here: `lifeboat reconfigure`); non-zero fails the start
#   main     ExecStart, run in the foreground (here: etcd with the environment file)
#   wanted   present from `start` until `stop`: Restart= acts only then
#   pid      the main process while it runs
#   log      ExecStartPre's and the main process's output
# Start jobs run one at a time (flock); a start of an active unit does nothing.
set -uo pipefail
root=${LIFEBOAT_TEST_SYSTEMD:?LIFEBOAT_TEST_SYSTEMD names the units directory}

active() {
  local pid
  pid=$(cat "$root/$1/pid" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null
}

start() {
  local unit=$1 dir=$root/$1
  [[ -d $dir ]] || { echo "Unit $unit not found." >&2; return 5; }
  exec 9>"$dir/job.lock"
  flock 9
  active "$unit" && return 0
  touch "$dir/wanted"
  # Run by sh, not exec'd: the test writes these scripts just before the first start,
  # and exec'ing a file another process still holds open for writing fails ("Text
  # file busy"), as a process forked by another test meanwhile may.
  if ! sh "$dir/pre" >>"$dir/log" 2>&1; then
    echo "Job for $unit failed because the control process exited with error code." >&2
    return 1
  fi
  # A `stop` while ExecStartPre ran cancels the job.
  [[ -e $dir/wanted ]] || { echo "Job for $unit canceled." >&2; return 1; }
  # The main process outlives this call, in its own session (as under systemd).
  setsid sh "$dir/main" >>"$dir/log" 2>&1 </dev/null 9>&- &
  echo $! >"$dir/pid"
}

stop() {
  local unit=$1 dir=$root/$1 pid
  rm -f "$dir/wanted"
  pid=$(cat "$dir/pid" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  rm -f "$dir/pid"
}

supervise() {
  local restart_sec=$1 unit
  while true; do
    for dir in "$root"/*/; do
      unit=$(basename "$dir")
      if [[ -e $dir/wanted ]] && ! active "$unit"; then
        sleep "$restart_sec"
        # In a subshell: the job lock is released when the job ends.
        [[ -e $dir/wanted ]] && ! active "$unit" && (start "$unit") 2>>"$dir/log"
      fi
    done
    sleep 0.2
  done
}

case "$(basename "$0"):${1:-}" in
  systemctl:start) start "$2" ;;
  systemctl:stop) stop "$2" ;;
  systemctl:is-active) active "$2" ;;
  *:supervise) supervise "${2:-5}" ;;
  *) echo "systemctl stand-in: unsupported: $*" >&2; exit 1 ;;
esac
