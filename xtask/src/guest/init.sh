#!/bin/busybox sh
# Guest /init for `cargo xtask vm-test`: oomwatch's daemon watches, each
# scenario builds its hogs, `oomwatch predict` names the victim just before
# the trigger, the kernel kills, and the guest prints what each side said.
# Lines for the host start with "@@ "; they are collected in /tmp/results and
# printed at the end, when no OOM message can land in the middle of one.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mkdir -p /tmp && mount -t tmpfs -o size=16m tmpfs /tmp
ip link set lo up
echo "+memory" > /sys/fs/cgroup/cgroup.subtree_control
say() { echo "@@ $*" >> /tmp/results; }
say "UNAME $(uname -r) $(uname -m) $(grep MemTotal /proc/meminfo | tr -s ' ')"

# The daemon: our own eBPF sees every kill. Never a victim itself. Its hot
# probes follow memory pressure (the default) with a long hold: the first
# scenario's memcg reclaim attaches them, on this kernel's own signals (PSI
# where it is on, else the reclaim tracepoints), and they stay for the
# later scenarios, whose page allocation failures are counted.
(echo -1000 > /proc/self/oom_score_adj; RUST_LOG=info,oomwatch::daemon=debug exec /bin/oomwatch run --listen 127.0.0.1:7707 --hot-probes pressure --hot-probes-hold 3600) > /tmp/daemon.log 2>&1 &
for i in $(seq 1 300); do grep -q 'oomwatch running' /tmp/daemon.log && break; sleep 0.1; done
grep -q 'oomwatch running' /tmp/daemon.log && say "DAEMON up" || { say "DAEMON failed"; cat /tmp/daemon.log; }
/bin/oomwatch check --json > /tmp/check.json 2>&1; say "CHECK $(tr -d '\n' < /tmp/check.json)"

N=0
# hog NAME CGDIR ADJ MIB [MODE...]: starts oomwatch-hog inside CGDIR with
# oom_score_adj ADJ; its pid is in $NAME.
hog() {
  name=$1 cg=$2 adj=$3; shift 3; N=$((N+1))
  sh -c 'echo $$ > "$1/cgroup.procs" && echo "$2" > /proc/self/oom_score_adj && shift 2 && exec /bin/oomwatch-hog "$@" <<END
go
END' sh "$cg" "$adj" "$@" > /tmp/hog.$N 2>&1 &
  eval "$name=$!"
  say "HOG $SCN $name $! adj=$adj mib=$1"
}
# ready: the last hog touched all its memory (30 s at most).
ready() {
  for i in $(seq 1 300); do grep -q ready /tmp/hog.$N && return 0; sleep 0.1; done
  say "NOTREADY $SCN hog $N: $(cat /tmp/hog.$N)"
}
kills() { grep -c 'oom kill: ' /tmp/daemon.log; }
# begin NAME EXPECT DESCRIPTION...: a scenario whose first victim should be
# the hog named EXPECT.
begin() {
  SCN=$1; shift; say "SCN $SCN expect=$*"; echo "== scenario $SCN"
  # The kernel log starts empty for each scenario (the serial console keeps
  # everything): line counts would go wrong once the ring buffer wraps, as it
  # does after the pagefault scenario's repeated reports.
  K0=$(kills); dmesg -c > /dev/null; D0=0
}
# finish WAIT_CMD: waits for the first kill, then prints what the kernel
# (its own report) and oomwatch's eBPF saw.
finish() {
  for i in $(seq 1 600); do [ "$(kills)" -gt "$K0" ] && break; sleep 0.1; done
  sleep 0.5
  KPID=$(dmesg | tail -n +$((D0+1)) | grep -m1 -o 'Killed process [0-9]*' | grep -o '[0-9]*$')
  # eBPF's kill of the kernel's victim if it saw one: the daemon logs a kill
  # when its episode is complete, so with several kills in a row (an
  # oom.group, a trigger killed too) the lines need not be in kill order.
  EPIDS=$(grep 'oom kill: ' /tmp/daemon.log | tail -n +$((K0+1)) | sed 's/.*oom kill: pid=\([0-9]*\).*/\1/')
  EPID=$(echo "$EPIDS" | grep -x "${KPID:-none}" || echo "$EPIDS" | head -n 1)
  say "KILL $SCN kernel=${KPID:-none} ebpf=${EPID:-none}"
  grep "oom kill: pid=${EPID:-none} " /tmp/daemon.log | tail -n 1 | sed "s/^/@@ KILLLINE $SCN /" >> /tmp/results
  dmesg | tail -n +$((D0+1)) | sed -n '/invoked oom-killer/,/Killed process/p' | sed "s/^/@@ REPORT $SCN /" >> /tmp/results
  # `oomwatch replay` on this kernel's own log of the scenario: the first
  # report's kill and verdict, and the exit status over all of them.
  dmesg | tail -n +$((D0+1)) > /tmp/scn.log
  /bin/oomwatch replay --top 0 /tmp/scn.log > /tmp/replay.txt 2>&1; RC=$?
  RK=$(grep -m1 '^  killed:' /tmp/replay.txt | grep -o '([0-9]*)' | tr -d '()')
  RV=$(grep -m1 '^  verdict:' /tmp/replay.txt | awk '{print $2}')
  say "REPLAY $SCN exit=$RC killed=${RK:-none} verdict=${RV:-none} $(tail -n 1 /tmp/replay.txt)"
}
predict() { # predict [--cgroup PATH]
  say "PRED $SCN $(/bin/oomwatch predict "$@" --json 2>&1 | tr -d '\n')"
}
cleanup() { # cleanup CGDIR
  echo 1 > "$1/cgroup.kill" 2>/dev/null || for p in $(cat "$1/cgroup.procs"); do kill -9 $p; done
  for i in $(seq 1 100); do [ -z "$(cat "$1/cgroup.procs")" ] && break; sleep 0.1; done
  rmdir "$1"
}
# memcg NAME: a fresh 64 MiB memcg, no swap.
memcg() {
  CG=/sys/fs/cgroup/oomwatch-$1; mkdir "$CG"
  echo $((64 << 20)) > "$CG/memory.max"; echo 0 > "$CG/memory.swap.max" 2>/dev/null
}

# The knob boot (`oomwatch.knobs` on the command line) runs the OOM sysctl
# scenarios instead, and ends there (guest/knobs.sh).
grep -q 'oomwatch.knobs' /proc/cmdline && . /knobs.sh

# The selftest as a user runs it (`oomwatch selftest`): its own memcgs,
# each scenario's predicted, kernel, eBPF and replayed victims compared.
/bin/oomwatch selftest --json > /tmp/selftest.json 2> /tmp/selftest.err; RC=$?
say "SELFTEST exit=$RC $(tr -d '\n' < /tmp/selftest.json)"
[ $RC -eq 0 ] || sed 's/^/@@ SELFTESTERR /' /tmp/selftest.err | tail -20 >> /tmp/results

# 1. oom_score_adj -1000 on the largest task: it is never chosen.
begin adj-1000 B "adj -1000 on the largest (36 MiB), next largest 14 MiB"
memcg adj-1000
hog A $CG -1000 36; ready; hog B $CG 0 14; ready; hog C $CG 0 8; ready
predict --cgroup /oomwatch-adj-1000
hog T $CG 0 16
finish; cleanup $CG

# 2. -999: killable, but its points fall below every adj-0 task.
begin adj-999 B "adj -999 on the largest (36 MiB), next largest 14 MiB"
memcg adj-999
hog A $CG -999 36; ready; hog B $CG 0 14; ready; hog C $CG 0 8; ready
predict --cgroup /oomwatch-adj-999
hog T $CG 0 16
finish; cleanup $CG

# 3. -999 is still killable: the only other task is unkillable (-1000).
begin adj-999-alone A "adj -999 (40 MiB) against an unkillable -1000 trigger"
memcg adj-999-alone
hog A $CG -999 40; ready
predict --cgroup /oomwatch-adj-999-alone
hog T $CG -1000 40
finish; cleanup $CG

# 4. +1000 on a tiny task beats a large one.
begin adj+1000 B "adj +1000 on 4 MiB against 40 MiB at adj 0"
memcg adj+1000
hog A $CG 0 40; ready; hog B $CG 1000 4; ready
predict --cgroup /oomwatch-adj+1000
hog T $CG 0 30
finish; cleanup $CG

# 5. +500: 12 MiB + half the limit beats 40 MiB.
begin adj+500 B "adj +500 on 12 MiB against 40 MiB at adj 0"
memcg adj+500
hog A $CG 0 40; ready; hog B $CG 500 12; ready
predict --cgroup /oomwatch-adj+500
hog T $CG 0 20
finish; cleanup $CG

# 6. cgroup v2 memory.oom.group: the kernel picks its victim as usual, then
# kills every task of the group with it.
begin oom-group A "memory.oom.group=1: 30 MiB, 10 MiB, 6 MiB and the trigger all go"
memcg oom-group
echo 1 > "$CG/memory.oom.group"
hog A $CG 0 30; ready; hog B $CG 0 10; ready; hog C $CG 0 6; ready
predict --cgroup /oomwatch-oom-group
hog T $CG 0 30
finish
sleep 1
say "GROUP $SCN killed=$(($(kills) - K0))"
cleanup $CG

# 7. A page-fault OOM that kills nobody: the only task in the memcg is at
# -1000, so the OOM killer finds no victim, the charge fails, the fault
# returns VM_FAULT_OOM and the kernel calls pagefault_out_of_memory() and
# retries the fault, again and again, until the task is killed from outside.
echo "== scenario pagefault"; SCN=pagefault
memcg pagefault
hog A $CG -1000 80
# Until the memcg has met its first OOM (30 s at most: TCG under load is
# slow), then a second of fault retries.
for i in $(seq 1 300); do grep -q '^oom [1-9]' "$CG/memory.events" && break; sleep 0.1; done
sleep 1
say "PAGEFAULT $(wget -qO- http://127.0.0.1:7707/metrics | grep -E '^oomwatch_page_fault_ooms_total' | tr ' ' '=' | tr '\n' ' ')"
cleanup $CG

# 8. A host-wide OOM with mixed adjustments. Transparent huge pages on,
# without defragmentation: near the OOM every 2 MiB fault's order-9
# allocation fails and falls back to small pages, which oomwatch counts.
echo always > /sys/kernel/mm/transparent_hugepage/enabled
echo never > /sys/kernel/mm/transparent_hugepage/defrag
begin global B "global: 60 MiB at -800, 20 MiB at +800, 30 MiB at 0, an unbounded trigger"
G=/sys/fs/cgroup/oomwatch-global; mkdir $G
hog A $G -800 60; ready; hog B $G 800 20; ready; hog C $G 0 30; ready
predict
hog T $G 0 200
finish; cleanup $G

grep -E 'oom (start|kill)|oom reaper|kernel hook|reclaim exhausted|differs|differ from|explained|WARN|ERROR' /tmp/daemon.log | tail -120 | sed 's/^/@@ DAEMONLOG /' >> /tmp/results
say "METRICS $(wget -qO- http://127.0.0.1:7707/metrics | grep -E '^oomwatch_(reclaim_stall_seconds_(count|sum)|snapshot_source_info|oom_kills_total|oom_starts_total|badness_mismatches_total|page_alloc_failures_total|oom_kills_by_constraint_total|report_replays_total|kernel_points_checks_total|kernel_hook_info|page_fault_ooms_total|oom_reaper_events_total|slowpath_retry_decisions_total|user_page_faults_total|hot_probes_attached)' | tr ' ' '=' | tr '\n' ' ')"
say "HOTPROBES attached=$(grep -c 'hot probes attached' /tmp/daemon.log) detached=$(grep -c 'hot probes detached' /tmp/daemon.log) first: $(grep -m1 'hot probes attached' /tmp/daemon.log | sed 's/.*hot probes attached: //')"
say "ALLOCFAIL $(grep -c 'allocation failure' /tmp/daemon.log) $(grep -m3 'allocation failure' /tmp/daemon.log | sed 's/.*allocation failure: //' | tr '\n' ';')"
say "STARTS host=$(grep -c 'oom start: the host' /tmp/daemon.log) reclaim_exhausted=$(grep -c 'reclaim exhausted' /tmp/daemon.log) memcg=$(grep -c 'oom start: memcg' /tmp/daemon.log)"
say "SELFCHECK mismatches=$(grep -c 'differs from the kernel' /tmp/daemon.log) explained=$(grep -c 'difference explained' /tmp/daemon.log)"
say END
echo "== results"; cat /tmp/results
poweroff -f
