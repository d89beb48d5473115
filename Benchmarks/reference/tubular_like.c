// The benchmark reference: a C SK_LOOKUP dispatcher that does what Cloudflare's tubular does
// (written for this project from the published description, not copied): an LPM trie keyed by
// protocol, port and IPv4-mapped address; a second lookup with port 0 for all-ports bindings,
// where the longer stored prefix wins and a tie goes to the specific port; per-destination
// counters; a SOCKMAP lookup; bpf_sk_assign; bpf_sk_release.
//
// Built at bench time by `sksteer bench` with the toolchain's clang -O2 -target bpf -g and
// loaded with bpftool. No libbpf headers are needed.
#include <linux/bpf.h>
#include <linux/types.h>
#include <stddef.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_sk_release)(void *sk) = (void *)86;
static long (*bpf_sk_assign)(void *ctx, void *sk, __u64 flags) = (void *)124;

struct addr {
    __u32 prefixlen;
    __u8 protocol;
    __u16 port;
    __u8 addr[16];
} __attribute__((packed));

struct binding {
    __u32 id;
    __u32 prefixlen;
};

struct metrics {
    __u64 lookups;
    __u64 misses;
    __u64 errors;
};

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __type(key, struct addr);
    __type(value, struct binding);
    __uint(max_entries, 2 << 20);
    __uint(map_flags, BPF_F_NO_PREALLOC);
} bindings SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_SOCKMAP);
    __type(key, __u32);
    __type(value, __u64);
    __uint(max_entries, 1024);
} sockets SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, struct metrics);
    __uint(max_entries, 1024);
} destination_metrics SEC(".maps");

SEC("sk_lookup")
int dispatcher(struct bpf_sk_lookup *ctx) {
    struct addr key = {
        .prefixlen = 8 + 16 + 128,
        .protocol = (__u8)ctx->protocol,
        .port = (__u16)ctx->local_port,
    };
    // Read both address fields unconditionally (volatile, so clang -O2 cannot sink them into
    // the branches and merge them into one computed context offset, which the verifier refuses).
    volatile __u32 *c = (volatile __u32 *)ctx;
    __u32 ip4 = c[offsetof(struct bpf_sk_lookup, local_ip4) / 4];
    __u32 ip6[4];
    for (int i = 0; i < 4; i++) ip6[i] = c[offsetof(struct bpf_sk_lookup, local_ip6) / 4 + i];
    if (ctx->family == 2 /* AF_INET */) {
        __u32 mapped[4] = {0, 0, __builtin_bswap32(0xffff), ip4};
        __builtin_memcpy(key.addr, mapped, 16);
    } else {
        __builtin_memcpy(key.addr, ip6, 16);
    }
    struct binding *specific = bpf_map_lookup_elem(&bindings, &key);
    key.port = 0;
    struct binding *wildcard = bpf_map_lookup_elem(&bindings, &key);
    struct binding *chosen = specific;
    if (!specific || (wildcard && wildcard->prefixlen > specific->prefixlen)) chosen = wildcard;
    if (!chosen) return SK_PASS;

    __u32 id = chosen->id;
    struct metrics *metrics = bpf_map_lookup_elem(&destination_metrics, &id);
    if (!metrics) return SK_DROP;
    metrics->lookups++;

    struct bpf_sock *sk = bpf_map_lookup_elem(&sockets, &id);
    if (!sk) {
        metrics->misses++;
        return SK_DROP;
    }
    long err = bpf_sk_assign(ctx, sk, 0);
    bpf_sk_release(sk);
    if (err) {
        metrics->errors++;
        return SK_DROP;
    }
    return SK_PASS;
}

SEC("sk_lookup")
int pass_only(struct bpf_sk_lookup *ctx) { return SK_PASS; }

char _license[] SEC("license") = "GPL";
