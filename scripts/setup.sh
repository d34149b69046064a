#!/usr/bin/env bash
# Installs everything wgbpf's build, demo and tests need on a fresh Debian 12
# machine (run as root). Idempotent, and quick when everything is present.
set -euo pipefail

APT_PACKAGES=(
  # eBPF toolchain: Debian's rustc linked to LLVM 22, its std sources for
  # -Z build-std=core, and LLVM 22 for bpf-linker.
  rustc-web rust-web-src llvm-22-dev libzstd-dev
  # WireGuard on the host (userspace) and the tools the tests drive.
  wireguard-tools wireguard-go iproute2 nftables iputils-ping
  # Traffic generators and helpers for the end-to-end tests.
  socat procps
  # The systemd unit test: systemd-analyze (verify, security, syscall
  # groups) and strace for the system calls the daemon makes.
  systemd strace
  # Metrics tests: a real Prometheus server scraping `wgbpf run`, and promtool.
  prometheus
  # Fleet tests (wgbpf push / run --etcd): a real etcd server and etcdctl;
  # protoc builds the etcd-client crate's gRPC definitions.
  etcd-server etcd-client protobuf-compiler
  # VM tests (cargo xtask vm test): QEMU, the guest's busybox, module
  # dependency resolution and decompression for Debian's kernel packages.
  qemu-system-x86 busybox-static kmod xz-utils
)
BPF_LINKER_VERSION=0.13.0

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends: wireguard-tools would otherwise pull a kernel.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  echo "setup: building bpf-linker $BPF_LINKER_VERSION against LLVM 22 (a few minutes)" >&2
  LLVM_PREFIX=/usr/lib/llvm-22 PATH=/usr/lib/llvm-22/bin:$PATH \
    cargo install --locked bpf-linker --version "$BPF_LINKER_VERSION" \
      --no-default-features --features llvm-22
fi

# cargo-fuzz, for the bounded fuzz run of `cargo xtask test` (fuzz/).
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz (a minute)" >&2
  cargo install cargo-fuzz --locked
fi

mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
echo "setup: ok" >&2
