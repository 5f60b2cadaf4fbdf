/*
 * test_policy.c - policy.h: CIDR parsing and formatting, and the allow /
 * deny / self decision on dialled addresses.
 *
 * The classification tests follow smokescreen's TestClassifyAddr: a table
 * of addresses at the edges of every range with the verdict each must get.
 * The lists come from config_build (the defaults plus overrides), so the
 * tests see the same lists the daemon uses.
 */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <string.h>

#include "config.h"
#include "harness.h"
#include "policy.h"

/* Builds a socket address from a numeric IPv4 or IPv6 text and a port. */
static int make_sa(const char *ip, unsigned port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        return inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1;
    }
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, ip, &in->sin_addr) == 1;
}

/* A configuration with allow/deny overrides (NULL: leave the default). */
static struct config *policy_config(const char *allow, const char *deny, const char *listen)
{
    struct config_override ov[3];
    size_t n = 0;
    struct config *cfg = NULL;
    struct fo_msg msg = { "" };

    if (allow != NULL)
        ov[n++] = (struct config_override){ "allow", allow };
    if (deny != NULL)
        ov[n++] = (struct config_override){ "deny", deny };
    if (listen != NULL)
        ov[n++] = (struct config_override){ "listen", listen };
    if (config_build(NULL, ov, n, &cfg, &msg) != FO_OK)
        CHECK_FAIL_("config_build: %s", msg.text);
    return cfg;
}

static const char *verdict_name(enum policy_verdict v)
{
    return v == POLICY_ALLOW ? "allow" : v == POLICY_DENY ? "deny" : "self";
}

struct classify_case {
    const char *ip;
    unsigned port;
    enum policy_verdict want;
};

static void run_cases(const struct config *cfg, const struct self_addr *self,
                      const struct classify_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct sockaddr_storage ss;
        unsigned port = cases[i].port ? cases[i].port : 80;

        if (!make_sa(cases[i].ip, port, &ss)) {
            CHECK_FAIL_("bad test address %s", cases[i].ip);
            continue;
        }
        enum policy_verdict got =
            policy_check(&cfg->allow, &cfg->deny, self, (const struct sockaddr *)&ss);
        if (got != cases[i].want)
            CHECK_FAIL_("%s port %u: %s, want %s", cases[i].ip, port, verdict_name(got),
                        verdict_name(cases[i].want));
    }
}

static void test_classify_defaults(void)
{
    static const struct classify_case cases[] = {
        /* 169.254.0.0/16, link-local (cloud metadata) */
        { "169.254.0.0", 0, POLICY_DENY },
        { "169.254.255.255", 0, POLICY_DENY },
        { "169.254.169.254", 0, POLICY_DENY },
        { "169.253.255.255", 0, POLICY_ALLOW },
        { "169.255.0.0", 0, POLICY_ALLOW },
        /* 0.0.0.0/8 */
        { "0.0.0.0", 0, POLICY_DENY },
        { "0.255.255.255", 0, POLICY_DENY },
        { "1.0.0.0", 0, POLICY_ALLOW },
        /* 224.0.0.0/4, multicast */
        { "224.0.0.0", 0, POLICY_DENY },
        { "239.255.255.255", 0, POLICY_DENY },
        { "223.255.255.255", 0, POLICY_ALLOW },
        { "240.0.0.0", 0, POLICY_ALLOW },
        /* broadcast */
        { "255.255.255.255", 0, POLICY_DENY },
        { "255.255.255.254", 0, POLICY_ALLOW },
        /* fe80::/10 */
        { "fe80::", 0, POLICY_DENY },
        { "fe80::1", 0, POLICY_DENY },
        { "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0, POLICY_DENY },
        { "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0, POLICY_ALLOW },
        { "fec0::", 0, POLICY_ALLOW },
        /* ff00::/8 */
        { "ff00::", 0, POLICY_DENY },
        { "ff02::1", 0, POLICY_DENY },
        { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0, POLICY_DENY },
        { "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0, POLICY_ALLOW },
        /* ordinary destinations */
        { "8.8.8.8", 0, POLICY_ALLOW },
        { "10.0.0.1", 0, POLICY_ALLOW },
        { "127.0.0.1", 0, POLICY_ALLOW },
        { "2001:4860:4860::8888", 0, POLICY_ALLOW },
        { "::1", 0, POLICY_ALLOW },
        /* IPv4-mapped: judged as the IPv4 address */
        { "::ffff:169.254.169.254", 0, POLICY_DENY },
        { "::ffff:0.0.0.0", 0, POLICY_DENY },
        { "::ffff:224.0.0.1", 0, POLICY_DENY },
        { "::ffff:255.255.255.255", 0, POLICY_DENY },
        { "::ffff:8.8.8.8", 0, POLICY_ALLOW },
        { "::ffff:169.255.0.0", 0, POLICY_ALLOW },
        /* IPv6 forms embedding a denied IPv4 address */
        { "64:ff9b::a9fe:a9fe", 0, POLICY_DENY }, /* NAT64 169.254.169.254 */
        { "64:ff9b::808:808", 0, POLICY_ALLOW },  /* NAT64 8.8.8.8 */
        { "2002:a9fe:a9fe::", 0, POLICY_DENY },   /* 6to4 169.254.169.254 */
        { "2002:a9fe:a9fe:1::1", 0, POLICY_DENY },
        { "2002:e000:1::", 0, POLICY_DENY },     /* 6to4 224.0.0.1 */
        { "2002:808:808::1", 0, POLICY_ALLOW },  /* 6to4 8.8.8.8 */
        { "::169.254.169.254", 0, POLICY_DENY }, /* IPv4-compatible */
        { "::8.8.8.8", 0, POLICY_ALLOW },
    };
    struct config *cfg = policy_config(NULL, NULL, NULL);

    if (cfg == NULL)
        return;
    run_cases(cfg, NULL, cases, FO_ARRAY_LEN(cases));
    config_unref(cfg);
}

static void test_classify_allow_overrides_deny(void)
{
    static const struct classify_case loopback[] = {
        { "127.0.0.1", 0, POLICY_ALLOW },        { "127.0.0.2", 0, POLICY_DENY },
        { "127.0.0.0", 0, POLICY_DENY },         { "127.255.255.255", 0, POLICY_DENY },
        { "126.255.255.255", 0, POLICY_ALLOW },  { "128.0.0.0", 0, POLICY_ALLOW },
        { "::ffff:127.0.0.1", 0, POLICY_ALLOW }, { "::ffff:127.0.0.2", 0, POLICY_DENY },
        { "169.254.1.1", 0, POLICY_DENY }, /* the defaults are still there */
        { "fe80::1", 0, POLICY_DENY },
    };
    static const struct classify_case metadata[] = {
        { "169.254.169.254", 0, POLICY_ALLOW }, /* allow beats a default deny */
        { "169.254.169.253", 0, POLICY_DENY },
        { "::ffff:169.254.169.254", 0, POLICY_ALLOW },
        { "64:ff9b::a9fe:a9fe", 0, POLICY_ALLOW },
        { "fe80::1", 0, POLICY_ALLOW },
        { "fe80::2", 0, POLICY_DENY },
        { "10.1.2.3", 0, POLICY_DENY }, /* deny added by the config */
        { "::ffff:10.1.2.3", 0, POLICY_DENY },
        { "10.99.0.1", 0, POLICY_ALLOW }, /* allowed /16 inside it */
        { "11.0.0.0", 0, POLICY_ALLOW },
    };
    struct config *cfg = policy_config("127.0.0.1/32", "127.0.0.0/8", NULL);

    if (cfg != NULL)
        run_cases(cfg, NULL, loopback, FO_ARRAY_LEN(loopback));
    config_unref(cfg);
    cfg = policy_config("169.254.169.254, fe80::1/128, 10.99.0.0/16", "10.0.0.0/8", NULL);
    if (cfg != NULL)
        run_cases(cfg, NULL, metadata, FO_ARRAY_LEN(metadata));
    config_unref(cfg);
}

/* Runs cases against a daemon listening on `listen`. */
static void self_cases(const char *listen, const char *allow, const struct classify_case *cases,
                       size_t n)
{
    struct config *cfg = policy_config(allow, NULL, listen);
    struct self_addr self;

    if (cfg == NULL)
        return;
    if (self_addr_init(&self, (const struct sockaddr *)&cfg->listen_addr, cfg->listen_len) !=
        FO_OK) {
        CHECK_FAIL_("self_addr_init(%s) failed", listen);
    } else {
        run_cases(cfg, &self, cases, n);
        self_addr_free(&self);
    }
    config_unref(cfg);
}

static void test_classify_self(void)
{
    static const struct classify_case exact[] = {
        { "127.0.0.1", 18080, POLICY_SELF },
        { "::ffff:127.0.0.1", 18080, POLICY_SELF },
        { "127.0.0.1", 18081, POLICY_ALLOW }, /* same address, other port */
        { "127.0.0.1", 80, POLICY_ALLOW },
        { "127.0.0.2", 18080, POLICY_ALLOW }, /* not a wildcard */
        { "169.254.0.1", 18080, POLICY_DENY },
    };
    static const struct classify_case wildcard[] = {
        { "127.0.0.1", 18080, POLICY_SELF },
        { "127.1.2.3", 18080, POLICY_SELF }, /* all of 127/8 is this host */
        { "::ffff:127.0.0.1", 18080, POLICY_SELF },
        { "127.0.0.1", 18081, POLICY_ALLOW },
        { "8.8.8.8", 18080, POLICY_ALLOW },
    };
    static const struct classify_case wildcard6[] = {
        { "::1", 18080, POLICY_SELF },
        { "127.0.0.1", 18080, POLICY_SELF }, /* a dual-stack socket */
        { "::ffff:127.0.0.1", 18080, POLICY_SELF },
        { "::1", 18081, POLICY_ALLOW },
    };
    static const struct classify_case unix_listen[] = {
        { "127.0.0.1", 8080, POLICY_ALLOW },
        { "::1", 8080, POLICY_ALLOW },
        { "169.254.0.1", 8080, POLICY_DENY },
    };
    static const struct classify_case v6[] = {
        { "::1", 18080, POLICY_SELF },
        { "::1", 18081, POLICY_ALLOW },
        { "2001:db8::1", 18080, POLICY_ALLOW },
    };

    self_cases("127.0.0.1:18080", NULL, exact, FO_ARRAY_LEN(exact));
    /* Self is blocked even when allow covers it. */
    self_cases("127.0.0.1:18080", "127.0.0.0/8", exact, 4);
    self_cases("0.0.0.0:18080", NULL, wildcard, FO_ARRAY_LEN(wildcard));
    self_cases("[::1]:18080", NULL, v6, FO_ARRAY_LEN(v6));
    self_cases("[::]:18080", NULL, wildcard6, FO_ARRAY_LEN(wildcard6));
    /* A unix socket has no address a URL reaches: nothing is self. */
    self_cases("unix:/run/fanoutd.sock", NULL, unix_listen, FO_ARRAY_LEN(unix_listen));
}

/* With a wildcard listen, this host's own interface addresses are self too. */
static void test_classify_self_wildcard_interfaces(void)
{
    struct ifaddrs *ifa = NULL;
    struct classify_case cases[8];
    char text[8][INET_ADDRSTRLEN];
    size_t n = 0;

    if (getifaddrs(&ifa) != 0)
        return;
    for (struct ifaddrs *p = ifa; p != NULL && n < FO_ARRAY_LEN(cases); p = p->ifa_next) {
        if (p->ifa_addr == NULL || p->ifa_addr->sa_family != AF_INET)
            continue;
        const struct sockaddr_in *in = (const struct sockaddr_in *)p->ifa_addr;
        if (inet_ntop(AF_INET, &in->sin_addr, text[n], sizeof(text[n])) == NULL)
            continue;
        cases[n] = (struct classify_case){ text[n], 18080, POLICY_SELF };
        n++;
    }
    freeifaddrs(ifa);
    self_cases("0.0.0.0:18080", NULL, cases, n);
}

static void test_cidr_parse_errors(void)
{
    static const char *const bad[] = {
        "300.1.2.3/8",  "10.0.0.1/8",
        "10.0.0.0/33",  "::/129",
        "fe80::/129",   "",
        "abc",          "10.0.0.0/08",
        "10.0.0.0/",    "/8",
        "10.0.0.0/8/8", "10.0.0.0/-1",
        "10.0.0.0/ 8",  "10.0.0.0/8 ",
        "10.0.0.0/0x8", "10.0.0.0/1e1",
        "1.2.3/8",      "010.0.0.0/8",
        "0x0a.0.0.0/8", "10.0.0.0/0",
        "fe80::1/10",   "::ffff:10.0.0.1/104",
        "1.2.3.4.5",    "10.0.0.0/4294967304",
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(bad); i++) {
        struct cidr c;
        struct fo_msg msg = { "" };
        CHECK_CASE(cidr_parse(bad[i], &c, &msg) == FO_EINVAL, bad[i]);
        CHECK_CASE(msg.text[0] != '\0', bad[i]);
    }
}

static void test_cidr_parse_format(void)
{
    static const struct {
        const char *in;
        const char *out;
        int family;
    } cases[] = {
        { "10.0.0.0/8", "10.0.0.0/8", AF_INET },
        { "10.0.0.1", "10.0.0.1/32", AF_INET },
        { "10.0.0.1/32", "10.0.0.1/32", AF_INET },
        { "0.0.0.0/0", "0.0.0.0/0", AF_INET },
        { "10.128.0.0/9", "10.128.0.0/9", AF_INET },
        { "FE80::/10", "fe80::/10", AF_INET6 },
        { "2001:db8:0:0::/32", "2001:db8::/32", AF_INET6 },
        { "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1/128", AF_INET6 },
        { "::1", "::1/128", AF_INET6 },
        { "::/0", "::/0", AF_INET6 },
        { "::ffff:10.0.0.0/104", "10.0.0.0/8", AF_INET },
        { "::ffff:1.2.3.4", "1.2.3.4/32", AF_INET },
        { "::ffff:0:0/96", "0.0.0.0/0", AF_INET },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        struct cidr c;
        struct fo_msg msg = { "" };
        char text[64] = "";

        CHECK_CASE(cidr_parse(cases[i].in, &c, &msg) == FO_OK, cases[i].in);
        cidr_format(&c, text, sizeof(text));
        if (strcmp(text, cases[i].out) != 0)
            CHECK_FAIL_("cidr_format(cidr_parse(%s)) = %s, want %s", cases[i].in, text,
                        cases[i].out);
        CHECK_CASE(c.family == cases[i].family, cases[i].in);
    }
}

static void test_cidr_contains(void)
{
    static const struct {
        const char *cidr;
        const char *ip;
        int want;
    } cases[] = {
        { "10.0.0.0/8", "10.0.0.0", 1 },        { "10.0.0.0/8", "10.255.255.255", 1 },
        { "10.0.0.0/8", "11.0.0.0", 0 },        { "10.0.0.0/8", "9.255.255.255", 0 },
        { "10.0.0.0/9", "10.127.255.255", 1 },  { "10.0.0.0/9", "10.128.0.0", 0 },
        { "10.128.0.0/9", "10.128.0.0", 1 },    { "10.128.0.0/9", "10.127.255.255", 0 },
        { "1.2.3.4/32", "1.2.3.4", 1 },         { "1.2.3.4/32", "1.2.3.5", 0 },
        { "0.0.0.0/0", "255.255.255.255", 1 },  { "0.0.0.0/0", "::1", 0 },
        { "::/0", "2001:db8::1", 1 },           { "::/0", "1.2.3.4", 0 },
        { "fe80::/10", "febf::", 1 },           { "fe80::/10", "fec0::", 0 },
        { "2001:db8::/127", "2001:db8::1", 1 }, { "2001:db8::/127", "2001:db8::2", 0 },
        { "10.0.0.0/8", "::ffff:10.0.0.1", 0 }, /* raw bytes: families differ */
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        struct cidr c;
        struct fo_msg msg;
        uint8_t addr[16];
        int family = strchr(cases[i].ip, ':') ? AF_INET6 : AF_INET;

        CHECK_CASE(cidr_parse(cases[i].cidr, &c, &msg) == FO_OK, cases[i].cidr);
        CHECK_CASE(inet_pton(family, cases[i].ip, addr) == 1, cases[i].ip);
        if (cidr_contains(&c, family, addr) != cases[i].want)
            CHECK_FAIL_("cidr_contains(%s, %s) != %d", cases[i].cidr, cases[i].ip, cases[i].want);
    }
}

static void test_cidr_list(void)
{
    struct cidr_list l = { 0 }, copy = { 0 };
    struct cidr a, b;
    struct fo_msg msg;
    uint8_t ip[4] = { 192, 168, 1, 1 };

    CHECK_EQ_INT(cidr_parse("10.0.0.0/8", &a, &msg), FO_OK);
    CHECK_EQ_INT(cidr_parse("192.168.0.0/16", &b, &msg), FO_OK);
    CHECK_EQ_INT(cidr_list_add(&l, &a), FO_OK);
    CHECK_EQ_INT(cidr_list_add(&l, &b), FO_OK);
    CHECK_EQ_INT(cidr_list_add(&l, &a), FO_OK); /* a duplicate is not added */
    CHECK_EQ_INT(l.n, 2);
    CHECK_EQ_INT(cidr_list_copy(&copy, &l), FO_OK);
    CHECK_EQ_INT(copy.n, 2);
    cidr_list_free(&l);
    CHECK_EQ_INT(l.n, 0);
    CHECK(copy.n == 2 && cidr_contains(&copy.v[1], AF_INET, ip));
    cidr_list_free(&copy);
}

static const struct unit_test tests[] = {
    { "classify_defaults", test_classify_defaults },
    { "classify_allow_overrides_deny", test_classify_allow_overrides_deny },
    { "classify_self", test_classify_self },
    { "classify_self_wildcard_interfaces", test_classify_self_wildcard_interfaces },
    { "cidr_parse_errors", test_cidr_parse_errors },
    { "cidr_parse_format", test_cidr_parse_format },
    { "cidr_contains", test_cidr_contains },
    { "cidr_list", test_cidr_list },
};

UNIT_SUITE(policy_suite, "policy", tests);
