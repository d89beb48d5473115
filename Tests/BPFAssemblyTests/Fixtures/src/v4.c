/* Forms that need -mcpu=v4: signed div/mod (sdiv/smod), sign-extending
 * moves (movsx) and loads (ldsx), bswap. v4 only: clang rejects signed
 * division for v1..v3. */
#include "common.h"

SEC("xdp")
int v4ops(struct xdp_md *ctx)
{
	volatile __s64 *p = (volatile __s64 *)(long)ctx->data;
	volatile __s32 *q = (volatile __s32 *)(p + 32);
	volatile __s8 *b = (volatile __s8 *)(p + 64);
	volatile __s16 *h = (volatile __s16 *)(p + 64);
	__s64 a = p[0], c = p[1];
	__s32 x = q[0], y = q[1];

	p[2] = a / c;        /* r s/= r */
	p[3] = a % c;        /* r s%= r */
	p[4] = a / -7;       /* r s/= imm */
	p[5] = a % 9;        /* r s%= imm */
	q[6] = x / y;        /* w s/= w */
	q[7] = x % y;        /* w s%= w */
	q[8] = x / 3;
	q[9] = x % -5;
	p[10] = (__s8)a;     /* r = (s8)r */
	p[11] = (__s16)a;    /* r = (s16)r */
	p[12] = (__s32)a;    /* r = (s32)r */
	q[13] = (__s8)x;     /* w = (s8)w */
	q[14] = (__s16)x;    /* w = (s16)w */
	p[15] = b[3];        /* r = *(s8 *) */
	p[16] = h[5];        /* r = *(s16 *) */
	p[17] = q[20];       /* r = *(s32 *) */
	p[18] = __builtin_bswap16((__u16)a);
	p[19] = __builtin_bswap32((__u32)a);
	p[20] = __builtin_bswap64((__u64)a);
	return 2;
}

char _license[] SEC("license") = "GPL";
