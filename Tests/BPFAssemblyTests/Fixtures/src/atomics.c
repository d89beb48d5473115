/* 32- and 64-bit atomics: add/or/and/xor with and without fetch, xchg,
 * cmpxchg. Fetching atomics need -mcpu=v3 (clang rejects them on v1/v2),
 * so this file is built for v3 and v4 only. */
#include "common.h"

SEC("tracepoint/syscalls/sys_enter_openat")
int atomics(void *ctx)
{
	volatile __u64 *p = *(__u64 **)ctx;
	__u64 *q = (__u64 *)p;
	__u32 *w = (__u32 *)(p + 8);
	__u64 r = 0;

	/* relaxed, results unused -> non-fetching `lock` forms
	 * (clang >= 20 emits fetch forms for __sync_* even when unused on v3+) */
	__atomic_fetch_add(q + 0, 1, __ATOMIC_RELAXED);
	__atomic_fetch_or(q + 1, r + 2, __ATOMIC_RELAXED);
	__atomic_fetch_and(q + 2, p[20], __ATOMIC_RELAXED);
	__atomic_fetch_xor(q + 3, p[21], __ATOMIC_RELAXED);
	__atomic_fetch_add(w + 0, 1, __ATOMIC_RELAXED);
	__atomic_fetch_or(w + 1, (__u32)p[22], __ATOMIC_RELAXED);
	__atomic_fetch_and(w + 2, (__u32)p[23], __ATOMIC_RELAXED);
	__atomic_fetch_xor(w + 3, (__u32)p[24], __ATOMIC_RELAXED);

	/* results used -> fetch forms */
	r += __sync_fetch_and_add(q + 4, 5);
	r += __sync_fetch_and_or(q + 5, 6);
	r += __sync_fetch_and_and(q + 6, 7);
	r += __sync_fetch_and_xor(q + 7, 8);
	r += __sync_fetch_and_add(w + 4, 5);
	r += __sync_fetch_and_or(w + 5, 6);
	r += __sync_fetch_and_and(w + 6, 7);
	r += __sync_fetch_and_xor(w + 7, 8);

	r += __sync_lock_test_and_set(q + 9, r);
	r += __atomic_exchange_n(w + 10, (__u32)r, __ATOMIC_SEQ_CST);
	r += __sync_val_compare_and_swap(q + 11, r, 42);
	r += __sync_val_compare_and_swap(w + 12, (__u32)r, 43);
	return (int)r;
}

char _license[] SEC("license") = "GPL";
