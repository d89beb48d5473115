// The guide's examples, in C as libbpf users write them. Compiled by the tests with
// clang -O2 -g -target bpf (see Tests/KernelTestSupport/CPrograms.swift).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
    __uint(type, BPF_MAP_TYPE_SOCKMAP);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} server SEC(".maps");

// Every port of 127.0.0.1 goes to the one server in `server`; other addresses take the
// normal lookup.
SEC("sk_lookup")
int every_port(struct bpf_sk_lookup *ctx) {
    const __u32 zero = 0;
    if (ctx->family != 2 || ctx->local_ip4 != bpf_htonl(0x7f000001)) return SK_PASS;
    struct bpf_sock *sk = bpf_map_lookup_elem(&server, &zero);
    if (!sk) return SK_PASS;
    bpf_sk_assign(ctx, sk, 0);
    bpf_sk_release(sk);
    return SK_PASS;
}

// Port 8080 takes the normal lookup; everything else is refused.
SEC("sk_lookup")
int port_filter(struct bpf_sk_lookup *ctx) {
    return ctx->local_port == 8080 ? SK_PASS : SK_DROP;
}

// TCP takes the normal lookup; UDP is dropped.
SEC("sk_lookup")
int tcp_only(struct bpf_sk_lookup *ctx) {
    return ctx->protocol == 6 /* IPPROTO_TCP */ ? SK_PASS : SK_DROP;
}

// Only 443 passes (the builder example: default action drop).
SEC("sk_lookup/custom_filter")
int custom_filter(struct bpf_sk_lookup *ctx) {
    if (ctx->local_port != 443) return SK_DROP;
    return SK_PASS;
}

char _license[] SEC("license") = "GPL";
