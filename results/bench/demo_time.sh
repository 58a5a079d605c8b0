#!/usr/bin/env bash
# The README's first command (set up a fresh machine and run `ladir-bench demo`) on a fresh clone of
# this repository, timed: writes results/bench/demo-fresh-clone.log. Run it on a quiet machine.
set -euo pipefail
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
out="$repo/results/bench/demo-fresh-clone.log"
clone=$(mktemp -d)/ladir-bench
git clone -q "$repo" "$clone"
cd "$clone"
command_line=$(grep -A1 '^# set up a fresh machine' README.md | tail -n 1)
{
  echo "revision: $(git rev-parse --short HEAD)"
  echo "machine: $(nproc) cores, $(uname -m), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "command: $command_line"
  echo "started: $(date -u +%FT%TZ)"
} > "$out.partial"
/usr/bin/time -v bash -c "set -euo pipefail; $command_line" > demo.out 2> demo.err
demo_started=$(stat -c %W runs 2>/dev/null || echo 0)
finished=$(date +%s)
{
  echo "finished: $(date -u +%FT%TZ), load after: $(cut -d' ' -f1-3 /proc/loadavg)"
  [ "$demo_started" -gt 0 ] && echo "ladir-bench demo alone (from runs/ created to the end): $((finished - demo_started)) s"
  grep -E "Elapsed|User time|System time|Maximum resident" demo.err
  echo
  sed -n '/^\*\*Countdown/,$p' demo.out
} >> "$out.partial"
mv "$out.partial" "$out"
echo "wrote $out"
