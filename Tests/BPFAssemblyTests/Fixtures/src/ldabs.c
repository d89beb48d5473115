/* Legacy packet access: LD_ABS / LD_IND via the clang builtins. The
 * builtins take the skb pointer and a byte offset; a constant offset gives
 * LD_ABS, a variable one LD_IND. Compiles for v1..v4. */
#include "common.h"

unsigned long long load_byte(void *skb, unsigned long long off) asm("llvm.bpf.load.byte");
unsigned long long load_half(void *skb, unsigned long long off) asm("llvm.bpf.load.half");
unsigned long long load_word(void *skb, unsigned long long off) asm("llvm.bpf.load.word");

SEC("socket")
int ldabs(struct __sk_buff *skb)
{
	__u64 proto = load_half(skb, 12);
	__u64 ihl = load_byte(skb, 14) & 0xf;
	__u64 daddr = load_word(skb, 30);
	__u64 off = 14 + ihl * 4;
	__u64 sport = load_half(skb, off);
	__u64 b = load_byte(skb, off + 13);
	__u64 w = load_word(skb, off + 4);
	return (int)(proto + daddr + sport + b + w);
}

char _license[] SEC("license") = "GPL";
