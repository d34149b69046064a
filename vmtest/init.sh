#!/bin/sh
# /init of the VM test's initramfs (see docs/vm-tests.md). Runs as PID 1 in
# busybox sh on a Debian kernel booted by `cargo xtask vm test`.
#
# The gateway is the VM's root network namespace; alice and bob are network
# namespaces joined to it by veth pairs. All three run the kernel's own
# WireGuard; the gateway forwards between alice and bob. wgbpf guards the
# gateway's wg0. Everything stays inside the VM (it has no NIC).
#
# Output protocol on the serial console, read by xtask/src/vm/:
#   WGBPF-VM-CHECK ok|FAIL NAME [detail]   one line per check
#   WGBPF-VM-INFO KEY=VALUE                facts (timings, attach mode, ...)
#   WGBPF-VM-JSON NAME {...}               JSON the host checks (counters)
#   WGBPF-VM-LOAD-ERROR-BEGIN / -END       wgbpf load's stderr, when it fails
#   WGBPF-VM-RESULT pass|fail kernel=RELEASE
# /etc/wgbpf-vm.conf (written by the host) sets LABEL and EXPECT_ATTACH.

export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
/bin/busybox mkdir -p /proc /sys /dev /run /tmp
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
mount -t bpf bpf /sys/fs/bpf
. /etc/wgbpf-vm.conf
# This busybox prefers its own applets to PATH: the real iproute2 by path.
ip() { /usr/sbin/ip "$@"; }
tc() { /usr/sbin/tc "$@"; }

FAILS=0
KREL=$(uname -r)
echo "WGBPF-VM-INFO kernel=$KREL"

ok() { echo "WGBPF-VM-CHECK ok $*"; }
fail() {
	echo "WGBPF-VM-CHECK FAIL $*"
	FAILS=$((FAILS + 1))
}
# check NAME CMD...: ok when CMD succeeds.
check() {
	name=$1
	shift
	if "$@"; then ok "$name"; else fail "$name" "($*)"; fi
}
# check_not NAME CMD...: ok when CMD fails.
check_not() {
	name=$1
	shift
	if "$@"; then fail "$name" "(succeeded: $*)"; else ok "$name"; fi
}
now() { cut -d' ' -f1 /proc/uptime; }
finish() {
	if [ "$FAILS" -eq 0 ] && [ "$1" != fail ]; then r=pass; else r=fail; fi
	echo "WGBPF-VM-RESULT $r kernel=$KREL label=$LABEL failed_checks=$FAILS uptime=$(now)"
	sync
	poweroff -f
	sleep 5
	reboot -f
}

# --- modules (wireguard and its dependencies, veth, sch_ingress, cls_bpf) ---
while read -r m; do
	[ -n "$m" ] || continue
	insmod "/lib/modules/wgbpf/$m" || fail "insmod" "$m"
done </lib/modules/wgbpf/order
check modules-loaded grep -q '^wireguard ' /proc/modules

# --- network: gw (root ns) <-veth-> alice, gw <-veth-> bob ---
setup_net() {
	ip link set lo up &&
		ip link add gw-alice type veth peer name eth0 netns alice &&
		ip link add gw-bob type veth peer name eth0 netns bob &&
		ip addr add 192.0.2.1/30 dev gw-alice &&
		ip addr add 192.0.2.5/30 dev gw-bob &&
		ip link set gw-alice up && ip link set gw-bob up &&
		ip -n alice addr add 192.0.2.2/30 dev eth0 &&
		ip -n bob addr add 192.0.2.6/30 dev eth0 &&
		ip -n alice link set eth0 up && ip -n bob link set eth0 up &&
		ip -n alice link set lo up && ip -n bob link set lo up &&
		sysctl -qw net.ipv4.ip_forward=1 &&
		sysctl -qw net.ipv6.conf.all.forwarding=1
}
ip netns add alice && ip netns add bob
check network-namespaces setup_net

umask 077
for h in gw alice bob; do
	wg genkey >/tmp/$h.key && wg pubkey </tmp/$h.key >/tmp/$h.pub
done
umask 022
GW_PUB=$(cat /tmp/gw.pub)
ALICE_PUB=$(cat /tmp/alice.pub)
BOB_PUB=$(cat /tmp/bob.pub)

setup_wg() {
	ip link add wg0 type wireguard &&
		wg set wg0 listen-port 51820 private-key /tmp/gw.key \
			peer "$ALICE_PUB" allowed-ips 10.77.0.2/32,fd77::2/128 \
			peer "$BOB_PUB" allowed-ips 10.77.0.3/32,fd77::3/128 &&
		ip addr add 10.77.0.1/24 dev wg0 &&
		ip addr add fd77::1/64 dev wg0 nodad &&
		ip link set wg0 up || return 1
	for h in alice bob; do
		case $h in alice) n=2 u=192.0.2.1 ;; bob) n=3 u=192.0.2.5 ;; esac
		# Created inside the namespace: its UDP socket lives there.
		ip -n $h link add wg0 type wireguard &&
			ip netns exec $h wg set wg0 private-key /tmp/$h.key \
				peer "$GW_PUB" allowed-ips 10.77.0.0/24,fd77::/64 endpoint $u:51820 &&
			ip -n $h addr add 10.77.0.$n/24 dev wg0 &&
			ip -n $h addr add fd77::$n/64 dev wg0 nodad &&
			ip -n $h link set wg0 up || return 1
	done
}
check wireguard-devices setup_wg

# --- services: a banner on each TCP port (busybox nc, persistent) ---
printf '#!/bin/sh\necho wgbpf-banner\n' >/tmp/banner
chmod 755 /tmp/banner
for p in 22 80 2222 2500; do nc -ll -p $p -e /tmp/banner & done
ip netns exec bob nc -ll -p 8080 -e /tmp/banner &
ip netns exec alice nc -ll -p 8080 -e /tmp/banner &
sleep 1

# tcp HOST DST PORT: the connection is made and the banner arrives.
tcp() {
	ip netns exec "$1" nc -w 4 "$2" "$3" </dev/null 2>/dev/null | grep -q wgbpf-banner
}
# ping4/ping6 HOST DST: one echo answered within 4 s.
ping4() { ip netns exec "$1" ping -c 1 -W 4 "$2" >/dev/null 2>&1; }
ping6() { ip netns exec "$1" ping6 -c 1 -W 4 "$2" >/dev/null 2>&1; }
# retry N CMD...: for the first packets through a tunnel (handshake).
retry() {
	n=$1
	shift
	i=0
	while [ $i -lt "$n" ]; do
		"$@" && return 0
		i=$((i + 1))
	done
	return 1
}

# eventually N CMD...: CMD succeeds within N seconds (polled every second).
eventually() {
	n=$1
	shift
	i=0
	while [ $i -lt "$n" ]; do
		"$@" && return 0
		sleep 1
		i=$((i + 1))
	done
	return 1
}

# --- the tunnel carries traffic before wgbpf ---
t0=$(now)
check tunnel-alice-ping-gw retry 5 ping4 alice 10.77.0.1
check tunnel-bob-ping-gw retry 5 ping4 bob 10.77.0.1
echo "WGBPF-VM-INFO handshake_seconds=$(awk "BEGIN{print $(now)-$t0}")"
check tunnel-bob-ping6-gw retry 3 ping6 bob fd77::1
check tunnel-bob-tcp-gw-22 retry 3 tcp bob 10.77.0.1 22
check tunnel-bob-tcp-alice-8080 retry 3 tcp bob 10.77.0.2 8080
check handshake-gw-alice sh -c "wg show wg0 latest-handshakes | awk -v k='$ALICE_PUB' '\$1 == k && \$2 > 0 { f = 1 } END { exit !f }'"

# --- wgbpf load ---
cat >/tmp/mesh.toml <<EOF
[interface]
name = "wg0"
addresses = ["10.77.0.1/24", "fd77::1/64"]

[[peer]]
name = "alice"
public_key = "$ALICE_PUB"
allowed_ips = ["10.77.0.2/32", "fd77::2/128"]

[[peer]]
name = "bob"
public_key = "$BOB_PUB"
allowed_ips = ["10.77.0.3/32", "fd77::3/128"]

[policy]

[[policy.rule]]
name = "alice-ssh"
action = "accept"
from = ["alice"]
to = ["gateway"]
proto = "tcp"
ports = [22, "2000-3000"]

[[policy.rule]]
name = "no-2222"
action = "deny"
from = ["*"]
to = ["gateway"]
proto = "tcp"
ports = [2222]

[[policy.rule]]
name = "alice-to-bob-web"
action = "accept"
from = ["alice"]
to = ["bob"]
proto = "tcp"
ports = [8080]

[[policy.rule]]
name = "bob-ping-gateway"
action = "accept"
from = ["bob"]
to = ["gateway"]
proto = "icmp"
ports = [8]

[[policy.rule]]
name = "bob-ping6-gateway"
action = "accept"
from = ["bob"]
to = ["gateway"]
proto = "icmpv6"
ports = [128]
EOF

t0=$(now)
wgbpf load -c /tmp/mesh.toml --json >/tmp/load.json 2>/tmp/load.err
rc=$?
t1=$(now)
echo "WGBPF-VM-INFO load_seconds=$(awk "BEGIN{print $t1-$t0}")"
if [ $rc -ne 0 ]; then
	fail wgbpf-load "exit $rc"
	lines=$(wc -l </tmp/load.err)
	echo "WGBPF-VM-LOAD-ERROR-BEGIN lines=$lines"
	if [ "$lines" -le 3000 ]; then
		cat /tmp/load.err
	else
		head -n 300 /tmp/load.err
		echo "[... $((lines - 600)) lines left out ...]"
		tail -n 300 /tmp/load.err
	fi
	echo "WGBPF-VM-LOAD-ERROR-END"
	finish fail
fi
ok wgbpf-load
mode=$(grep -o '"mode":"[a-z]*"' /tmp/load.json | head -n 1 | cut -d'"' -f4)
echo "WGBPF-VM-INFO attach=$mode"
if [ "$mode" = "$EXPECT_ATTACH" ]; then
	ok attach-mode "$mode"
else
	fail attach-mode "got '$mode', want $EXPECT_ATTACH: $(cat /tmp/load.json)"
fi
case $EXPECT_ATTACH in
clsact)
	check clsact-filter-ingress sh -c '/usr/sbin/tc filter show dev wg0 ingress | grep -q wgbpf_ingress'
	check clsact-filter-egress sh -c '/usr/sbin/tc filter show dev wg0 egress | grep -q wgbpf_egress'
	;;
tcx)
	check tcx-links-pinned test -e /sys/fs/bpf/wgbpf/wg0/link_ingress -a -e /sys/fs/bpf/wgbpf/wg0/link_egress
	;;
esac
# The verifier's work: the smoke example loads the programs once more (not
# attached) and prints its instruction counts (bpftool 7.1 does not).
if [ -x /usr/local/bin/wgbpf-smoke ]; then
	if wgbpf-smoke >/tmp/smoke.out 2>&1; then
		sed -n 's/^load: \(.*\)/WGBPF-VM-INFO smoke_load=\1/p' /tmp/smoke.out
		sed -n 's/^\(wgbpf_[a-z]*\): verifier processed Some(\([0-9]*\)).*/WGBPF-VM-INFO verified_insns_\1=\2/p' /tmp/smoke.out
	else
		echo "WGBPF-VM-INFO smoke_load=failed"
		sed 's/^/smoke: /' /tmp/smoke.out | head -n 20
	fi
	# With the programs' own log on at its most verbose level, the
	# programs must still pass this kernel's verifier (its budget is 1M).
	SMOKE_PROGRAM_LOG=trace wgbpf-smoke >/tmp/smoke-log.out 2>&1
	log_rc=$?
	check program-log-trace-loads test "$log_rc" -eq 0
	if [ "$log_rc" -eq 0 ]; then
		sed -n 's/^\(wgbpf_[a-z]*\): verifier processed Some(\([0-9]*\)).*/WGBPF-VM-INFO verified_insns_log_\1=\2/p' /tmp/smoke-log.out
	else
		grep -v '^  ' /tmp/smoke-log.out | tail -n 8 | sed 's/^/smoke (log trace): /'
	fi
fi

# --- the policy, enforced by the pinned programs (wgbpf has exited) ---
check allow-alice-tcp-gw-22 retry 2 tcp alice 10.77.0.1 22
check allow-alice-tcp6-gw-22 retry 2 tcp alice fd77::1 22
check allow-alice-tcp-gw-2500 retry 2 tcp alice 10.77.0.1 2500
check allow-bob-ping-gw retry 2 ping4 bob 10.77.0.1
check allow-bob-ping6-gw retry 2 ping6 bob fd77::1
check allow-alice-tcp-bob-8080 retry 2 tcp alice 10.77.0.3 8080
check_not deny-alice-tcp-gw-2222 tcp alice 10.77.0.1 2222
check_not deny-alice-tcp-gw-80 tcp alice 10.77.0.1 80
check_not deny-bob-tcp-gw-22 tcp bob 10.77.0.1 22
check_not deny-bob-tcp6-gw-22 tcp bob fd77::1 22
check_not deny-alice-ping-gw ping4 alice 10.77.0.1
check_not deny-bob-tcp-alice-8080 tcp bob 10.77.0.2 8080
# The gateway's own port 22 really listens: only the policy said no to bob.
check gw-local-tcp-22 sh -c 'nc -w 4 10.77.0.1 22 </dev/null | grep -q wgbpf-banner'

if wgbpf counters -c /tmp/mesh.toml --json >/tmp/counters.json 2>/tmp/counters.err; then
	ok wgbpf-counters
	echo "WGBPF-VM-JSON counters $(tr -d '\n' </tmp/counters.json)"
else
	fail wgbpf-counters "$(cat /tmp/counters.err)"
fi

# --- unload: programs gone, traffic flows again ---
# --- the kernel WireGuard backend: the same mesh file, now also managing
# the device over generic netlink. bob removed by hand is restored, and the
# device then matches the file. ---
awk '{ print } /^name = "wg0"$/ { print "private_key_file = \"/tmp/gw.key\""; print "listen_port = 51820" }' \
	/tmp/mesh.toml >/tmp/mesh-wg.toml
check drift-remove-bob wg set wg0 peer "$BOB_PUB" remove
check_not drift-bob-gone sh -c "wg show wg0 peers | grep -q '$BOB_PUB'"
check kernel-backend-load sh -c 'wgbpf load -c /tmp/mesh-wg.toml --json >/tmp/load-wg.json 2>/tmp/load-wg.err && grep -q "\"backend\":\"kernel\"" /tmp/load-wg.json'
check kernel-backend-bob-restored sh -c "wg show wg0 allowed-ips | grep '$BOB_PUB' | grep -q '10.77.0.3/32'"
check kernel-backend-audit-equal wgbpf audit -c /tmp/mesh-wg.toml
check kernel-backend-reload-unchanged sh -c 'wgbpf load -c /tmp/mesh-wg.toml --json | grep -q "\"wireguard\":{[^}]*\"changed\":false"'
# bob still holds his old session, which the gateway forgot with the peer:
# WireGuard re-handshakes after its keepalive timeout (about 15 s).
check allow-bob-ping-gw-after-repair retry 15 ping4 bob 10.77.0.1

# --- wgbpf load creates the kernel interface (userspace/src/wg/kernel/link.rs):
# a mesh file for wg1, which does not exist yet, with addresses, an MTU and
# a peer whose AllowedIPs are partly outside the interface's subnet. ---
{
	(umask 077 && wg genkey >/tmp/wg1.key)
	W1_PEER=$(wg genkey | wg pubkey)
	cat >/tmp/mesh-wg1.toml <<EOF
[interface]
name = "wg1"
private_key_file = "/tmp/wg1.key"
listen_port = 51821
mtu = 1380
addresses = ["10.88.0.1/24", "fd88::1/64"]

[[peer]]
name = "remote"
public_key = "$W1_PEER"
allowed_ips = ["10.88.0.5/32", "10.99.0.0/24", "fd99::/64"]

[policy]

[[policy.rule]]
action = "accept"
from = ["*"]
to = ["*"]
proto = "icmp"
EOF
	check_not link-wg1-absent-before ip link show wg1
	if wgbpf load -c /tmp/mesh-wg1.toml >/tmp/load-wg1.out 2>/tmp/load-wg1.err; then
		ok link-load-creates-wg1
	else
		fail link-load-creates-wg1 "$(tr '\n' ' ' </tmp/load-wg1.err)"
	fi
	check link-wg1-type-wireguard sh -c '/usr/sbin/ip -d link show wg1 | grep -q wireguard'
	check link-wg1-up sh -c '/usr/sbin/ip link show wg1 | grep -q "[<,]UP[,>]"'
	check link-wg1-mtu sh -c '/usr/sbin/ip link show wg1 | grep -q "mtu 1380"'
	check link-wg1-address4 sh -c '/usr/sbin/ip -4 addr show dev wg1 | grep -q "inet 10.88.0.1/24"'
	check link-wg1-address6 sh -c '/usr/sbin/ip -6 addr show dev wg1 | grep -q "inet6 fd88::1/64"'
	check link-wg1-route4 sh -c '/usr/sbin/ip -4 route show dev wg1 | grep -q "^10.99.0.0/24 "'
	check link-wg1-route6 sh -c '/usr/sbin/ip -6 route show dev wg1 | grep -q "^fd99::/64 "'
	check_not link-wg1-no-route-inside-subnet sh -c '/usr/sbin/ip -4 route show dev wg1 | grep -q "^10.88.0.5"'
	check link-wg1-peer-configured sh -c "wg show wg1 allowed-ips | grep '$W1_PEER' | grep -q 10.99.0.0/24"
	check link-wg1-reload wgbpf load -c /tmp/mesh-wg1.toml
	# Drift repair of the interface itself: `wgbpf run` puts back an
	# address, a route and the MTU changed by hand.
	wgbpf run -c /tmp/mesh-wg1.toml --no-metrics --repair-interval 1 --log-format json 2>/tmp/run-wg1.log &
	RUN_WG1=$!
	check link-wg1-daemon-ready eventually 30 wgbpf reload -i wg1 --status
	/usr/sbin/ip addr del 10.88.0.1/24 dev wg1
	/usr/sbin/ip route del 10.99.0.0/24 dev wg1
	/usr/sbin/ip link set wg1 mtu 1420
	check link-wg1-repaired-address eventually 10 sh -c '/usr/sbin/ip -4 addr show dev wg1 | grep -q "inet 10.88.0.1/24"'
	check link-wg1-repaired-route eventually 10 sh -c '/usr/sbin/ip -4 route show dev wg1 | grep -q "^10.99.0.0/24 "'
	check link-wg1-repaired-mtu eventually 10 sh -c '/usr/sbin/ip link show wg1 | grep -q "mtu 1380"'
	check link-wg1-repairs-logged sh -c 'grep "drift repaired" /tmp/run-wg1.log | grep "\"kind\":\"link\"" | grep -q "10.99.0.0/24"'
	kill "$RUN_WG1"
	wait "$RUN_WG1"
	check link-wg1-unload wgbpf unload -i wg1
	check link-wg1-del ip link del wg1
}

# --- the XDP guard on the underlay (docs/xdp-guard.md), with the kernel
# module's tunnel through it: its messages (data of every padded length,
# keepalives, handshakes) pass and are counted, nothing is dropped, unload
# removes it. ---
awk '/^\[\[peer\]\]/ && !g { print "[interface.guard]"; print "underlay = [\"gw-alice\", \"gw-bob\"]"; print ""; g = 1 } { print }' \
	/tmp/mesh-wg.toml >/tmp/mesh-guard.toml
check guard-load sh -c 'wgbpf load -c /tmp/mesh-guard.toml >/tmp/load-guard.out 2>/tmp/load-guard.err && grep -q "gw-alice: XDP guard attached" /tmp/load-guard.out && grep -q "gw-bob: XDP guard attached" /tmp/load-guard.out'
check guard-tunnel-bob-ping-gw retry 5 ping4 bob 10.77.0.1
check guard-tunnel-alice-tcp-gw-22 retry 3 tcp alice 10.77.0.1 22
check guard-tunnel-alice-tcp-bob-8080 retry 3 tcp alice 10.77.0.3 8080
wgbpf show -i wg0 -c /tmp/mesh-guard.toml --json >/tmp/show-guard.json 2>/tmp/show-guard.err
check guard-passed-data grep -q '"pass_data":[1-9]' /tmp/show-guard.json
check_not guard-dropped-nothing grep -Eq '"(malformed|bad_type|reserved|bad_size|rate_limited|not_allowed|ext_headers)":[1-9]' /tmp/show-guard.json
check guard-unload sh -c 'wgbpf unload -i gw-alice && wgbpf unload -i gw-bob'
check_not guard-pins-removed test -e /sys/fs/bpf/wgbpf-xdp/gw-alice

check wgbpf-unload wgbpf unload -i wg0
check_not unload-pins-removed test -e /sys/fs/bpf/wgbpf/wg0
check_not unload-no-filter sh -c '/usr/sbin/tc filter show dev wg0 ingress | grep -q wgbpf'
check after-unload-bob-tcp-gw-22 retry 2 tcp bob 10.77.0.1 22
check after-unload-alice-tcp-gw-2222 retry 2 tcp alice 10.77.0.1 2222

# --- the kernel WireGuard backend at scale (docs/reliability.md): 10,000
# peers (/etc/wgbpf-vm/peers-10k.txt, "NAME KEY ADDRESS", made by the host)
# applied by `wgbpf load` to the real module; an unchanged re-apply; one
# changed peer; and `wg setconf` of the same peers, for the times. What the
# module really received is counted by kprobes on its own functions (hit
# counts in kprobe_profile; the top trace buffer records nothing):
# wg_set_device, once per WG_CMD_SET_DEVICE message; set_peer, once per peer
# in a message; wg_peer_create, wg_peer_remove, wg_allowedips_insert_v4.
# The trace instance "span" records wg_set_device's entries and returns
# only: the span from the first message's arrival to the last one's end. ---
TR=/sys/kernel/tracing
PEERS=/etc/wgbpf-vm/peers-10k.txt
setup_probes() {
	[ -e $TR/kprobe_events ] || mount -t tracefs tracefs $TR || return 1
	for p in 'p:wgbpf/set_device wireguard:wg_set_device' \
		'r:wgbpf/set_device_end wireguard:wg_set_device' \
		'p:wgbpf/set_peer wireguard:set_peer' \
		'p:wgbpf/peer_create wireguard:wg_peer_create' \
		'p:wgbpf/peer_remove wireguard:wg_peer_remove' \
		'p:wgbpf/aips_insert_v4 wireguard:wg_allowedips_insert_v4'; do
		echo "$p" >>$TR/kprobe_events || return 1
	done
	echo 0 >$TR/tracing_on &&
		for e in set_peer peer_create peer_remove aips_insert_v4; do
			echo 1 >$TR/events/wgbpf/$e/enable || return 1
		done &&
		mkdir -p $TR/instances/span &&
		echo 1 >$TR/instances/span/events/wgbpf/set_device/enable &&
		echo 1 >$TR/instances/span/events/wgbpf/set_device_end/enable
}
# hits PROFILE NAME: a probe's hit count in a copy of kprobe_profile.
hits() { awk -v e="$2" '$1 == e || $1 == "wgbpf/" e { print $2 }' "$1"; }
# since NAME: its hits since the last measure began.
since() {
	cat $TR/kprobe_profile >/tmp/kp.now
	echo $(($(hits /tmp/kp.now "$1") - $(hits /tmp/kp.mark "$1")))
}
# span: seconds from the first wg_set_device entry to the last return.
span() {
	awk '{
		for (i = 2; i <= NF; i++) {
			if ($i != "set_device:" && $i != "set_device_end:") continue
			t = $(i - 1); sub(/:$/, "", t)
			if ($i == "set_device:" && f == "") f = t
			if ($i == "set_device_end:") l = t
		}
	} END { if (f == "" || l == "") print "none"; else printf "%.3f\n", l - f }' $TR/instances/span/trace
}
# measure NAME CMD...: runs CMD; its seconds, the SET messages, the peers in
# them and the span, as WGBPF-VM-INFO scale_NAME_*. CMD's status.
measure() {
	mname=$1
	shift
	cat $TR/kprobe_profile >/tmp/kp.mark
	echo >$TR/instances/span/trace
	m0=$(now)
	"$@"
	rc=$?
	m1=$(now)
	echo "WGBPF-VM-INFO scale_${mname}_seconds=$(awk "BEGIN{print $m1-$m0}")"
	echo "WGBPF-VM-INFO scale_${mname}_messages=$(since set_device)"
	echo "WGBPF-VM-INFO scale_${mname}_peers=$(since set_peer)"
	echo "WGBPF-VM-INFO scale_${mname}_span=$(span)"
	return $rc
}
# expect NAME PROBE N: the probe was hit N times in the last measure.
expect() {
	got=$(since "$2")
	if [ "$got" = "$3" ]; then ok "$1" "$2=$got"; else fail "$1" "$2: $got, want $3"; fi
}
# json_count KEY FILE: how many names the report's list KEY holds.
json_count() { sed -n "s/.*\"$1\":\[\([^]]*\)\].*/\1/p" "$2" | tr ',' '\n' | grep -c '"'; }
# peers_of IFACE: "KEY<tab>ALLOWED-IPS" per peer, sorted.
peers_of() { wg show "$1" allowed-ips | sort; }
# wload FILE OUT: wgbpf load FILE, its report in OUT, its stderr in OUT.err.
wload() { wgbpf load -c "$1" --json >"$2" 2>"$2.err"; }
# only_in A B: the lines of B that A lacks.
only_in() { awk 'NR == FNR { seen[$0] = 1; next } !($0 in seen)' "$1" "$2"; }

# teardown IFACE: deletes a device that held 10,000 peers. Deleting it
# with its peers took 170-180 s here (6.12, TCG); emptying it first (one
# message), then deleting it, takes about a second.
teardown() {
	d0=$(now)
	wg setconf "$1" /tmp/wg-no-peers.conf
	ip link del "$1"
	echo "WGBPF-VM-INFO scale_teardown_$1_seconds=$(awk "BEGIN{print $(now)-$d0}")"
}
scale() {
	check scale-probes setup_probes || return
	t0=$(now)
	(umask 077 && wg genkey >/tmp/wg2.key)
	awk '{ print $2 "\t" $3 }' $PEERS | sort >/tmp/peers-10k.want
	{
		printf '[interface]\nname = "wg2"\nprivate_key_file = "/tmp/wg2.key"\n'
		printf 'listen_port = 51822\naddresses = ["10.100.0.1/16"]\n\n'
		awk '{ printf "[[peer]]\nname = \"%s\"\npublic_key = \"%s\"\nallowed_ips = [\"%s\"]\n\n", $1, $2, $3 }' $PEERS
		printf '[policy]\n\n[[policy.rule]]\naction = "accept"\nfrom = ["*"]\nto = ["gateway"]\nproto = "icmp"\n'
	} >/tmp/mesh-10k.toml
	{
		printf '[Interface]\nPrivateKey = %s\nListenPort = 51823\n\n' "$(cat /tmp/wg2.key)"
		awk '{ printf "[Peer]\nPublicKey = %s\nAllowedIPs = %s\n\n", $2, $3 }' $PEERS
	} >/tmp/wg-10k.conf
	printf '[Interface]\nPrivateKey = %s\nListenPort = 51822\n' "$(cat /tmp/wg2.key)" >/tmp/wg-empty.conf
	printf '[Interface]\nPrivateKey = %s\n' "$(cat /tmp/wg2.key)" >/tmp/wg-no-peers.conf
	echo "WGBPF-VM-INFO scale_files_seconds=$(awk "BEGIN{print $(now)-$t0}")"

	# wg(8) on a fresh device: the yardstick.
	ip link add wg3 type wireguard
	check scale-setconf-10k measure setconf wg setconf wg3 /tmp/wg-10k.conf
	check scale-setconf-10k-peers sh -c "[ \$(wg show wg3 peers | wc -l) -eq 10000 ]"
	teardown wg3

	# wgbpf load on an interface that does not exist yet: the link made, the
	# data plane loaded (the verifier), 10,000 peers sent.
	check scale-load-10k measure load wload /tmp/mesh-10k.toml /tmp/load-10k.json
	peers_of wg2 >/tmp/peers-10k.got
	check scale-load-10k-device-equal cmp -s /tmp/peers-10k.want /tmp/peers-10k.got
	expect scale-load-10k-created peer_create 10000
	expect scale-load-10k-each-once set_peer 10000
	n=$(json_count peers_added /tmp/load-10k.json)
	if [ "$n" = 10000 ]; then ok scale-load-10k-reported; else fail scale-load-10k-reported "peers_added: $n"; fi

	# The same file again: nothing sent.
	check scale-reapply-unchanged measure noop wload /tmp/mesh-10k.toml /tmp/load-noop.json
	expect scale-reapply-no-message set_device 0
	expect scale-reapply-no-peer set_peer 0
	check scale-reapply-reported-unchanged grep -q '"wireguard":{[^}]*"changed":false' /tmp/load-noop.json

	# The device emptied behind wgbpf's back, then the 10,000 peers again:
	# the same sending as the first load, over the data plane already there.
	check scale-wipe sh -c 'wg setconf wg2 /tmp/wg-empty.conf && [ -z "$(wg show wg2 peers)" ]'
	check scale-readd-10k measure readd wload /tmp/mesh-10k.toml /tmp/load-readd.json
	expect scale-readd-created peer_create 10000
	peers_of wg2 >/tmp/peers-10k.got
	check scale-readd-device-equal cmp -s /tmp/peers-10k.want /tmp/peers-10k.got

	# One peer changed (s5000's address): one message, one peer, one
	# address, nothing created or removed; in `wg show dump` only its line
	# differs.
	S5000=$(awk '$1 == "s5000" { print $2 }' $PEERS)
	OLD=$(awk '$1 == "s5000" { print $3 }' $PEERS)
	sed "s|\"$OLD\"|\"10.100.200.1/32\"|" /tmp/mesh-10k.toml >/tmp/mesh-10k-one.toml
	wg show wg2 dump | tail -n +2 >/tmp/dump-before
	check scale-one-changed measure one wload /tmp/mesh-10k-one.toml /tmp/load-one.json
	expect scale-one-message set_device 1
	expect scale-one-peer set_peer 1
	expect scale-one-address aips_insert_v4 1
	expect scale-one-none-created peer_create 0
	expect scale-one-none-removed peer_remove 0
	wg show wg2 dump | tail -n +2 >/tmp/dump-after
	only_in /tmp/dump-after /tmp/dump-before >/tmp/dump-gone
	only_in /tmp/dump-before /tmp/dump-after >/tmp/dump-new
	if [ "$(wc -l </tmp/dump-gone)" -eq 1 ] && [ "$(wc -l </tmp/dump-new)" -eq 1 ] &&
		awk -v k="$S5000" -v a="$OLD" '$1 == k && $4 == a { f = 1 } END { exit !f }' /tmp/dump-gone &&
		awk -v k="$S5000" '$1 == k && $4 == "10.100.200.1/32" { f = 1 } END { exit !f }' /tmp/dump-new; then
		ok scale-one-dump-one-line
	else
		fail scale-one-dump-one-line "$(cut -f1,4 /tmp/dump-gone /tmp/dump-new | head -n 6 | tr '\n' ' ')"
	fi
	check scale-one-reported sh -c 'grep -q "\"peers_updated\":\[{\"peer\":\"s5000\",\"fields\":\[\"allowed_ips\"\]}\]" /tmp/load-one.json &&
		grep -q "\"peers_added\":\[\]" /tmp/load-one.json && grep -q "\"peers_removed\":\[\]" /tmp/load-one.json'

	check scale-unload wgbpf unload -i wg2
	teardown wg2
	echo "WGBPF-VM-INFO scale_seconds=$(awk "BEGIN{print $(now)-$t0}")"
}
scale

finish
