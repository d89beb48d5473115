/* Call forms: helper call (src=0), static BPF-to-BPF call (src=1, resolved
 * within the section or via R_BPF_64_32 to .text), global subprogram,
 * kfunc call (extern __ksym, src=2 with relocation), address of a
 * function (ld_imm64 + R_BPF_64_64 against .text), indirect call (callx).
 * Note: in the .o, kfunc calls are src=1 + relocation; libbpf rewrites
 * them to src=2 at load time.
 * Compiles for v1..v4. */
#include "common.h"

#define __ksym __attribute__((section(".ksyms")))
extern __u64 bpf_kfunc_example(__u64 a, __u64 b) __ksym;
extern int bpf_kfunc_other(void *p) __ksym;

static __attribute__((noinline)) __u64 sub1(__u64 a)
{
	return a * 3 + 1;
}

__attribute__((noinline)) __u64 global_sub(__u64 a, __u64 b)
{
	return sub1(a) ^ b;
}

typedef __u64 (*fn_t)(__u64);

SEC("tc")
int calls(struct __sk_buff *skb)
{
	volatile __u64 *p = (volatile __u64 *)(long)skb->data;
	__u64 x = p[0];
	x = sub1(x);
	x += global_sub(x, p[1]);
	x += bpf_kfunc_example(x, 7);
	x += bpf_kfunc_other((void *)p);
	x += bpf_get_prandom_u32();
	volatile fn_t f = sub1;          /* ld_imm64 of a function (R_BPF_64_64 .text) */
	x += f(x);                       /* callx rN */
	x += ((fn_t)p[2])(x);            /* callx rN on a loaded pointer */
	return (int)x;
}

char _license[] SEC("license") = "GPL";
