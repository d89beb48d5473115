/* Loads/stores of 1/2/4/8 bytes, ST immediate, helper calls, BPF-to-BPF
 * calls, maps (BTF-style in .maps and legacy in "maps"), ld_imm64 of a
 * map (relocation) and of a 64-bit constant, non-fetching 32/64-bit atomic
 * adds (the only atomics available on v1/v2). Compiles for v1..v4. */
#include "common.h"

struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

struct bpf_map_def SEC("maps") legacy_map = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = 4,
	.value_size = 8,
	.max_entries = 16,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct rec {
	__u8 b;
	__u16 h;
	__u32 w;
	__u64 d;
	__s8 sb;
	__s16 sh;
	__s32 sw;
};

static __attribute__((noinline)) __u64 mix(__u64 a, __u64 b)
{
	return (a * 31) ^ (b >> 3);
}

SEC("kprobe/sys_write")
int memops(void *ctx)
{
	__u32 key = bpf_get_prandom_u32() & 15;
	__u64 *v = bpf_map_lookup_elem(&legacy_map, &key);
	if (!v)
		return 0;
	struct rec r;
	r.b = 0xab;                 /* ST byte */
	r.h = 0x1234;               /* ST half */
	r.w = 0xdeadbeef;           /* ST word */
	r.d = 0x7fffffff;           /* ST dword */
	r.sb = -1;
	r.sh = -2;
	r.sw = -3;
	volatile struct rec *vr = &r;
	__u64 sum = vr->b + vr->h + vr->w + vr->d;
	__s64 ssum = vr->sb + vr->sh + vr->sw; /* sign-extending loads on v4 */
	*v = mix(sum, (__u64)ssum);
	__u64 *c = bpf_map_lookup_elem(&counters, &key);
	if (c)
		__sync_fetch_and_add(c, 1); /* v1/v2: lock *(u64 *) +=; v3+: atomic_fetch_add */
	else {
		__u64 one = 1;
		bpf_map_update_elem(&counters, &key, &one, 0);
	}
	return (int)(bpf_ktime_get_ns() + bpf_get_current_pid_tgid());
}

SEC("kprobe/sys_read")
int stores(void *ctx)
{
	__u32 key = 0;
	__u8 *p = bpf_map_lookup_elem(&legacy_map, &key);
	if (!p)
		return 0;
	__u64 x = bpf_get_prandom_u32();
	*(volatile __u8 *)(p + 0) = (__u8)x;     /* STX byte */
	*(volatile __u16 *)(p + 2) = (__u16)x;   /* STX half */
	*(volatile __u32 *)(p + 4) = (__u32)x;   /* STX word */
	*(volatile __u64 *)(p + 8) = x;          /* STX dword */
	*(volatile __u64 *)(p + 16) = 0x1122334455667788ULL; /* ld_imm64 + STX */
	*(volatile __s32 *)(p - 4) = -7;         /* ST with negative offset */
	__atomic_fetch_add((__u32 *)(p + 24), 1, __ATOMIC_RELAXED); /* lock *(u32 *) += (v1+) */
	__atomic_fetch_add((__u64 *)(p + 32), x, __ATOMIC_RELAXED); /* lock *(u64 *) += */
	return (int)mix(x, *(volatile __u64 *)(p + 8));
}

char _license[] SEC("license") = "GPL";
