#!/usr/bin/env bash
# Regenerate the BPF encoding / LLVM-syntax oracle fixtures.
#
# Inputs : Tests/BPFAssemblyTests/Fixtures/src/*.c, *.s
# Outputs: Tests/BPFAssemblyTests/Fixtures/
#   <name>-<cpu>.<section>.bin      raw section bytes (llvm-objcopy -O binary)
#   <name>-<cpu>.<section>.txt      one instruction per line, as llvm-objdump prints it
#   <name>-<cpu>.<section>.objdump  full llvm-objdump -d -r -z output (for humans)
#   manifest.txt                    "<bin> <txt>" per line
# <section> is the ELF section name with every '/' replaced by '_'
# (".text" is kept verbatim, giving e.g. "calls-v1..text.bin").
#
# Only executable sections (llvm-objdump -h type TEXT) with non-zero size are
# extracted; .BTF, .maps, maps, license, .rel* etc. are data/non-alloc.
#
# .txt derivation from
#   llvm-objdump -d -z --no-show-raw-insn --no-leading-addr --section=<sec> <obj>
# (-z/--disassemble-zeroes is required: without it a run of all-zero 8-byte
#  slots is collapsed into a single "..." line.) Then:
#   1. keep only lines that begin with a TAB (instruction lines); this drops the
#      "<obj>:\tfile format elf64-bpf" header, "Disassembly of section" lines,
#      "<symbol>:" lines and blank lines;
#   2. strip leading whitespace;
#   3. drop relocation lines ("<hex>:  R_BPF_...", only printed with -r, which
#      is not passed) and "..." zero-run lines (not printed with -z) defensively;
#   4. strip the symbolic target suffix that llvm-objdump appends to branch
#      instructions: "goto +0x1 <f+0x20>" -> "goto +0x1" (applies to goto,
#      gotol, may_goto and every "if ... goto"). Nothing else is changed:
#      internal spacing/TABs are kept verbatim (ld_pseudo prints
#      "ld_pseudo<TAB>r1, 0x1, 0x7"), and "<unknown>" lines are kept.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/Tests/BPFAssemblyTests/Fixtures/src"
# FIXTURES_OUT writes elsewhere, so CI can check that the committed fixtures are current.
FIX="${FIXTURES_OUT:-$ROOT/Tests/BPFAssemblyTests/Fixtures}"
mkdir -p "$FIX"

CLANG="${CLANG:-/opt/swift/usr/bin/clang}"
OBJDUMP="${OBJDUMP:-/opt/swift/usr/bin/llvm-objdump}"
OBJCOPY="${OBJCOPY:-/opt/swift/usr/bin/llvm-objcopy}"

CFLAGS=(-O2 -g0 -target bpf -I/usr/include/x86_64-linux-gnu -c)
ASFLAGS=(-target bpf -c)

# Explicit per-source list of -mcpu values. Every file in src/ must appear.
declare -A CPUS=(
	[alu.c]="v1 v2 v3 v4"
	[jumps.c]="v1 v2 v3 v4"
	[mem.c]="v1 v2 v3 v4"
	[calls.c]="v1 v2 v3 v4"
	[ldabs.c]="v1 v2 v3 v4"
	[atomics.c]="v3 v4"  # fetch/xchg/cmpxchg and 32-bit or/and/xor need v3
	[v4.c]="v4"          # sdiv/smod: "unsupported signed division" before v4
	[all.s]="v4"         # hand-written, assembled once
	[raw.s]="v4"         # hand-encoded .byte experiments, assembled once
)

for tool in "$CLANG" "$OBJDUMP" "$OBJCOPY"; do
	[[ -x "$tool" ]] || { echo "missing tool: $tool" >&2; exit 1; }
done

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Remove previously generated outputs (never touches src/ or *.md).
rm -f "$FIX"/*.bin "$FIX"/*.txt "$FIX"/*.objdump "$FIX"/manifest.txt

objects=()
shopt -s nullglob
for src in "$SRC"/*.c "$SRC"/*.s; do
	file="$(basename "$src")"
	name="${file%.*}"
	if [[ -z "${CPUS[$file]+x}" ]]; then
		echo "error: $file has no entry in CPUS table in $0" >&2
		exit 1
	fi
	for cpu in ${CPUS[$file]}; do
		obj="$TMP/$name-$cpu.o"
		case "$file" in
		*.c) "$CLANG" "${CFLAGS[@]}" -mcpu="$cpu" "$src" -o "$obj" ;;
		*.s) "$CLANG" "${ASFLAGS[@]}" -mcpu="$cpu" "$src" -o "$obj" ;;
		esac
		objects+=("$obj")
	done
done

manifest="$FIX/manifest.txt"
: >"$manifest"

for obj in "${objects[@]}"; do
	base="$(basename "$obj" .o)"
	# Executable sections: type column "TEXT", non-zero size.
	mapfile -t sections < <("$OBJDUMP" -h "$obj" |
		awk '$NF == "TEXT" && $3 !~ /^0+$/ { print $2 }')
	for sec in "${sections[@]}"; do
		safe="${sec//\//_}"
		stem="$FIX/$base.$safe"
		"$OBJCOPY" -O binary --only-section="$sec" "$obj" "$stem.bin"
		# Human-readable listing; replace the temp path in the header.
		"$OBJDUMP" -d -r -z --section="$sec" "$obj" |
			sed "1,3s|$TMP/||" >"$stem.objdump"
		"$OBJDUMP" -d -z --no-show-raw-insn --no-leading-addr --section="$sec" "$obj" |
			grep $'^\t' |
			sed -E \
				-e 's/^[[:space:]]+//' \
				-e '/^[0-9a-f]+:[[:space:]]+R_BPF/d' \
				-e '/^\.\.\.$/d' \
				-e 's/^(.*(goto|gotol) [+-]0x[0-9a-f]+) <[^>]*>$/\1/' \
				>"$stem.txt"
		# Sanity check: text lines must account for every byte of the section.
		size=$(stat -c %s "$stem.bin")
		used=$(awk '
			/ ll$/ || /^ld_pseudo/ { n += 16; next }
			{ n += 8 }
			END { print n + 0 }' "$stem.txt")
		if [[ "$size" != "$used" ]]; then
			echo "note: $base.$safe: $size bytes but lines account for $used" \
				"(truncated trailing instruction?)" >&2
		fi
		echo "$base.$safe.bin $base.$safe.txt" >>"$manifest"
	done
done

echo "generated $(wc -l <"$manifest") fixture pairs in $FIX"
