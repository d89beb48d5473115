// One program that needs every supported map type to reach its socket: an LPM trie from the
// destination address to an id, a hash from the id to a slot, an array of maps whose inner
// array holds the SOCKHASH key, a SOCKHASH of sockets, a plain array switch and a per-CPU
// counter. A connection lands only if every map works.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct prefix {
    __u32 prefixlen;
    __u32 address;
};

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 16);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct prefix);
    __type(value, __u32);
} prefixes SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16);
    __type(key, __u32);
    __type(value, __u32);
} slots SEC(".maps");

struct inner_keys {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u32);
} keys SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
    __uint(max_entries, 2);
    __type(key, __u32);
    __array(values, struct inner_keys);
} tables SEC(".maps") = {
    .values = {[1] = &keys},
};

struct {
    __uint(type, BPF_MAP_TYPE_SOCKHASH);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u64);
} sockets SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} enabled SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} lookups SEC(".maps");

SEC("sk_lookup")
int by_maps(struct bpf_sk_lookup *ctx) {
    __u32 zero = 0, one = 1;
    if (ctx->family != 2) return SK_PASS;
    __u64 *count = bpf_map_lookup_elem(&lookups, &zero);
    if (count) *count += 1;
    __u32 *on = bpf_map_lookup_elem(&enabled, &zero);
    if (!on || !*on) return SK_PASS;
    struct prefix key = {.prefixlen = 32, .address = ctx->local_ip4};
    __u32 *id = bpf_map_lookup_elem(&prefixes, &key);
    if (!id) return SK_PASS;
    __u32 *slot = bpf_map_lookup_elem(&slots, id);
    if (!slot) return SK_PASS;
    void *inner = bpf_map_lookup_elem(&tables, &one);
    if (!inner) return SK_PASS;
    __u32 *socket_key = bpf_map_lookup_elem(inner, slot);
    if (!socket_key) return SK_PASS;
    struct bpf_sock *sk = bpf_map_lookup_elem(&sockets, socket_key);
    if (!sk) return SK_PASS;
    bpf_sk_assign(ctx, sk, 0);
    bpf_sk_release(sk);
    return SK_PASS;
}

char _license[] SEC("license") = "GPL";
