// The C shim: the only place that calls bpf(2) and the few syscalls Swift cannot reach
// directly (variadic or missing from Glibc). Every function returns its result, or -errno on
// failure, read immediately after the syscall so nothing can disturb errno in between.
// The kernel's `union bpf_attr` comes from the system's <linux/bpf.h>; no offsets are copied.
#pragma once
#include <stdint.h>
#include <stddef.h>
#include <linux/bpf.h>

#ifdef __cplusplus
extern "C" {
#endif

// Generic: any bpf(2) command with an attribute block filled by the caller.
long cbpf_sys_bpf(int cmd, void *attr, unsigned int size);

// Programs
long cbpf_prog_load(uint32_t prog_type, uint32_t expected_attach_type, const void *insns, uint32_t insn_cnt,
                    const char *license, const char *name, uint32_t prog_flags, char *log_buf, uint32_t log_size,
                    uint32_t log_level, const int32_t *fd_array);
// What a program from a compiled object adds: its BTF and function and line records, and the
// `version` section (kern_version).
struct cbpf_prog_btf {
    int btf_fd;
    const void *func_info;
    uint32_t func_info_rec_size;
    uint32_t func_info_cnt;
    const void *line_info;
    uint32_t line_info_rec_size;
    uint32_t line_info_cnt;
    uint32_t kern_version;
};
long cbpf_prog_load_btf(uint32_t prog_type, uint32_t expected_attach_type, const void *insns, uint32_t insn_cnt,
                        const char *license, const char *name, char *log_buf, uint32_t log_size, uint32_t log_level,
                        const struct cbpf_prog_btf *btf);
// BPF_BTF_LOAD of raw BTF bytes.
long cbpf_btf_load(const void *btf, uint32_t size, char *log_buf, uint32_t log_size, uint32_t log_level);
long cbpf_prog_test_run(int prog_fd, const void *ctx_in, uint32_t ctx_size_in, void *ctx_out, uint32_t *ctx_size_out,
                        const void *data_in, uint32_t data_size_in, void *data_out, uint32_t *data_size_out,
                        uint32_t repeat, uint32_t flags, uint32_t *retval, uint32_t *duration);
long cbpf_prog_query(int target_fd, uint32_t attach_type, uint32_t query_flags, uint32_t *attach_flags,
                     uint32_t *prog_ids, uint32_t *prog_cnt);

// Maps
long cbpf_map_create(uint32_t map_type, uint32_t key_size, uint32_t value_size, uint32_t max_entries,
                     uint32_t map_flags, const char *name, int inner_map_fd);
// The same, with the BTF of its key and value (btf_fd -1: none).
long cbpf_map_create_btf(uint32_t map_type, uint32_t key_size, uint32_t value_size, uint32_t max_entries,
                         uint32_t map_flags, const char *name, int inner_map_fd, int btf_fd, uint32_t btf_key_type_id,
                         uint32_t btf_value_type_id);
// BPF_MAP_FREEZE: no more writes from user space (a program's .rodata).
long cbpf_map_freeze(int fd);
long cbpf_map_lookup(int fd, const void *key, void *value, uint64_t flags);
long cbpf_map_update(int fd, const void *key, const void *value, uint64_t flags);
long cbpf_map_delete(int fd, const void *key);
long cbpf_map_next_key(int fd, const void *key, void *next_key);
long cbpf_map_batch(int cmd, int fd, void *in_batch, void *out_batch, void *keys, void *values, uint32_t *count,
                    uint64_t elem_flags, uint64_t flags);

// Objects, ids, pinning
long cbpf_obj_pin(int fd, const char *path);
long cbpf_obj_get(const char *path, uint32_t file_flags);
long cbpf_obj_info(int fd, void *info, uint32_t *info_len);
long cbpf_next_id(int cmd, uint32_t start_id, uint32_t *next_id);
long cbpf_fd_by_id(int cmd, uint32_t id, uint32_t open_flags);
long cbpf_enable_stats(uint32_t type);

// Links
long cbpf_link_create(int prog_fd, int target_fd, uint32_t attach_type, uint32_t flags);
long cbpf_link_update(int link_fd, int new_prog_fd, int old_prog_fd, uint32_t flags);
long cbpf_link_detach(int link_fd);
// Fills the fields of struct bpf_link_info that every link has, and the netns ones.
long cbpf_link_info(int link_fd, uint32_t *id, uint32_t *type, uint32_t *prog_id, uint32_t *netns_ino,
                    uint32_t *attach_type);

// Namespaces, mounts, processes
long cbpf_unshare_network(void);
long cbpf_enter_network(int fd);
long cbpf_mount_bpffs(const char *target, uint32_t mode);
long cbpf_umount(const char *target);
long cbpf_fs_magic(const char *path, uint64_t *magic);
long cbpf_pidfd_open(int pid);
long cbpf_pidfd_getfd(int pidfd, int targetfd);
long cbpf_gettid(void);

// Network interfaces and addresses (in the calling thread's network namespace)
long cbpf_interface_up(const char *name);
long cbpf_interface_index(const char *name);
long cbpf_address_add(int ifindex, int family, const uint8_t *address, uint8_t prefix_len);

// Sockets. Addresses are raw bytes in network order (4 or 16), ports in host order.
long cbpf_socket(int family, int type, int reuse_port, int v6only, int reuse_addr);
long cbpf_bind(int fd, int family, const uint8_t *address, uint16_t port);
long cbpf_listen(int fd, int backlog);
long cbpf_connect(int fd, int family, const uint8_t *address, uint16_t port);
long cbpf_accept(int fd);
long cbpf_local_address(int fd, int *family, uint8_t *address, uint16_t *port);
long cbpf_peer_address(int fd, int *family, uint8_t *address, uint16_t *port);
long cbpf_send_to(int fd, const void *buf, size_t len, int family, const uint8_t *address, uint16_t port);
long cbpf_receive_from(int fd, void *buf, size_t len, int *family, uint8_t *address, uint16_t *port);
/* recvmsg: the sender, and from IP_PKTINFO/IPV6_PKTINFO the address the datagram was sent to and its
   interface (dst_family 0 when absent), and from IP_ORIGDSTADDR/IPV6_ORIGDSTADDR the address and port
   (orig_family 0 when absent). */
long cbpf_receive_message(int fd, void *buf, size_t len, int *family, uint8_t *address, uint16_t *port,
                          int *dst_family, uint8_t *dst_address, int *ifindex, int *orig_family,
                          uint8_t *orig_address, uint16_t *orig_port);
/* sendmsg with an IP_PKTINFO/IPV6_PKTINFO control message: the datagram leaves from src_address. */
long cbpf_send_from(int fd, const void *buf, size_t len, int family, const uint8_t *address, uint16_t port,
                    int src_family, const uint8_t *src_address, int ifindex);
long cbpf_send(int fd, const void *buf, size_t len);
long cbpf_receive(int fd, void *buf, size_t len);
long cbpf_socket_cookie(int fd, uint64_t *cookie);
long cbpf_getsockopt_int(int fd, int level, int name, int *value);
long cbpf_setsockopt_int(int fd, int level, int name, int value);
long cbpf_set_timeouts(int fd, uint32_t milliseconds);
// SO_LINGER {1, 0}: close() resets the connection instead of leaving TIME_WAIT.
long cbpf_set_linger_zero(int fd);
long cbpf_close(int fd);
// Lists the sockets of one family and protocol in the calling thread's network namespace
// (NETLINK_SOCK_DIAG): fills cookies and inodes, returns how many (at most max).
long cbpf_sock_diag(int family, int protocol, uint64_t *cookies, uint64_t *inodes, uint32_t max);
long cbpf_errno_name(int err, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
