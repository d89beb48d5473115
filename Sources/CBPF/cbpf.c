#define _GNU_SOURCE
#include "cbpf.h"

#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/vfs.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

#define RETURN(expr)                                                                                               \
    do {                                                                                                           \
        long _r = (long)(expr);                                                                                    \
        return _r < 0 ? -errno : _r;                                                                               \
    } while (0)

static inline uint64_t ptr(const void *p) { return (uint64_t)(uintptr_t)p; }

long cbpf_sys_bpf(int cmd, void *attr, unsigned int size) { RETURN(syscall(__NR_bpf, cmd, attr, size)); }

static long sys_bpf(int cmd, union bpf_attr *attr) { RETURN(syscall(__NR_bpf, cmd, attr, sizeof(*attr))); }

static long prog_load(uint32_t prog_type, uint32_t expected_attach_type, const void *insns, uint32_t insn_cnt,
                      const char *license, const char *name, uint32_t prog_flags, char *log_buf, uint32_t log_size,
                      uint32_t log_level, const int32_t *fd_array, const struct cbpf_prog_btf *btf) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_type = prog_type;
    attr.expected_attach_type = expected_attach_type;
    attr.insns = ptr(insns);
    attr.insn_cnt = insn_cnt;
    attr.license = ptr(license);
    attr.prog_flags = prog_flags;
    attr.log_buf = ptr(log_buf);
    attr.log_size = log_size;
    attr.log_level = log_level;
    attr.fd_array = ptr(fd_array);
    if (name) strncpy(attr.prog_name, name, sizeof(attr.prog_name) - 1);
    if (btf) {
        attr.kern_version = btf->kern_version;
        if (btf->btf_fd >= 0) {
            attr.prog_btf_fd = btf->btf_fd;
            attr.func_info = ptr(btf->func_info);
            attr.func_info_rec_size = btf->func_info_rec_size;
            attr.func_info_cnt = btf->func_info_cnt;
            attr.line_info = ptr(btf->line_info);
            attr.line_info_rec_size = btf->line_info_rec_size;
            attr.line_info_cnt = btf->line_info_cnt;
        }
    }
    return sys_bpf(BPF_PROG_LOAD, &attr);
}

long cbpf_prog_load(uint32_t prog_type, uint32_t expected_attach_type, const void *insns, uint32_t insn_cnt,
                    const char *license, const char *name, uint32_t prog_flags, char *log_buf, uint32_t log_size,
                    uint32_t log_level, const int32_t *fd_array) {
    return prog_load(prog_type, expected_attach_type, insns, insn_cnt, license, name, prog_flags, log_buf, log_size,
                     log_level, fd_array, NULL);
}

long cbpf_prog_load_btf(uint32_t prog_type, uint32_t expected_attach_type, const void *insns, uint32_t insn_cnt,
                        const char *license, const char *name, char *log_buf, uint32_t log_size, uint32_t log_level,
                        const struct cbpf_prog_btf *btf) {
    return prog_load(prog_type, expected_attach_type, insns, insn_cnt, license, name, 0, log_buf, log_size, log_level,
                     NULL, btf);
}

long cbpf_prog_test_run(int prog_fd, const void *ctx_in, uint32_t ctx_size_in, void *ctx_out, uint32_t *ctx_size_out,
                        const void *data_in, uint32_t data_size_in, void *data_out, uint32_t *data_size_out,
                        uint32_t repeat, uint32_t flags, uint32_t *retval, uint32_t *duration) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.test.prog_fd = prog_fd;
    attr.test.ctx_in = ptr(ctx_in);
    attr.test.ctx_size_in = ctx_size_in;
    attr.test.ctx_out = ptr(ctx_out);
    attr.test.ctx_size_out = ctx_size_out ? *ctx_size_out : 0;
    attr.test.data_in = ptr(data_in);
    attr.test.data_size_in = data_size_in;
    attr.test.data_out = ptr(data_out);
    attr.test.data_size_out = data_size_out ? *data_size_out : 0;
    attr.test.repeat = repeat;
    attr.test.flags = flags;
    long r = sys_bpf(BPF_PROG_TEST_RUN, &attr);
    if (ctx_size_out) *ctx_size_out = attr.test.ctx_size_out;
    if (data_size_out) *data_size_out = attr.test.data_size_out;
    if (retval) *retval = attr.test.retval;
    if (duration) *duration = attr.test.duration;
    return r;
}

long cbpf_prog_query(int target_fd, uint32_t attach_type, uint32_t query_flags, uint32_t *attach_flags,
                     uint32_t *prog_ids, uint32_t *prog_cnt) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.query.target_fd = target_fd;
    attr.query.attach_type = attach_type;
    attr.query.query_flags = query_flags;
    attr.query.prog_ids = ptr(prog_ids);
    attr.query.prog_cnt = *prog_cnt;
    long r = sys_bpf(BPF_PROG_QUERY, &attr);
    *prog_cnt = attr.query.prog_cnt;
    if (attach_flags) *attach_flags = attr.query.attach_flags;
    return r;
}

long cbpf_map_create(uint32_t map_type, uint32_t key_size, uint32_t value_size, uint32_t max_entries,
                     uint32_t map_flags, const char *name, int inner_map_fd) {
    return cbpf_map_create_btf(map_type, key_size, value_size, max_entries, map_flags, name, inner_map_fd, -1, 0, 0);
}

long cbpf_map_create_btf(uint32_t map_type, uint32_t key_size, uint32_t value_size, uint32_t max_entries,
                         uint32_t map_flags, const char *name, int inner_map_fd, int btf_fd, uint32_t btf_key_type_id,
                         uint32_t btf_value_type_id) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_type = map_type;
    attr.key_size = key_size;
    attr.value_size = value_size;
    attr.max_entries = max_entries;
    attr.map_flags = map_flags;
    attr.inner_map_fd = inner_map_fd >= 0 ? inner_map_fd : 0; /* -1: none (0 is a valid descriptor) */
    if (name) strncpy(attr.map_name, name, sizeof(attr.map_name) - 1);
    if (btf_fd >= 0) {
        attr.btf_fd = btf_fd;
        attr.btf_key_type_id = btf_key_type_id;
        attr.btf_value_type_id = btf_value_type_id;
    }
    return sys_bpf(BPF_MAP_CREATE, &attr);
}

long cbpf_map_freeze(int fd) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_fd = fd;
    return sys_bpf(BPF_MAP_FREEZE, &attr);
}

long cbpf_btf_load(const void *btf, uint32_t size, char *log_buf, uint32_t log_size, uint32_t log_level) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.btf = ptr(btf);
    attr.btf_size = size;
    attr.btf_log_buf = ptr(log_buf);
    attr.btf_log_size = log_size;
    attr.btf_log_level = log_level;
    return sys_bpf(BPF_BTF_LOAD, &attr);
}

long cbpf_map_lookup(int fd, const void *key, void *value, uint64_t flags) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_fd = fd;
    attr.key = ptr(key);
    attr.value = ptr(value);
    attr.flags = flags;
    return sys_bpf(BPF_MAP_LOOKUP_ELEM, &attr);
}

long cbpf_map_update(int fd, const void *key, const void *value, uint64_t flags) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_fd = fd;
    attr.key = ptr(key);
    attr.value = ptr(value);
    attr.flags = flags;
    return sys_bpf(BPF_MAP_UPDATE_ELEM, &attr);
}

long cbpf_map_delete(int fd, const void *key) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_fd = fd;
    attr.key = ptr(key);
    return sys_bpf(BPF_MAP_DELETE_ELEM, &attr);
}

long cbpf_map_next_key(int fd, const void *key, void *next_key) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_fd = fd;
    attr.key = ptr(key);
    attr.next_key = ptr(next_key);
    return sys_bpf(BPF_MAP_GET_NEXT_KEY, &attr);
}

long cbpf_map_batch(int cmd, int fd, void *in_batch, void *out_batch, void *keys, void *values, uint32_t *count,
                    uint64_t elem_flags, uint64_t flags) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.batch.map_fd = fd;
    attr.batch.in_batch = ptr(in_batch);
    attr.batch.out_batch = ptr(out_batch);
    attr.batch.keys = ptr(keys);
    attr.batch.values = ptr(values);
    attr.batch.count = *count;
    attr.batch.elem_flags = elem_flags;
    attr.batch.flags = flags;
    long r = sys_bpf(cmd, &attr);
    *count = attr.batch.count;
    return r;
}

long cbpf_obj_pin(int fd, const char *path) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.bpf_fd = fd;
    attr.pathname = ptr(path);
    return sys_bpf(BPF_OBJ_PIN, &attr);
}

long cbpf_obj_get(const char *path, uint32_t file_flags) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.pathname = ptr(path);
    attr.file_flags = file_flags;
    return sys_bpf(BPF_OBJ_GET, &attr);
}

long cbpf_obj_info(int fd, void *info, uint32_t *info_len) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.info.bpf_fd = fd;
    attr.info.info = ptr(info);
    attr.info.info_len = *info_len;
    long r = sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr);
    *info_len = attr.info.info_len;
    return r;
}

long cbpf_next_id(int cmd, uint32_t start_id, uint32_t *next_id) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.start_id = start_id;
    long r = sys_bpf(cmd, &attr);
    *next_id = attr.next_id;
    return r;
}

long cbpf_fd_by_id(int cmd, uint32_t id, uint32_t open_flags) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_id = id; /* prog_id, map_id, link_id share this field */
    attr.open_flags = open_flags;
    return sys_bpf(cmd, &attr);
}

long cbpf_enable_stats(uint32_t type) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.enable_stats.type = type;
    return sys_bpf(BPF_ENABLE_STATS, &attr);
}

long cbpf_link_create(int prog_fd, int target_fd, uint32_t attach_type, uint32_t flags) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.link_create.prog_fd = prog_fd;
    attr.link_create.target_fd = target_fd;
    attr.link_create.attach_type = attach_type;
    attr.link_create.flags = flags;
    return sys_bpf(BPF_LINK_CREATE, &attr);
}

long cbpf_link_update(int link_fd, int new_prog_fd, int old_prog_fd, uint32_t flags) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.link_update.link_fd = link_fd;
    attr.link_update.new_prog_fd = new_prog_fd;
    attr.link_update.old_prog_fd = old_prog_fd >= 0 ? old_prog_fd : 0; /* -1: none (0 is a valid descriptor) */
    attr.link_update.flags = flags;
    return sys_bpf(BPF_LINK_UPDATE, &attr);
}

long cbpf_link_detach(int link_fd) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.link_detach.link_fd = link_fd;
    return sys_bpf(BPF_LINK_DETACH, &attr);
}

long cbpf_link_info(int link_fd, uint32_t *id, uint32_t *type, uint32_t *prog_id, uint32_t *netns_ino,
                    uint32_t *attach_type) {
    struct bpf_link_info info;
    memset(&info, 0, sizeof(info));
    uint32_t len = sizeof(info);
    long r = cbpf_obj_info(link_fd, &info, &len);
    if (r < 0) return r;
    *id = info.id;
    *type = info.type;
    *prog_id = info.prog_id;
    *netns_ino = info.type == BPF_LINK_TYPE_NETNS ? info.netns.netns_ino : 0;
    *attach_type = info.type == BPF_LINK_TYPE_NETNS ? info.netns.attach_type : 0;
    return r;
}

long cbpf_unshare_network(void) { RETURN(unshare(CLONE_NEWNET)); }
long cbpf_enter_network(int fd) { RETURN(setns(fd, CLONE_NEWNET)); }

long cbpf_mount_bpffs(const char *target, uint32_t mode) {
    char options[32];
    snprintf(options, sizeof(options), "mode=%o", mode);
    RETURN(mount("bpf", target, "bpf", 0, options));
}

long cbpf_umount(const char *target) { RETURN(umount2(target, MNT_DETACH)); }

long cbpf_fs_magic(const char *path, uint64_t *magic) {
    struct statfs st;
    long r = statfs(path, &st);
    if (r < 0) return -errno;
    *magic = (uint64_t)st.f_type;
    return 0;
}

long cbpf_pidfd_open(int pid) { RETURN(syscall(SYS_pidfd_open, pid, 0)); }
long cbpf_pidfd_getfd(int pidfd, int targetfd) { RETURN(syscall(SYS_pidfd_getfd, pidfd, targetfd, 0)); }
long cbpf_gettid(void) { return (long)syscall(SYS_gettid); }

long cbpf_interface_up(const char *name) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    long r = ioctl(fd, SIOCGIFFLAGS, &ifr);
    if (r == 0) {
        ifr.ifr_flags |= IFF_UP;
        r = ioctl(fd, SIOCSIFFLAGS, &ifr);
    }
    int err = r < 0 ? errno : 0;
    close(fd);
    return -err;
}

long cbpf_interface_index(const char *name) {
    unsigned int index = if_nametoindex(name);
    return index == 0 ? -errno : (long)index;
}

long cbpf_address_add(int ifindex, int family, const uint8_t *address, uint8_t prefix_len) {
    struct {
        struct nlmsghdr nh;
        struct ifaddrmsg ifa;
        char attrs[64];
    } req;
    memset(&req, 0, sizeof(req));
    size_t alen = family == AF_INET ? 4 : 16;
    req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
    req.nh.nlmsg_type = RTM_NEWADDR;
    req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;
    req.nh.nlmsg_seq = 1;
    req.ifa.ifa_family = family;
    req.ifa.ifa_prefixlen = prefix_len;
    req.ifa.ifa_flags = family == AF_INET6 ? IFA_F_NODAD : 0;
    req.ifa.ifa_scope = RT_SCOPE_HOST;
    req.ifa.ifa_index = ifindex;
    int types[2] = {IFA_LOCAL, IFA_ADDRESS};
    for (int i = 0; i < 2; i++) {
        struct rtattr *rta = (struct rtattr *)((char *)&req + NLMSG_ALIGN(req.nh.nlmsg_len));
        rta->rta_type = types[i];
        rta->rta_len = RTA_LENGTH(alen);
        memcpy(RTA_DATA(rta), address, alen);
        req.nh.nlmsg_len = NLMSG_ALIGN(req.nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
    }
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) return -errno;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    long r = sendto(fd, &req, req.nh.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel));
    if (r < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    char buf[4096];
    r = recv(fd, buf, sizeof(buf), 0);
    int err = r < 0 ? errno : 0;
    close(fd);
    if (err) return -err;
    struct nlmsghdr *nh = (struct nlmsghdr *)buf;
    if (nh->nlmsg_type == NLMSG_ERROR) {
        struct nlmsgerr *e = NLMSG_DATA(nh);
        return e->error; /* already -errno, or 0 for the ACK */
    }
    return 0;
}

static socklen_t fill_sockaddr(struct sockaddr_storage *ss, int family, const uint8_t *address, uint16_t port) {
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        memcpy(&sin->sin_addr, address, 4);
        return sizeof(*sin);
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    memcpy(&sin6->sin6_addr, address, 16);
    return sizeof(*sin6);
}

static void read_sockaddr(const struct sockaddr_storage *ss, int *family, uint8_t *address, uint16_t *port) {
    *family = ss->ss_family;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        memcpy(address, &sin->sin_addr, 4);
        *port = ntohs(sin->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        memcpy(address, &sin6->sin6_addr, 16);
        *port = ntohs(sin6->sin6_port);
    }
}

long cbpf_socket(int family, int type, int reuse_port, int v6only, int reuse_addr) {
    int fd = socket(family, type | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    if ((reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
        (reuse_addr && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) ||
        (family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) < 0)) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

long cbpf_bind(int fd, int family, const uint8_t *address, uint16_t port) {
    struct sockaddr_storage ss;
    socklen_t len = fill_sockaddr(&ss, family, address, port);
    RETURN(bind(fd, (struct sockaddr *)&ss, len));
}

long cbpf_listen(int fd, int backlog) { RETURN(listen(fd, backlog)); }

long cbpf_connect(int fd, int family, const uint8_t *address, uint16_t port) {
    struct sockaddr_storage ss;
    socklen_t len = fill_sockaddr(&ss, family, address, port);
    RETURN(connect(fd, (struct sockaddr *)&ss, len));
}

long cbpf_accept(int fd) { RETURN(accept4(fd, NULL, NULL, SOCK_CLOEXEC)); }

long cbpf_local_address(int fd, int *family, uint8_t *address, uint16_t *port) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return -errno;
    read_sockaddr(&ss, family, address, port);
    return 0;
}

long cbpf_peer_address(int fd, int *family, uint8_t *address, uint16_t *port) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0) return -errno;
    read_sockaddr(&ss, family, address, port);
    return 0;
}

long cbpf_send_to(int fd, const void *buf, size_t len, int family, const uint8_t *address, uint16_t port) {
    struct sockaddr_storage ss;
    socklen_t slen = fill_sockaddr(&ss, family, address, port);
    RETURN(sendto(fd, buf, len, MSG_NOSIGNAL, (struct sockaddr *)&ss, slen));
}

long cbpf_receive_from(int fd, void *buf, size_t len, int *family, uint8_t *address, uint16_t *port) {
    struct sockaddr_storage ss;
    socklen_t slen = sizeof(ss);
    long r = recvfrom(fd, buf, len, 0, (struct sockaddr *)&ss, &slen);
    if (r < 0) return -errno;
    read_sockaddr(&ss, family, address, port);
    return r;
}

long cbpf_receive_message(int fd, void *buf, size_t len, int *family, uint8_t *address, uint16_t *port,
                          int *dst_family, uint8_t *dst_address, int *ifindex, int *orig_family,
                          uint8_t *orig_address, uint16_t *orig_port) {
    struct sockaddr_storage ss;
    union {
        char buf[CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(struct sockaddr_in6)) +
                 CMSG_SPACE(sizeof(struct in_pktinfo)) + CMSG_SPACE(sizeof(struct sockaddr_in)) + 64];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr msg = {.msg_name = &ss,
                         .msg_namelen = sizeof(ss),
                         .msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = control.buf,
                         .msg_controllen = sizeof(control.buf)};
    long r = recvmsg(fd, &msg, 0);
    if (r < 0) return -errno;
    read_sockaddr(&ss, family, address, port);
    *dst_family = 0;
    *orig_family = 0;
    *ifindex = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
            struct in_pktinfo info;
            memcpy(&info, CMSG_DATA(c), sizeof(info));
            *dst_family = AF_INET;
            memcpy(dst_address, &info.ipi_addr, 4);
            *ifindex = info.ipi_ifindex;
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
            struct in6_pktinfo info;
            memcpy(&info, CMSG_DATA(c), sizeof(info));
            *dst_family = AF_INET6;
            memcpy(dst_address, &info.ipi6_addr, 16);
            *ifindex = (int)info.ipi6_ifindex;
        } else if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_ORIGDSTADDR) ||
                   (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_ORIGDSTADDR)) {
            struct sockaddr_storage orig;
            memset(&orig, 0, sizeof(orig));
            size_t n = c->cmsg_len - CMSG_LEN(0);
            memcpy(&orig, CMSG_DATA(c), n < sizeof(orig) ? n : sizeof(orig));
            read_sockaddr(&orig, orig_family, orig_address, orig_port);
        }
    }
    return r;
}

long cbpf_send_from(int fd, const void *buf, size_t len, int family, const uint8_t *address, uint16_t port,
                    int src_family, const uint8_t *src_address, int ifindex) {
    struct sockaddr_storage ss;
    socklen_t slen = fill_sockaddr(&ss, family, address, port);
    union {
        char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof(control));
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr msg = {.msg_name = &ss, .msg_namelen = slen, .msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = control.buf};
    struct cmsghdr *c = (struct cmsghdr *)control.buf;
    if (src_family == AF_INET) {
        struct in_pktinfo info;
        memset(&info, 0, sizeof(info));
        memcpy(&info.ipi_spec_dst, src_address, 4);
        info.ipi_ifindex = ifindex;
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(info));
        memcpy(CMSG_DATA(c), &info, sizeof(info));
        msg.msg_controllen = CMSG_SPACE(sizeof(info));
    } else {
        struct in6_pktinfo info;
        memset(&info, 0, sizeof(info));
        memcpy(&info.ipi6_addr, src_address, 16);
        info.ipi6_ifindex = (unsigned)ifindex;
        c->cmsg_level = IPPROTO_IPV6;
        c->cmsg_type = IPV6_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(info));
        memcpy(CMSG_DATA(c), &info, sizeof(info));
        msg.msg_controllen = CMSG_SPACE(sizeof(info));
    }
    RETURN(sendmsg(fd, &msg, MSG_NOSIGNAL));
}

long cbpf_send(int fd, const void *buf, size_t len) { RETURN(send(fd, buf, len, MSG_NOSIGNAL)); }
long cbpf_receive(int fd, void *buf, size_t len) { RETURN(recv(fd, buf, len, 0)); }

long cbpf_socket_cookie(int fd, uint64_t *cookie) {
    socklen_t len = sizeof(*cookie);
    RETURN(getsockopt(fd, SOL_SOCKET, SO_COOKIE, cookie, &len));
}

long cbpf_getsockopt_int(int fd, int level, int name, int *value) {
    socklen_t len = sizeof(*value);
    RETURN(getsockopt(fd, level, name, value, &len));
}

long cbpf_setsockopt_int(int fd, int level, int name, int value) {
    RETURN(setsockopt(fd, level, name, &value, sizeof(value)));
}

long cbpf_set_timeouts(int fd, uint32_t milliseconds) {
    struct timeval tv = {.tv_sec = milliseconds / 1000, .tv_usec = (milliseconds % 1000) * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) return -errno;
    RETURN(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)));
}

long cbpf_set_linger_zero(int fd) {
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    RETURN(setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l)));
}

long cbpf_close(int fd) { RETURN(close(fd)); }

long cbpf_errno_name(int err, char *buf, size_t len) {
    const char *name = strerrorname_np(err);
    if (!name) return -EINVAL;
    strncpy(buf, name, len - 1);
    buf[len - 1] = 0;
    return 0;
}

long cbpf_sock_diag(int family, int protocol, uint64_t *cookies, uint64_t *inodes, uint32_t max) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) return -errno;
    struct {
        struct nlmsghdr nh;
        struct inet_diag_req_v2 req;
    } request;
    memset(&request, 0, sizeof(request));
    request.nh.nlmsg_len = sizeof(request);
    request.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    request.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    request.req.sdiag_family = family;
    request.req.sdiag_protocol = protocol;
    request.req.idiag_states = 0xffffffff;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, &request, sizeof(request), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    long count = 0;
    char buf[16384];
    for (;;) {
        long n = recv(fd, buf, sizeof(buf), 0);
        if (n < 0) {
            int err = errno;
            close(fd);
            return -err;
        }
        struct nlmsghdr *nh = (struct nlmsghdr *)buf;
        for (; NLMSG_OK(nh, (unsigned long)n); nh = NLMSG_NEXT(nh, n)) {
            if (nh->nlmsg_type == NLMSG_DONE) {
                close(fd);
                return count;
            }
            if (nh->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *e = NLMSG_DATA(nh);
                close(fd);
                return e->error;
            }
            struct inet_diag_msg *msg = NLMSG_DATA(nh);
            if (count < max) {
                cookies[count] = (uint64_t)msg->id.idiag_cookie[0] | ((uint64_t)msg->id.idiag_cookie[1] << 32);
                inodes[count] = msg->idiag_inode;
                count++;
            }
        }
    }
}
