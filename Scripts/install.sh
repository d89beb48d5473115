#!/usr/bin/env bash
# Installs sksteer: the binary, its man page, shell completions and the systemd units.
#
#   Scripts/install.sh                 # into /usr/local (binary, man page, completions)
#   Scripts/install.sh --systemd       # also the units into /etc/systemd/system
#   DESTDIR=/tmp/pkg Scripts/install.sh --systemd   # staged, for packaging
#
# PREFIX (default /usr/local) and CONFIGURATION (default release) can be set. It enables
# nothing: `systemctl enable --now sksteer.service` does, after /etc/sksteer/bindings exists.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
prefix=${PREFIX:-/usr/local}
configuration=${CONFIGURATION:-release}
destdir=${DESTDIR:-}
systemd=false
for argument in "$@"; do
    case "$argument" in
    --systemd) systemd=true ;;
    *) echo "install.sh: unknown argument $argument (try --systemd)" >&2; exit 1 ;;
    esac
done

swift build -c "$configuration" --product sksteer
binary=$(swift build -c "$configuration" --show-bin-path)/sksteer
install -D -m 0755 "$binary" "$destdir$prefix/bin/sksteer"

# The man page, generated from the command definitions by swift-argument-parser's plugin.
swift package generate-manual --configuration "$configuration" >/dev/null
install -D -m 0644 .build/plugins/GenerateManual/outputs/sksteer/sksteer.1 "$destdir$prefix/share/man/man1/sksteer.1"

# Completions, from the same definitions.
"$binary" --generate-completion-script bash | install -D -m 0644 /dev/stdin "$destdir$prefix/share/bash-completion/completions/sksteer"
"$binary" --generate-completion-script zsh | install -D -m 0644 /dev/stdin "$destdir$prefix/share/zsh/site-functions/_sksteer"
"$binary" --generate-completion-script fish | install -D -m 0644 /dev/stdin "$destdir$prefix/share/fish/vendor_completions.d/sksteer.fish"

if $systemd; then
    for unit in Support/systemd/sksteer.service Support/systemd/sksteer-watch.service; do
        sed "s|/usr/local/bin/sksteer|$prefix/bin/sksteer|g" "$unit" |
            install -D -m 0644 /dev/stdin "$destdir/etc/systemd/system/$(basename "$unit")"
    done
    install -d -m 0755 "$destdir/etc/sksteer"
    [ -e "$destdir/etc/sksteer/bindings" ] || : >"$destdir/etc/sksteer/bindings"
fi
echo "installed sksteer into $destdir$prefix$($systemd && echo ", units into $destdir/etc/systemd/system")"
