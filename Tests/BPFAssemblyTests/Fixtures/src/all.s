# all.s -- hand-written LLVM BPF assembly covering every instruction form.
# Assemble: clang -target bpf -mcpu=v4 -c all.s -o all.o
# Syntax is the one llvm-objdump prints (LLVM BPF "pseudo-C" asm).
# Each line is one instruction; comments use '#'.

	.section "all","ax"
	.globl	all_forms
	.type	all_forms,@function
all_forms:
# ---------------- ALU64, immediate source (BPF_ALU64|op|BPF_K) ----------------
	r0 = 0
	r1 = 1
	r2 = -1
	r3 = 2147483647
	r4 = -2147483648
	r1 += 5
	r1 += -5
	r1 -= 7
	r1 *= 3
	r1 /= 10
	r1 s/= -3
	r1 %= 9
	r1 s%= -7
	r1 |= 0x100
	r1 &= 0xff
	r1 <<= 3
	r1 >>= 2
	r1 s>>= 63
	r1 ^= -1
	r1 = -r1
# ---------------- ALU64, register source (BPF_ALU64|op|BPF_X) ----------------
	r1 = r2
	r1 += r2
	r1 -= r3
	r1 *= r4
	r1 /= r5
	r1 s/= r4
	r1 %= r6
	r1 s%= r7
	r1 |= r8
	r1 &= r9
	r1 <<= r2
	r1 >>= r3
	r1 s>>= r4
	r1 ^= r5
	r10 = r10
# ---------------- sign-extending moves (movsx, off=8/16/32) ----------------
	r1 = (s8)r2
	r2 = (s16)r3
	r3 = (s32)r4
	w1 = (s8)w2
	w2 = (s16)w3
# ---------------- address space cast (mov64 reg, off=1) ----------------
	r1 = addr_space_cast(r2, 0, 1)
	r3 = addr_space_cast(r4, 1, 0)
# ---------------- ALU32, immediate source (BPF_ALU|op|BPF_K) ----------------
	w0 = 0
	w1 = 1
	w2 = -1
	w3 = 2147483647
	w4 = -2147483648
	w1 += 5
	w1 += -5
	w1 -= 7
	w1 *= 3
	w1 /= 10
	w1 s/= -3
	w1 %= 9
	w1 s%= -7
	w1 |= 0x100
	w1 &= 0xff
	w1 <<= 3
	w1 >>= 2
	w1 s>>= 31
	w1 ^= -1
	w1 = -w1
# ---------------- ALU32, register source (BPF_ALU|op|BPF_X) ----------------
	w1 = w2
	w1 += w2
	w1 -= w3
	w1 *= w4
	w1 /= w5
	w1 s/= w4
	w1 %= w6
	w1 s%= w7
	w1 |= w8
	w1 &= w9
	w1 <<= w2
	w1 >>= w3
	w1 s>>= w4
	w1 ^= w5
# ---------------- byte swaps ----------------
	r1 = le16 r1
	r2 = le32 r2
	r3 = le64 r3
	r1 = be16 r1
	r2 = be32 r2
	r3 = be64 r3
	r1 = bswap16 r1
	r2 = bswap32 r2
	r3 = bswap64 r3
# ---------------- JMP class, immediate source ----------------
	goto +0
	goto -1
	if r1 == 0 goto +1
	if r1 > 1 goto +2
	if r1 >= 2 goto +3
	if r1 & 4 goto +4
	if r1 != -1 goto +5
	if r1 s> -2 goto +6
	if r1 s>= 3 goto +7
	if r1 < 4 goto +8
	if r1 <= 5 goto +9
	if r1 s< -6 goto +10
	if r1 s<= 7 goto -11
# ---------------- JMP class, register source ----------------
	if r1 == r2 goto +1
	if r1 > r2 goto +2
	if r1 >= r2 goto +3
	if r1 & r2 goto +4
	if r1 != r2 goto +5
	if r1 s> r2 goto +6
	if r1 s>= r2 goto +7
	if r1 < r2 goto +8
	if r1 <= r2 goto +9
	if r1 s< r2 goto +10
	if r1 s<= r2 goto -12
# ---------------- JMP32 class, immediate source ----------------
	if w1 == 8080 goto +1
	if w1 > 1 goto +2
	if w1 >= 2 goto +3
	if w1 & 4 goto +4
	if w1 != -1 goto +5
	if w1 s> -2 goto +6
	if w1 s>= 3 goto +7
	if w1 < 4 goto +8
	if w1 <= 5 goto +9
	if w1 s< -6 goto +10
	if w1 s<= 7 goto -13
# ---------------- JMP32 class, register source ----------------
	if w1 == w2 goto +1
	if w1 > w2 goto +2
	if w1 >= w2 goto +3
	if w1 & w2 goto +4
	if w1 != w2 goto +5
	if w1 s> w2 goto +6
	if w1 s>= w2 goto +7
	if w1 < w2 goto +8
	if w1 <= w2 goto +9
	if w1 s< w2 goto +10
	if w1 s<= w2 goto -14
# ---------------- long jump (JMP32|JA, imm offset), may_goto (JCOND) ----------------
	gotol +5
	gotol -6
	gotol -32768
	may_goto +3
# ---------------- labels as jump targets ----------------
.Lback:
	if r1 == 0 goto .Lfwd
	if w2 s< w3 goto .Lback
	goto .Lback
.Lfwd:
# ---------------- calls ----------------
	call 1
	call 124
	call local_fn
	callx r2
# ---------------- LDX (memory loads), all sizes ----------------
	r1 = *(u8 *)(r2 + 0)
	r1 = *(u16 *)(r2 + 2)
	w1 = *(u32 *)(r2 + 60)
	r1 = *(u64 *)(r10 - 8)
	r1 = *(u64 *)(r10 - 32768)
	r1 = *(u8 *)(r2 + 32767)
# ---------------- LDX sign-extending (MEMSX) ----------------
	r3 = *(s8 *)(r10 - 1)
	r3 = *(s16 *)(r10 - 2)
	r3 = *(s32 *)(r10 - 4)
# ---------------- STX (register stores), all sizes ----------------
	*(u8 *)(r10 - 1) = w1
	*(u16 *)(r10 - 2) = w1
	*(u32 *)(r10 - 4) = w1
	*(u64 *)(r10 - 8) = r1
	*(u64 *)(r1 + 32767) = r2
# ---------------- ST (immediate stores), all sizes ----------------
	*(u8 *)(r10 - 1) = 255
	*(u16 *)(r10 - 2) = 65535
	*(u32 *)(r10 - 4) = -1
	*(u64 *)(r10 - 8) = -2147483648
	*(u32 *)(r1 + 16) = 2147483647
# ---------------- atomics, 32-bit ----------------
	lock *(u32 *)(r1 + 0) += w2
	lock *(u32 *)(r1 + 4) |= w2
	lock *(u32 *)(r1 + 8) &= w2
	lock *(u32 *)(r1 - 4) ^= w2
	w2 = atomic_fetch_add((u32 *)(r1 + 0), w2)
	w2 = atomic_fetch_or((u32 *)(r1 + 0), w2)
	w2 = atomic_fetch_and((u32 *)(r1 + 0), w2)
	w2 = atomic_fetch_xor((u32 *)(r1 + 0), w2)
	w2 = xchg32_32(r1 + 0, w2)
	w0 = cmpxchg32_32(r1 + 0, w0, w2)
# ---------------- atomics, 64-bit ----------------
	lock *(u64 *)(r1 + 0) += r2
	lock *(u64 *)(r1 + 8) |= r2
	lock *(u64 *)(r1 + 16) &= r2
	lock *(u64 *)(r1 - 8) ^= r2
	r2 = atomic_fetch_add((u64 *)(r1 + 0), r2)
	r2 = atomic_fetch_or((u64 *)(r1 + 0), r2)
	r2 = atomic_fetch_and((u64 *)(r1 + 0), r2)
	r2 = atomic_fetch_xor((u64 *)(r1 + 0), r2)
	r2 = xchg_64(r1 + 0, r2)
	r0 = cmpxchg_64(r1 + 0, r0, r2)
# ---------------- load-acquire / store-release (atomic imm 0x100 / 0x110) ----------------
	w0 = load_acquire((u8 *)(r1 + 0))
	w0 = load_acquire((u16 *)(r1 + 0))
	w0 = load_acquire((u32 *)(r1 + 0))
	r0 = load_acquire((u64 *)(r1 + 0))
	store_release((u8 *)(r1 + 0), w2)
	store_release((u16 *)(r1 + 0), w2)
	store_release((u32 *)(r1 + 0), w2)
	store_release((u64 *)(r1 + 0), r2)
# ---------------- 64-bit immediate load (LD|IMM|DW, two slots) ----------------
	r1 = 0 ll
	r1 = 1 ll
	r2 = -1 ll
	r3 = 0x123456789abcdef0 ll
	r4 = 0xffffffff ll
	r5 = 0x100000000 ll
	r1 = some_map ll
# ld_imm64 with src_reg != 0 (pseudo loads: 1=map_fd 2=map_value 3=btf_id 4=func 5=map_idx 6=map_idx_value)
	ld_pseudo r1, 1, 7
	ld_pseudo r2, 2, 7
	ld_pseudo r3, 3, 42
	ld_pseudo r4, 4, 3
	ld_pseudo r5, 5, 2
	ld_pseudo r6, 6, 2
# ---------------- legacy packet access (LD_ABS / LD_IND) ----------------
	r0 = *(u8 *)skb[12]
	r0 = *(u16 *)skb[12]
	r0 = *(u32 *)skb[12]
	r0 = *(u8 *)skb[r1]
	r0 = *(u16 *)skb[r1]
	r0 = *(u32 *)skb[r1]
	exit

# a local (BPF-to-BPF) callee in the same section
local_fn:
	r0 = r1
	exit
	.size	all_forms, .-all_forms
