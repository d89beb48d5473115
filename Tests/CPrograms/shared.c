// Two objects built from this file (with -DSIDE=1 and -DSIDE=2) share `shared_counts`, pinned
// by name: each program counts its runs in its own slot.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u64);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} shared_counts SEC(".maps");

#define NAME2(a, b) a##b
#define NAME(a, b) NAME2(a, b)

SEC("sk_lookup")
int NAME(count_side, SIDE)(struct bpf_sk_lookup *ctx) {
    __u32 key = SIDE;
    __u64 *count = bpf_map_lookup_elem(&shared_counts, &key);
    if (count) __sync_fetch_and_add(count, 1);
    return SK_PASS;
}

char _license[] SEC("license") = "GPL";
