/* ALU32/ALU64 with immediate and register operands; byte swaps.
 * Compiles for v1..v4 (v3+ selects ALU32 `w` forms for 32-bit math,
 * v4 selects bswap instead of be16/32/64 for __builtin_bswap*). */
#include "common.h"

SEC("xdp")
int alu64(struct xdp_md *ctx)
{
	volatile __u64 *p = (volatile __u64 *)(long)ctx->data;
	__u64 a = p[0], b = p[1];
	__s64 sa = (__s64)p[2];

	/* register operands */
	p[3] = a + b;
	p[4] = a - b;
	p[5] = a * b;
	p[6] = a / b;
	p[7] = a % b;
	p[8] = a | b;
	p[9] = a & b;
	p[10] = a << b;
	p[11] = a >> b;
	p[12] = (__u64)(sa >> b);
	p[13] = a ^ b;
	p[14] = -a;
	/* immediate operands */
	p[15] = a + 1000;
	p[16] = a - 0x7fffffff;
	p[17] = a * 7;
	p[18] = a / 10;
	p[19] = a % 13;
	p[20] = a | 0x80;
	p[21] = a & 0xfff0;
	p[22] = a << 7;
	p[23] = a >> 9;
	p[24] = (__u64)(sa >> 11);
	p[25] = a ^ 0x5a5a;
	p[26] = 0x123456789abcdef0ULL; /* ld_imm64 */
	p[27] = -2;                    /* mov imm, negative */
	return 2;
}

SEC("xdp")
int alu32(struct xdp_md *ctx)
{
	volatile __u32 *p = (volatile __u32 *)(long)ctx->data;
	__u32 a = p[0], b = p[1];
	__s32 sa = (__s32)p[2];

	p[3] = a + b;
	p[4] = a - b;
	p[5] = a * b;
	p[6] = a / b;
	p[7] = a % b;
	p[8] = a | b;
	p[9] = a & b;
	p[10] = a << b;
	p[11] = a >> b;
	p[12] = (__u32)(sa >> b);
	p[13] = a ^ b;
	p[14] = -a;
	p[15] = a + 1000;
	p[16] = a - 77;
	p[17] = a * 7;
	p[18] = a / 10;
	p[19] = a % 13;
	p[20] = a | 0x80;
	p[21] = a & 0xfff0;
	p[22] = a << 7;
	p[23] = a >> 9;
	p[24] = (__u32)(sa >> 11);
	p[25] = a ^ 0x5a5a;
	p[26] = 0xdeadbeef;
	return 2;
}

SEC("tc/ingress")
int swaps(struct __sk_buff *skb)
{
	volatile __u64 *p = (volatile __u64 *)(long)skb->data;
	__u64 v = p[0];
	p[1] = __builtin_bswap16((__u16)v);
	p[2] = __builtin_bswap32((__u32)v);
	p[3] = __builtin_bswap64(v);
	/* htons/htonl patterns on a little-endian target */
	__u16 port = (__u16)p[4];
	__u32 addr = (__u32)p[5];
	p[6] = (__u16)((port >> 8) | (port << 8));
	p[7] = ((addr & 0xff) << 24) | ((addr & 0xff00) << 8) |
	       ((addr >> 8) & 0xff00) | (addr >> 24);
	return 0;
}

char _license[] SEC("license") = "GPL";
