/*
 * policy.h - destination policy: CIDR lists and the allow/deny decision.
 *
 * Pure functions over addresses. The fetcher calls policy_check() on the
 * resolved address of every connection it is about to open (redirects
 * included, through curl's open-socket callback), so the decision is made
 * on what is dialled, not on how the URL spelled it.
 *
 * Rules: an address matching `allow` is fetched; else one matching `deny`
 * (which always includes the built-in defaults) is blocked; else fetched.
 * An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is judged as the IPv4
 * address. IPv6 forms that embed an IPv4 address (IPv4-compatible ::a.b.c.d,
 * NAT64 64:ff9b::/96, 6to4 2002::/16) are blocked if either the IPv6
 * address or the embedded IPv4 address is blocked, unless the IPv6 address
 * itself is in `allow`. fanoutd's own listening
 * address and port is always blocked.
 */
#ifndef FO_POLICY_H
#define FO_POLICY_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "err.h"
#include "fanoutd.h"

struct cidr {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network bytes; first 4 for AF_INET, host bits zero */
    unsigned prefix;  /* 0..32 or 0..128 */
};

struct cidr_list {
    struct cidr *v; /* owned */
    size_t n;
};

/* The default deny list, as the configuration prints it. */
#define POLICY_DEFAULT_DENY \
    "169.254.0.0/16, fe80::/10, 0.0.0.0/8, 224.0.0.0/4, ff00::/8, 255.255.255.255/32"

/* Parses "a.b.c.d/n", "v6::/n" or a bare address (a host route). Host bits
 * set below the prefix are an error ("10.0.0.1/8" is ambiguous). */
fo_err cidr_parse(const char *text, struct cidr *out, struct fo_msg *msg) FO_MUST_CHECK;
/* Writes the canonical text ("10.0.0.0/8") into out. */
void cidr_format(const struct cidr *c, char *out, size_t size);
/* 1 if addr (AF_INET: 4 bytes, AF_INET6: 16 bytes) is inside c. */
int cidr_contains(const struct cidr *c, int family, const uint8_t *addr);

/* Appends c to the list unless an equal entry is there. */
fo_err cidr_list_add(struct cidr_list *l, const struct cidr *c) FO_MUST_CHECK;
void cidr_list_free(struct cidr_list *l);
fo_err cidr_list_copy(struct cidr_list *dst, const struct cidr_list *src) FO_MUST_CHECK;

/* What the check says. */
enum policy_verdict { POLICY_ALLOW = 0, POLICY_DENY, POLICY_SELF };

/* fanoutd's own listening socket, so that a batch cannot call fanoutd. */
struct self_addr {
    struct sockaddr_storage listen; /* as bound (may be a wildcard) */
    int wildcard;                   /* bound to 0.0.0.0 or :: */
    uint8_t (*local)[16];           /* with a wildcard: this host's addresses, */
    int *local_family;              /* as family + bytes (owned) */
    size_t nlocal;
};

enum policy_verdict policy_check(const struct cidr_list *allow, const struct cidr_list *deny,
                                 const struct self_addr *self, const struct sockaddr *sa);

/* Fills self from the bound address (reads the host's interface addresses
 * when it is a wildcard). An AF_UNIX address is accepted and blocks nothing:
 * no http(s) URL reaches a unix socket. */
fo_err self_addr_init(struct self_addr *self, const struct sockaddr *bound,
                      socklen_t len) FO_MUST_CHECK;
void self_addr_free(struct self_addr *self);

#endif
