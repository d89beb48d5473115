#!/usr/bin/env bash
# Runs the kernel-facing test suites on a second kernel: Debian 12's Linux 6.1 LTS, booted
# with virtme-ng over this machine's file system, as `.ci/run` does.
#
#   Scripts/test-on-linux-6.1.sh            # build the tests first: swift build --build-tests
#
# Needs, as root: qemu-system-x86, busybox-static, kmod, udev (apt-get), virtme-ng (pip).
# The kernel comes from Debian's `linux-image-6.1.0-*-amd64-unsigned` package (the `-cloud`
# flavour has no 9p, which virtme-ng needs); it is unpacked into a cache directory, never
# installed. Facts this script relies on:
# - this machine's /dev/kvm (PVM) boots no stock kernel, so the guest runs under TCG
#   (`--disable-kvm`): a boot takes ~30 s and the suites several minutes;
# - virtme-ng does not mount bpffs, and the guest's root is the host's, read-only: /tmp is a
#   private writable directory, and the suites mount their own bpffs where they need one;
# - the guest's module directory holds only what virtme-ng needs; the socket-diagnostics
#   modules (for socket owners in `status`) are loaded from the unpacked package;
# - the test binary is run directly, so it needs `--testing-library swift-testing`.
# KillSweepTests are skipped: they sweep every system call of every command, which takes
# far too long under emulation; they run on the host kernel in `.ci/run`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH

# Under the project: the guest sees the host's root, but its own /tmp and /var/tmp are empty.
cache=${SKSTEER_VM_CACHE:-$PWD/.build-vm}
tests=.build/debug/sksteerPackageTests.xctest
[[ -x $tests ]] || { echo "no $tests: run swift build --build-tests first" >&2; exit 1; }
for tool in vng qemu-system-x86_64 busybox dpkg-deb apt-get; do
    command -v "$tool" >/dev/null || {
        echo "$tool is missing: apt-get install qemu-system-x86 busybox-static kmod udev; pip install virtme-ng" >&2
        exit 1
    }
done

mkdir -p "$cache"
kernel=$(find "$cache/kernel/boot" -name 'vmlinuz-6.1.*-amd64' 2>/dev/null | sort -V | tail -1 || true)
if [[ -z $kernel ]]; then
    package=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' | awk '{print $1}' | sort -V | tail -1)
    [[ -n $package ]] || { apt-get update -qq; package=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' | awk '{print $1}' | sort -V | tail -1); }
    [[ -n $package ]] || { echo "no linux-image-6.1.0-*-amd64-unsigned package in apt's lists" >&2; exit 1; }
    echo "== downloading $package"
    (cd "$cache" && rm -f ./*.deb && apt-get download -qq "$package" 2>/dev/null)
    rm -rf "$cache/kernel" && dpkg-deb -x "$cache"/*.deb "$cache/kernel" && rm -f "$cache"/*.deb
    kernel=$(find "$cache/kernel/boot" -name 'vmlinuz-6.1.*-amd64' | sort -V | tail -1)
    # The package leaves modules.dep to its postinst; the guest's modprobe needs it.
    depmod -b "$cache/kernel" "${kernel##*/vmlinuz-}"
fi

work=$(mktemp -d "$cache/run.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tmp"
# The kernel layer, SK_LOOKUP and the dispatcher's kernel-facing suites. Skipped: the kill
# sweeps and the 100-apply atomicity loop (each would take most of an hour under emulation;
# neither depends on the kernel version), and the pure suites, which need no kernel at all.
skip=${SKSTEER_VM_SKIP:-KillSweepTests|applyIsAtomicUnderLoad|everyKillPointLeavesOnlyCountersOfBindingsInForce}
filter=${SKSTEER_VM_FILTER:-BPFTests\.|SKLookupTests\.|SocketSteeringTests\.(BehaviourTests|InterfaceTests|DataPlaneTests|DispatcherTests|KernelDifferentialTests|StateSecurityTests|BindingMetricsTests)}
echo "== $(basename "$kernel") under virtme-ng (TCG): $filter, skipping $skip"
# The guest writes its exit status where the host can read it: vng's own status is qemu's.
timeout 3000 vng --run "$kernel" --disable-kvm --memory 6G --cpus 2 \
    --rwdir "/tmp=$work/tmp" --rwdir "$work" \
    --exec "cd '$PWD' && uname -r && for m in tcp_diag udp_diag; do modprobe -d '$cache/kernel' \$m; done;
        $tests --testing-library swift-testing --filter '$filter' --skip '$skip';
        echo \$? > '$work/status'" \
    2>&1 | grep -v -E '^\S*◇|started\.$' || true
status=$(cat "$work/status" 2>/dev/null || echo "no status: the guest did not finish")
echo "== tests on $(basename "$kernel") exited: $status"
[[ $status == 0 ]]
