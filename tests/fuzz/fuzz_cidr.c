/*
 * fuzz_cidr.c - CIDR text and the allow/deny decision (policy.h).
 *
 * Input: a 20-byte header, then text.
 *   bytes 0-15  an address (IPv4: the first 4), 16 flags, 17-18 port, 19 unused
 *   text        lines; each is given to cidr_parse (a NUL-terminated copy).
 *               A line starting with '+' goes to the allow list, any other
 *               (a leading '-' is dropped) to the deny list, which starts as
 *               the built-in defaults. Shorter inputs are text only.
 *
 * Checks: every CIDR that parses formats to text that parses to the same
 * CIDR (and formats the same); the network address is inside it and the
 * address just past it is not. Then policy_check of the address against
 * the lists, with no self, this host's wildcard listener, or a listener on
 * the address itself, must follow the rules of CONTRACT.md and policy.h:
 * IPv4-mapped ::ffff:a.b.c.d is judged exactly as a.b.c.d; an address in
 * allow is allowed (unless it is an IPv6 form embedding an IPv4 address that
 * is itself blocked, as policy.h documents); an address in deny and not in
 * allow is never allowed; an address in neither is allowed unless it is
 * fanoutd's own; a listener's own address and port is always POLICY_SELF.
 */
#include <arpa/inet.h>
#include <string.h>

#include "fuzz_common.h"
#include "policy.h"

#define HDR 20
#define MAX_LINES 32

static struct cidr_list defaults;
static struct self_addr wild_self;
static int wild_ok;

static const uint8_t mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static void add_list(struct cidr_list *l, const char *text)
{
    struct cidr c;
    struct fo_msg msg = { "" };

    if (cidr_parse(text, &c, &msg) != FO_OK || cidr_list_add(l, &c) != FO_OK)
        abort();
}

static void cleanup(void)
{
    cidr_list_free(&defaults);
    if (wild_ok)
        self_addr_free(&wild_self);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const deny[] = { "169.254.0.0/16", "fe80::/10", "0.0.0.0/8",
                                        "224.0.0.0/4", "ff00::/8", "255.255.255.255/32" };
    struct sockaddr_in any;

    (void)argc;
    (void)argv;
    for (size_t i = 0; i < FO_ARRAY_LEN(deny); i++)
        add_list(&defaults, deny[i]);
    memset(&any, 0, sizeof(any));
    any.sin_family = AF_INET;
    any.sin_port = htons(8080);
    wild_ok = self_addr_init(&wild_self, (const struct sockaddr *)&any, sizeof(any)) == FO_OK;
    atexit(cleanup);
    return 0;
}

static int same_cidr(const struct cidr *a, const struct cidr *b)
{
    return a->family == b->family && a->prefix == b->prefix && memcmp(a->addr, b->addr, 16) == 0;
}

/* Round trip and containment of one parsed CIDR. */
static void check_cidr(const char *text, const struct cidr *c)
{
    char f1[128], f2[128];
    struct cidr back;
    struct fo_msg msg = { "" };
    unsigned bytes = c->family == AF_INET ? 4 : 16;
    uint8_t a[16];

    FUZZ_ASSERT(c->family == AF_INET || c->family == AF_INET6);
    FUZZ_ASSERT(c->prefix <= bytes * 8);
    if (c->family == AF_INET) {
        static const uint8_t zero[12];
        FUZZ_ASSERT(memcmp(c->addr + 4, zero, 12) == 0);
    } else {
        /* An IPv4-mapped network is stored as the IPv4 one. */
        FUZZ_ASSERTF(c->prefix < 96 || memcmp(c->addr, mapped_prefix, 12) != 0, "%s", text);
    }
    cidr_format(c, f1, sizeof(f1));
    FUZZ_ASSERTF(cidr_parse(f1, &back, &msg) == FO_OK, "'%s' formats as '%s': %s", text, f1,
                 msg.text);
    FUZZ_ASSERTF(same_cidr(c, &back), "'%s' -> '%s' parses differently", text, f1);
    cidr_format(&back, f2, sizeof(f2));
    FUZZ_ASSERTF(strcmp(f1, f2) == 0, "'%s' vs '%s'", f1, f2);

    /* The network address is inside; so is the last address of the range. */
    FUZZ_ASSERT(cidr_contains(c, c->family, c->addr));
    memcpy(a, c->addr, 16);
    for (unsigned bit = c->prefix; bit < bytes * 8; bit++)
        a[bit / 8] |= (uint8_t)(0x80 >> (bit % 8));
    FUZZ_ASSERTF(cidr_contains(c, c->family, a), "%s: last address", f1);
    /* Flipping a bit inside the prefix leaves the range. */
    if (c->prefix > 0) {
        unsigned bit = c->prefix - 1;
        memcpy(a, c->addr, 16);
        a[bit / 8] ^= (uint8_t)(0x80 >> (bit % 8));
        FUZZ_ASSERTF(!cidr_contains(c, c->family, a), "%s: bit %u", f1, bit);
    }
    FUZZ_ASSERT(!cidr_contains(c, c->family == AF_INET ? AF_INET6 : AF_INET, c->addr));
}

static int in_list(const struct cidr_list *l, int family, const uint8_t *addr)
{
    for (size_t i = 0; i < l->n; i++) {
        if (cidr_contains(&l->v[i], family, addr))
            return 1;
    }
    return 0;
}

/* The IPv4 address an IPv6 one embeds by the forms policy.h names. */
static int embeds_v4(const uint8_t *a6, uint8_t *v4)
{
    static const uint8_t zero[12];
    static const uint8_t nat64[12] = { 0x00, 0x64, 0xff, 0x9b };
    static const uint8_t loop[4] = { 0, 0, 0, 1 };

    if (memcmp(a6, nat64, 12) == 0 || (memcmp(a6, zero, 12) == 0 && memcmp(a6 + 12, loop, 4))) {
        memcpy(v4, a6 + 12, 4);
        return 1;
    }
    if (a6[0] == 0x20 && a6[1] == 0x02) {
        memcpy(v4, a6 + 2, 4);
        return 1;
    }
    return 0;
}

static socklen_t make_sa(struct sockaddr_storage *ss, int family, const uint8_t *addr,
                         uint16_t port)
{
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        memcpy(&in->sin_addr, addr, 4);
        return sizeof(*in);
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    memcpy(in6->sin6_addr.s6_addr, addr, 16);
    return sizeof(*in6);
}

static enum policy_verdict check(const struct cidr_list *allow, const struct cidr_list *deny,
                                 const struct self_addr *self, int family, const uint8_t *addr,
                                 uint16_t port)
{
    struct sockaddr_storage ss;

    (void)make_sa(&ss, family, addr, port);
    return policy_check(allow, deny, self, (const struct sockaddr *)&ss);
}

static void check_policy(const struct cidr_list *allow, const struct cidr_list *deny,
                         const uint8_t *hdr)
{
    uint8_t flags = hdr[16], norm[16] = { 0 }, v4[4], mapped[16];
    uint16_t port = (uint16_t)(hdr[17] << 8 | hdr[18]);
    int family = (flags & 1) ? AF_INET : AF_INET6, nfam;
    const struct self_addr *self = NULL;
    struct self_addr own;
    int own_ok = 0;
    char text[128];

    /* The address as policy.h judges it: IPv4-mapped becomes IPv4. */
    if (family == AF_INET6 && memcmp(hdr, mapped_prefix, 12) == 0) {
        nfam = AF_INET;
        memcpy(norm, hdr + 12, 4);
    } else {
        nfam = family;
        memcpy(norm, hdr, family == AF_INET ? 4 : 16);
    }
    (void)inet_ntop(nfam, norm, text, sizeof(text));

    switch ((flags >> 1) & 3) {
    case 1:
        self = wild_ok ? &wild_self : NULL;
        break;
    case 2: {
        /* A listener on this very address (or, flag bit 3, on another port). */
        struct sockaddr_storage ss;
        uint16_t sport = (flags & 8) ? (uint16_t)(port + 1) : port;
        socklen_t len = make_sa(&ss, nfam, norm, sport);
        static const uint8_t zero[16];
        if (memcmp(norm, zero, nfam == AF_INET ? 4 : 16) != 0) {   /* not a wildcard */
            own_ok = self_addr_init(&own, (const struct sockaddr *)&ss, len) == FO_OK;
            FUZZ_ASSERT(own_ok);
            self = &own;
        }
        break;
    }
    default:
        break;
    }

    enum policy_verdict v = check(allow, deny, self, family, hdr, port);
    FUZZ_ASSERT(v == POLICY_ALLOW || v == POLICY_DENY || v == POLICY_SELF);

    /* The same address in its other spelling gets the same verdict. */
    if (nfam == AF_INET) {
        memcpy(mapped, mapped_prefix, 12);
        memcpy(mapped + 12, norm, 4);
        FUZZ_ASSERTF(check(allow, deny, self, AF_INET6, mapped, port) == v,
                     "::ffff:%s judged apart from %s", text, text);
        FUZZ_ASSERTF(check(allow, deny, self, AF_INET, norm, port) == v, "%s", text);
    }
    if (self == NULL)
        FUZZ_ASSERTF(v != POLICY_SELF, "%s: self without a listener", text);
    if (self == &own && !(flags & 8))
        FUZZ_ASSERTF(v == POLICY_SELF, "%s port %u: fanoutd's own address not refused", text,
                     port);
    if (self == &own && (flags & 8))
        FUZZ_ASSERTF(v != POLICY_SELF, "%s port %u: another port judged as self", text, port);
    if (v == POLICY_SELF)
        goto out;

    int allowed = in_list(allow, nfam, norm), denied = in_list(deny, nfam, norm);
    int emb = nfam == AF_INET6 && embeds_v4(norm, v4);
    int emb_blocked = emb && in_list(deny, AF_INET, v4) && !in_list(allow, AF_INET, v4);

    /* allow overrides deny, also for an IPv6 address that embeds a denied
     * IPv4 one (policy.h). */
    if (allowed)
        FUZZ_ASSERTF(v == POLICY_ALLOW, "%s is in allow but denied", text);
    if (denied && !allowed)
        FUZZ_ASSERTF(v == POLICY_DENY, "%s is in deny (not allow) but allowed", text);
    if (emb_blocked && !allowed)
        FUZZ_ASSERTF(v == POLICY_DENY, "%s embeds a blocked IPv4 address but is allowed", text);
    if (in_list(&defaults, nfam, norm) && !allowed)
        FUZZ_ASSERTF(v == POLICY_DENY, "%s is in the default deny list but allowed", text);
    if (!denied && !emb_blocked && (self == NULL || self == &own))
        FUZZ_ASSERTF(v == POLICY_ALLOW, "%s is in no list but denied", text);
out:
    if (own_ok)
        self_addr_free(&own);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cidr_list allow = { 0 }, deny = { 0 };
    const uint8_t *hdr = NULL;
    size_t nlines = 0;

    if (size >= HDR) {
        hdr = data;
        data += HDR;
        size -= HDR;
    }
    if (cidr_list_copy(&deny, &defaults) != FO_OK)
        abort();
    while (size > 0 && nlines < MAX_LINES) {
        const uint8_t *nl = memchr(data, '\n', size);
        size_t n = nl ? (size_t)(nl - data) : size;
        char *text = malloc(n + 1);
        struct cidr c;
        struct fo_msg msg = { "" };
        int to_allow = n > 0 && data[0] == '+';

        if (text == NULL)
            abort();
        memcpy(text, data, n);
        text[n] = '\0';
        const char *t = (n > 0 && (text[0] == '+' || text[0] == '-')) ? text + 1 : text;
        if (cidr_parse(t, &c, &msg) == FO_OK) {
            check_cidr(t, &c);
            FUZZ_ASSERT(cidr_list_add(to_allow ? &allow : &deny, &c) != FO_ENOMEM);
        } else {
            FUZZ_ASSERT(msg.text[0] != '\0');
        }
        free(text);
        nlines++;
        data += nl ? n + 1 : n;
        size -= nl ? n + 1 : n;
    }
    if (hdr != NULL)
        check_policy(&allow, &deny, hdr);
    cidr_list_free(&allow);
    cidr_list_free(&deny);
    return 0;
}
