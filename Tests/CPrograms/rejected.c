// Deliberately wrong: the map value is used without checking it for NULL, which the
// verifier refuses. The error must name this file and the line of the bad access.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} config SEC(".maps");

SEC("sk_lookup")
int unchecked(struct bpf_sk_lookup *ctx) {
    __u32 zero = 0;
    __u32 *value = bpf_map_lookup_elem(&config, &zero);
    return *value == ctx->local_port ? SK_DROP : SK_PASS; // BAD ACCESS
}

char _license[] SEC("license") = "GPL";
