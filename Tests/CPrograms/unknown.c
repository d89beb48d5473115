// A program in a section no loader knows.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("made_up/section")
int mystery(void *ctx) { return 0; }

char _license[] SEC("license") = "GPL";
