// Global data and BPF-to-BPF calls: a `static const` key in .rodata, a port set from user
// space in .data, a counter in .bss read from user space, a static subprogram and a global
// one in .text.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_SOCKMAP);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} sockets SEC(".maps");

static const __u32 server_key = 1;  // .rodata: the verifier sees a constant
__u32 only_port SEC(".data") = 0;  // .data: 0 means every port
__u64 steered;                      // .bss

static __noinline int wanted(struct bpf_sk_lookup *ctx) {
    if (ctx->family != 2) return 0;
    return only_port == 0 || ctx->local_port == only_port;
}

__noinline int count_steered(__u64 n) {
    steered += n;
    return 0;
}

SEC("sk_lookup")
int steer(struct bpf_sk_lookup *ctx) {
    if (!wanted(ctx)) return SK_PASS;
    struct bpf_sock *sk = bpf_map_lookup_elem(&sockets, &server_key);
    if (!sk) return SK_PASS;
    long err = bpf_sk_assign(ctx, sk, 0);
    bpf_sk_release(sk);
    if (!err) count_steered(1);
    return SK_PASS;
}

char _license[] SEC("license") = "GPL";
