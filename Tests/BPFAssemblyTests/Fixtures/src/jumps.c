/* Conditional jumps, signed and unsigned, 64-bit and 32-bit operands
 * (JMP32 forms appear with -mcpu=v3/v4). Compiles for v1..v4. */
#include "common.h"

static __attribute__((noinline)) int cmp64(__u64 a, __u64 b, __s64 sa, __s64 sb)
{
	int r = 0;
	if (a == b) r += 1;
	if (a != 5) r += 2;
	if (a > b) r += 3;
	if (a >= 100) r += 4;
	if (a < b) r += 5;
	if (a <= 200) r += 6;
	if (sa > sb) r += 7;
	if (sa >= -3) r += 8;
	if (sa < sb) r += 9;
	if (sa <= -300) r += 10;
	if (a & 0x40) r += 11;
	if (a & b) r += 12;
	if (a == 17) r += 13;
	if (sa > 19) r += 14;
	return r;
}

static __attribute__((noinline)) int cmp32(__u32 a, __u32 b, __s32 sa, __s32 sb)
{
	int r = 0;
	if (a == b) r += 1;
	if (a != 5) r += 2;
	if (a > b) r += 3;
	if (a >= 100) r += 4;
	if (a < b) r += 5;
	if (a <= 200) r += 6;
	if (sa > sb) r += 7;
	if (sa >= -3) r += 8;
	if (sa < sb) r += 9;
	if (sa <= -300) r += 10;
	if (a & 0x40) r += 11;
	if (a & b) r += 12;
	if (a == 8080) r += 13;
	if (sa > 19) r += 14;
	return r;
}

SEC("socket")
int jumps(struct __sk_buff *skb)
{
	volatile __u64 *p = (volatile __u64 *)(long)skb->data;
	int r = cmp64(p[0], p[1], (__s64)p[2], (__s64)p[3]);
	r += cmp32((__u32)p[4], (__u32)p[5], (__s32)p[6], (__s32)p[7]);
	/* a loop gives a backward jump */
	for (int i = 0; i < (int)(p[8] & 7); i++)
		r += (int)p[9 + i];
	return r;
}

char _license[] SEC("license") = "GPL";
