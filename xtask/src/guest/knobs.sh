# Knob scenarios, sourced by /init when the kernel command line has
# `oomwatch.knobs`: each sets an OOM sysctl, asks `oomwatch predict` what an
# OOM will do, and lets the kernel do it. The last one panics the machine on
# purpose (vm.panic_on_oom=1 and a host-wide OOM): the results are printed
# before it, and the host reads the panic from the serial console.
# Uses init.sh's helpers (say, begin, finish, hog, ready, predict, memcg,
# cleanup, kills).

knob() { echo "$2" > "/proc/sys/vm/$1"; say "KNOB $SCN $1=$(cat /proc/sys/vm/$1)"; }
# memcg_oom NAME: in a fresh 64 MiB memcg, A (8 MiB) and B (36 MiB), the
# prediction, then a 30 MiB trigger; B is the victim the scan chooses.
memcg_oom() {
  memcg $1
  hog A $CG 0 8; ready; hog B $CG 0 36; ready
  predict --cgroup /oomwatch-$1
  hog T $CG 0 30
  finish; cleanup $CG
}

# 1. oom_kill_allocating_task=1 does not apply to a memcg OOM (4.9+): the
# scan chooses as usual.
begin allocating-memcg B "oom_kill_allocating_task=1 in a memcg OOM: the scan still chooses"
knob oom_kill_allocating_task 1
memcg_oom allocating-memcg
knob oom_kill_allocating_task 0

# 2. oom_dump_tasks=0: the kill as usual, but the report has no task table,
# so nothing can replay it; oomwatch says so.
begin dump-tasks-0 B "oom_dump_tasks=0: the kill as predicted, no task table in the report"
knob oom_dump_tasks 0
memcg_oom dump-tasks-0
knob oom_dump_tasks 1

# 3. overcommit_memory=2: an allocation beyond CommitLimit fails with ENOMEM
# at once; no OOM, no kill.
begin overcommit-2 none "overcommit_memory=2: a 300 MiB hog is refused, nobody is killed"
knob overcommit_ratio 90
knob overcommit_memory 2
say "KNOB $SCN $(grep -E '^(CommitLimit|Committed_AS)' /proc/meminfo | tr -s ' ' | tr '\n' ' ')"
G=/sys/fs/cgroup/oomwatch-overcommit; mkdir $G
predict
hog T $G 0 300
for i in $(seq 1 100); do [ -n "$(cat $G/cgroup.procs)" ] || break; sleep 0.1; done
say "KNOB $SCN kills=$(($(kills) - K0)) hog=$(tr '\n' ' ' < /tmp/hog.$N | head -c 160)"
knob overcommit_memory 0
cleanup $G

# 4. The min watermark: oomwatch derives every zone's min and lowmem
# reserve from min_free_kbytes, watermark_scale_factor and
# lowmem_reserve_ratio, and compares them with /proc/zoneinfo.
SCN=watermarks; say "SCN watermarks expect=none"
knob min_free_kbytes 8192
predict
knob min_free_kbytes 3000
predict

# 5. oom_kill_allocating_task=1 in a host-wide OOM: the allocating task
# itself is killed, without a scan.
echo always > /sys/kernel/mm/transparent_hugepage/enabled
echo never > /sys/kernel/mm/transparent_hugepage/defrag
begin allocating-global allocating "oom_kill_allocating_task=1, host-wide: the allocating task (whoever it is) is killed"
knob oom_kill_allocating_task 1
G=/sys/fs/cgroup/oomwatch-allocating; mkdir $G
hog A $G 0 40; ready; hog B $G 0 30; ready
predict
hog T $G 0 200
finish; cleanup $G
knob oom_kill_allocating_task 0

# 6. panic_on_oom=1: a memcg OOM still kills (only an unconstrained OOM
# panics); then a host-wide OOM panics the machine.
begin panic-memcg B "panic_on_oom=1 in a memcg OOM: a kill, no panic"
knob panic_on_oom 1
memcg_oom panic-memcg

SCN=panic-global; say "SCN panic-global expect=panic"
say "KNOB $SCN panic_on_oom=$(cat /proc/sys/vm/panic_on_oom)"
G=/sys/fs/cgroup/oomwatch-panic; mkdir $G
hog A $G 0 30; ready
predict
say END
echo "== results"; cat /tmp/results
echo "== panic-global: a host-wide OOM with panic_on_oom=1"
hog T $G 0 200
sleep 60
echo "@@ NOPANIC the host-wide OOM did not panic within 60 s"
poweroff -f
