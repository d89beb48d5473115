// A CO-RE relocation (preserve_access_index): parsed, but loading it says CO-RE is not supported.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct bpf_sk_lookup___local {
    __u32 local_port;
} __attribute__((preserve_access_index));

SEC("sk_lookup")
int relocated(struct bpf_sk_lookup *ctx) {
    struct bpf_sk_lookup___local *local = (void *)ctx;
    return local->local_port == 80 ? SK_DROP : SK_PASS;
}

char _license[] SEC("license") = "GPL";
