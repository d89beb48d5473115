# raw.s -- hand-encoded instructions (via .byte/.short/.int) to probe how
# llvm-objdump prints encodings that the assembler cannot (or will not) produce.
# Assemble: clang -target bpf -mcpu=v4 -c raw.s -o raw.o
# insn OP, DST, SRC, OFF, IMM  emits one 8-byte slot (little-endian):
#   byte0 = opcode, byte1 = (src << 4) | dst, bytes2-3 = off (s16), bytes4-7 = imm (s32)
	.macro insn op, dst, src, off, imm
	.byte \op
	.byte ((\src) << 4) | (\dst)
	.short \off
	.int \imm
	.endm

	.section "raw","ax"
	.globl	raw_forms
raw_forms:
# --- ld_imm64 (0x18) with every src_reg pseudo value 0..6 ---
	insn 0x18, 1, 0, 0, 0x11223344
	insn 0x00, 0, 0, 0, 0x55667788
	insn 0x18, 1, 1, 0, 7                 # BPF_PSEUDO_MAP_FD, imm = fd 7
	insn 0x00, 0, 0, 0, 0
	insn 0x18, 1, 2, 0, 7                 # BPF_PSEUDO_MAP_VALUE, fd 7, off 16 in 2nd imm
	insn 0x00, 0, 0, 0, 16
	insn 0x18, 1, 3, 0, 42                # BPF_PSEUDO_BTF_ID
	insn 0x00, 0, 0, 0, 0
	insn 0x18, 1, 4, 0, 3                 # BPF_PSEUDO_FUNC (imm = insn delta)
	insn 0x00, 0, 0, 0, 0
	insn 0x18, 1, 5, 0, 2                 # BPF_PSEUDO_MAP_IDX
	insn 0x00, 0, 0, 0, 0
	insn 0x18, 1, 6, 0, 2                 # BPF_PSEUDO_MAP_IDX_VALUE
	insn 0x00, 0, 0, 0, 8
	insn 0x18, 1, 0, 5, 1                 # ld_imm64 with nonzero off field
	insn 0x00, 0, 0, 0, 0
	insn 0x18, 1, 0, 0, 1                 # ld_imm64 whose 2nd slot has garbage opcode/regs
	insn 0xff, 3, 4, 0x1234, 0
# --- call (0x85) with src_reg = 0 (helper), 1 (local, pc-rel), 2 (kfunc) ---
	insn 0x85, 0, 0, 0, 12                # helper 12
	insn 0x85, 0, 1, 0, -3                # BPF_PSEUDO_CALL, imm = -3
	insn 0x85, 0, 1, 0, 4                 # BPF_PSEUDO_CALL, imm = +4
	insn 0x85, 0, 2, 0, 12345             # BPF_PSEUDO_KFUNC_CALL, btf id 12345
	insn 0x85, 0, 2, 3, 12345             # kfunc with module btf fd index off=3
	insn 0x85, 0, 0, 0, -1                # helper with imm -1 (unresolved reloc style)
	insn 0x85, 0, 3, 0, 1                 # call with bogus src 3
	insn 0x85, 5, 0, 0, 1                 # call with nonzero dst
# --- callx (0x8d): register in dst (LLVM) vs imm (kernel doc) ---
	insn 0x8d, 3, 0, 0, 0
	insn 0x8d, 0, 0, 0, 3
	insn 0x8d, 0, 4, 0, 0
# --- sign-extending moves (0xbf / 0xbc with off=8/16/32), odd offsets ---
	insn 0xbf, 1, 2, 8, 0
	insn 0xbf, 1, 2, 16, 0
	insn 0xbf, 1, 2, 32, 0
	insn 0xbc, 1, 2, 8, 0
	insn 0xbc, 1, 2, 16, 0
	insn 0xbc, 1, 2, 32, 0                # w = (s32)w : not defined
	insn 0xbf, 1, 2, 1, 0x00010000        # addr_space_cast(r2, 1, 0)
	insn 0xbf, 1, 2, 1, 0x00050003        # addr_space_cast(r2, 5, 3)
	insn 0xbf, 1, 2, 2, 0                 # mov64 reg with off=2 : undefined
	insn 0xbf, 1, 2, 0, 7                 # mov64 reg with nonzero imm
	insn 0xb7, 1, 0, 8, 5                 # mov64 imm with off=8
	insn 0xb7, 1, 3, 0, 5                 # mov64 imm with nonzero src
# --- sdiv/smod offsets ---
	insn 0x3f, 1, 2, 1, 0                 # r1 s/= r2
	insn 0x3f, 1, 2, 2, 0                 # div with off=2 : undefined
	insn 0x9c, 1, 2, 1, 0                 # w1 s%= w2
	insn 0x37, 1, 0, 1, 0                 # r1 s/= 0
# --- neg with BPF_X (0x8f/0x8c) and neg with imm ---
	insn 0x87, 1, 0, 0, 0
	insn 0x87, 1, 0, 0, 5                 # neg with nonzero imm
	insn 0x8f, 1, 2, 0, 0                 # neg64 X : undefined?
	insn 0x8c, 1, 2, 0, 0                 # neg32 X
# --- byte swaps: valid widths, invalid widths, BPF_X variant of ALU64 ---
	insn 0xd4, 1, 0, 0, 16
	insn 0xdc, 1, 0, 0, 64
	insn 0xd7, 1, 0, 0, 32
	insn 0xd4, 1, 0, 0, 8                 # le8 : invalid width
	insn 0xdc, 1, 0, 0, 0                 # be0 : invalid width
	insn 0xdf, 1, 0, 0, 16                # ALU64|END|X : undefined
# --- jumps: JA variants, JMP32|JA with off, JCOND ---
	insn 0x05, 0, 0, 3, 0                 # goto +3
	insn 0x05, 0, 0, 0, 7                 # ja with imm set (ignored?)
	insn 0x0d, 0, 0, 1, 0                 # JA|X : undefined
	insn 0x06, 0, 0, 0, 0x10000           # gotol +65536
	insn 0x06, 0, 0, 0, -0x10000          # gotol -65536
	insn 0x06, 0, 0, 2, 0                 # gotol with off set instead of imm
	insn 0xe5, 0, 0, 5, 0                 # may_goto +5
	insn 0xe5, 0, 0, 0, 0                 # may_goto +0
	insn 0xe5, 0, 0, -2, 0                # may_goto -2
	insn 0xe5, 0, 1, 1, 0                 # jcond with src=1 : undefined
	insn 0x15, 1, 0, -32768, 0            # if r1 == 0 goto -32768
	insn 0x15, 1, 0, 32767, -2147483648   # if r1 == INT_MIN goto +32767
	insn 0x1d, 1, 2, 0, 99                # reg jump with nonzero imm
	insn 0xe6, 1, 0, 1, 0                 # JMP32|JCOND : undefined
	insn 0x8e, 0, 0, 0, 0                 # JMP32 call|X
	insn 0x96, 0, 0, 0, 0                 # JMP32 exit
# --- exit with junk fields ---
	insn 0x95, 0, 0, 0, 0
	insn 0x95, 1, 2, 3, 4
# --- loads/stores: sign extension on 64-bit, BPF_X ST, odd modes ---
	insn 0x99, 1, 2, 0, 0                 # ldx s64 (MEMSX|DW) : undefined
	insn 0x79, 1, 2, -1, 0                # r1 = *(u64 *)(r2 - 1)
	insn 0x61, 1, 2, 4, 0                 # u32 load (prints w or r?)
	insn 0x63, 1, 2, 4, 0                 # u32 store
	insn 0x62, 1, 0, 4, 0x12345678        # st imm32
	insn 0x7a, 1, 0, 0, -1                # st imm64
	insn 0x38, 0, 0, 0, 12                # ld_abs dw : undefined
	insn 0x58, 0, 1, 0, 0                 # ld_ind dw : undefined
	insn 0x20, 0, 0, 0, -4                # ld_abs negative
	insn 0x40, 0, 1, 0, 8                 # ld_ind with imm 8: prints?
	insn 0x60, 1, 0, 0, 0                 # LD|MEM (class LD, mode MEM) : undefined
	insn 0xa1, 1, 2, 0, 0                 # LDX|MEM 0xa0 mode (undefined mode)
	insn 0xe1, 1, 2, 0, 0                 # LDX mode 0xe0 (BPF_PROBE...) 
# --- atomics: valid + invalid imm, 8/16-bit RMW ---
	insn 0xc3, 1, 2, 0, 0x00
	insn 0xdb, 1, 2, 0, 0xf1
	insn 0xc3, 1, 2, 0, 0x02              # invalid atomic op
	insn 0xd3, 1, 2, 0, 0x00              # 8-bit atomic add : undefined
	insn 0xcb, 1, 2, 0, 0x01              # 16-bit atomic fetch_add : undefined
	insn 0xd3, 1, 2, 0, 0x100             # load_acquire u8
	insn 0xd3, 1, 2, 0, 0x110             # store_release u8
# --- atomic imm decoding leniency ---
	insn 0xc3, 1, 2, 0, 0x08              # imm 0x08 (bits 1-3 set)
	insn 0xdb, 1, 2, 0, 0x42              # imm 0x42 (OR | 0x2)
	insn 0xdb, 1, 2, 0, 0x10              # imm 0x10 (undefined op nibble)
	insn 0xdb, 1, 2, 0, 0x101             # imm 0x101
	insn 0xdb, 1, 2, 0, 0x111             # imm 0x111
	insn 0xdb, 1, 2, 0, 0x200             # imm 0x200
	insn 0xdb, 1, 2, 0, 0xe0              # xchg without FETCH bit
# --- ignored / checked fields on ordinary forms ---
	insn 0x07, 1, 2, 0, 5                 # add imm with nonzero src
	insn 0x07, 1, 0, 3, 5                 # add imm with nonzero off
	insn 0x0f, 1, 2, 3, 0                 # add reg with nonzero off
	insn 0x15, 1, 2, 1, 5                 # jeq imm with nonzero src
	insn 0x61, 1, 2, 0, 9                 # ldx with nonzero imm
	insn 0x63, 1, 2, 0, 9                 # stx with nonzero imm
	insn 0x62, 1, 3, 0, 9                 # st with nonzero src
	insn 0x95, 0, 0, 0, 1                 # exit with imm 1
	insn 0x0f, 1, 2, 0, 7                 # add reg with nonzero imm
	insn 0x1c, 1, 2, 0, 7                 # sub32 reg with nonzero imm
	insn 0x87, 1, 2, 0, 0                 # neg with nonzero src
	insn 0xd4, 1, 2, 0, 16                # le16 with nonzero src
	insn 0x71, 1, 2, 0, 7                 # ldx u8 with nonzero imm
	insn 0x05, 1, 2, 1, 0                 # ja with nonzero dst/src
	insn 0x06, 1, 2, 0, 1                 # gotol with nonzero dst/src
	insn 0x30, 1, 2, 0, 1                 # ld_abs with nonzero dst/src
# --- other opcodes that are entirely undefined ---
	insn 0x00, 0, 0, 0, 0
	insn 0xff, 0, 0, 0, 0
	insn 0xd5, 0, 0, 0, 0                 # if r0 s<= 0 goto +0 (valid, control)
	insn 0xf5, 0, 0, 0, 0
	insn 0xf7, 0, 0, 0, 0                 # ALU64 op 0xf0 : undefined
	insn 0xe7, 0, 0, 0, 0                 # ALU64 op 0xe0 : undefined
	insn 0xd6, 1, 0, 1, 0                 # JMP32 jsle (valid)
	insn 0x95, 0, 0, 0, 0                 # exit

# --- a section that ends in the middle of an ld_imm64 (first slot only) ---
	.section "raw_trunc","ax"
raw_trunc_start:
	insn 0x95, 0, 0, 0, 0                 # exit
	insn 0x18, 1, 0, 0, 1                 # ld_imm64 first slot, no second slot
