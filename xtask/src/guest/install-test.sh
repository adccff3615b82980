#!/bin/bash
# The install test, inside a Debian guest booted with systemd as PID 1
# (`cargo xtask dist --check`): install the .deb, start the unit, a memory
# cgroup OOM, the kill on /metrics and in the journal, the unit's sandboxing
# and capabilities in force, stop, purge, nothing left behind. Lines starting
# with "@@" are read by the host; the guest powers off at the end.
exec > /dev/console 2>&1
set -u
say() { echo "@@ $*"; }
pass() { say "PASS $*"; }
fail() { say "FAIL $*"; }
check() { # check NAME COMMAND...: PASS or FAIL on the command's status
	local name=$1
	shift
	if "$@"; then pass "$name"; else fail "$name"; fi
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
scrape() {
	exec 3<>/dev/tcp/127.0.0.1/7707 || return 1
	printf 'GET /metrics HTTP/1.0\r\nHost: guest\r\n\r\n' >&3
	cat <&3
	exec 3<&-
}
metric() { # metric NAME: its value summed over every series (0 if absent)
	scrape 2>/dev/null | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { print s + 0 }'
}
wait_for() { # wait_for SECONDS COMMAND...
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -ge "$end" ] && return 1
		sleep 0.2
	done
}

say "boot kernel=$(uname -r) arch=$(uname -m) pid1=$(cat /proc/1/comm) systemd=$(systemctl --version | awk 'NR == 1 { print $2 }')"
check "systemd is PID 1" test "$(cat /proc/1/comm)" = systemd

t0=$(now)
if dpkg -i /lab/oomwatch.deb > /lab/dpkg.log 2>&1; then
	pass "dpkg -i"
else
	fail "dpkg -i: $(tail -n 3 /lab/dpkg.log | tr '\n' ' ')"
fi
check "unit enabled by the package" test "$(systemctl is-enabled oomwatch 2>&1)" = enabled
systemctl start oomwatch
answers() { test "$(metric oomwatch_build_info 2> /dev/null)" != 0; }
if wait_for 300 answers; then
	say "first-scrape-seconds $(since "$t0")"
	pass "/metrics answers after dpkg -i"
else
	fail "/metrics never answered; journal: $(journalctl -u oomwatch --no-pager -n 20 | tr '\n' '|')"
fi
check "config is a conffile" grep -q '^ /etc/oomwatch/config.toml ' /var/lib/dpkg/status
check "man page installed" test -f /usr/share/man/man1/oomwatch-run.1.gz
check "bash completion installed" test -f /usr/share/bash-completion/completions/oomwatch

pid=$(systemctl show -p MainPID --value oomwatch)
say "main-pid $pid"
status=/proc/$pid/status
bnd=$(awk '$1 == "CapBnd:" { print $2 }' "$status")
eff=$(awk '$1 == "CapEff:" { print $2 }' "$status")
say "caps CapBnd=$bnd CapEff=$eff NoNewPrivs=$(awk '$1 == "NoNewPrivs:" { print $2 }' "$status")"
# The unit's six: CAP_DAC_READ_SEARCH (2), CAP_SETPCAP (8), CAP_SYS_ADMIN (21),
# CAP_SYSLOG (34), CAP_PERFMON (38), CAP_BPF (39). Once attached the daemon
# keeps only what it still uses, in every set, the bounding set included.
six=$(((1 << 2) | (1 << 8) | (1 << 21) | (1 << 34) | (1 << 38) | (1 << 39)))
check "bounding set within the unit's" test $((0x${bnd:-ffffffffff} & ~six)) = 0
check "CAP_SYS_ADMIN and CAP_SETPCAP dropped after attaching" test $((0x${bnd:-ffffffffff} & ((1 << 21) | (1 << 8)))) = 0
check "effective set within the bounding set" test $((0x${eff:-ffffffffff} & ~0x${bnd:-0})) = 0
check "no_new_privs" grep -q '^NoNewPrivs:[[:space:]]*1' "$status"
check "oom_score_adj -900" test "$(cat /proc/"$pid"/oom_score_adj)" = -900
for p in ProtectSystem=strict ProtectHome=yes PrivateTmp=yes NoNewPrivileges=yes LogsDirectory=oomwatch OOMScoreAdjust=-900; do
	check "systemctl show: $p" test "$(systemctl show oomwatch -p "${p%%=*}" --value)" = "${p#*=}"
done
check "root read-only in its namespace" awk '$5 == "/" && $6 ~ /(^|,)ro(,|$)/ { f = 1 } END { exit !f }' /proc/"$pid"/mountinfo
check "LogsDirectory exists" test -d /var/log/oomwatch

kills0=$(metric oomwatch_oom_kills_total)
# A memory cgroup OOM: tail keeps /dev/zero's one endless line in memory.
systemd-run --quiet --wait --unit=lab-hog -p MemoryMax=48M -p MemorySwapMax=0 tail /dev/zero > /dev/null 2>&1
say "hog result $(systemctl show lab-hog -p Result --value 2> /dev/null)"
killed() { test "$(metric oomwatch_oom_kills_total)" -gt "$kills0"; }
if wait_for 60 killed; then
	pass "kill on /metrics"
else
	fail "kill on /metrics: oomwatch_oom_kills_total stayed $kills0"
fi
# The kill's own line, and its episode naming the task that ran out (tail):
# before 6.9 the kill line has only the pid (oom:mark_victim carries nothing
# else there); the episode joins the kernel's report.
in_journal() {
	journalctl -u oomwatch --no-pager > /lab/journal.txt
	grep -q "oom kill: pid=[0-9]" /lab/journal.txt && grep "oom episode: " /lab/journal.txt | grep -q '"tail"'
}
if wait_for 30 in_journal; then
	pass "kill in the journal"
else
	fail "kill in the journal: $(journalctl -u oomwatch --no-pager -n 10 | tr '\n' '|')"
fi

systemctl stop oomwatch
check "stopped" test "$(systemctl is-active oomwatch)" = inactive
if dpkg --purge oomwatch > /lab/purge.log 2>&1; then
	pass "dpkg --purge"
else
	fail "dpkg --purge: $(tail -n 3 /lab/purge.log | tr '\n' ' ')"
fi
left=$(find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /lab \) -prune -o -name '*oomwatch*' -print | tr '\n' ' ')
if [ -z "$left" ]; then pass "purge leaves nothing"; else fail "purge left: $left"; fi
say "end"
systemctl poweroff --no-block
