// The legacy `maps` section (struct bpf_map_def), as old samples define maps, and a
// `version` section.
#include <linux/bpf.h>

struct bpf_map_def {
    unsigned int type;
    unsigned int key_size;
    unsigned int value_size;
    unsigned int max_entries;
    unsigned int map_flags;
};

struct bpf_map_def __attribute__((section("maps"), used)) legacy_counts = {
    .type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 8, .max_entries = 2,
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

__attribute__((section("socket"), used)) int count_packets(struct __sk_buff *skb) {
    __u32 key = 0;
    __u64 *value = bpf_map_lookup_elem(&legacy_counts, &key);
    if (value) __sync_fetch_and_add(value, 1);
    return 0;
}

char _license[] __attribute__((section("license"), used)) = "GPL";
unsigned int _version __attribute__((section("version"), used)) = 0x060100;
