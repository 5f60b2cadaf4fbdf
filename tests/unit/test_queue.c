/*
 * test_queue.c - the pure part of the queue: per_host_limit's destination
 * keys (host_key). Every spelling of one address is one key; different
 * addresses, ports or names are different keys.
 */
#include "harness.h"
#include "scheduler.h"

static void test_host_key_spellings(void)
{
    static const struct {
        const char *in, *want; /* want NULL: refused (0) */
    } cases[] = {
        /* IPv4 in every inet_aton form */
        { "127.0.0.1:80", "127.0.0.1:80" },
        { "127.1:80", "127.0.0.1:80" },
        { "127.0.1:80", "127.0.0.1:80" },
        { "0x7f000001:80", "127.0.0.1:80" },
        { "0X7F000001:80", "127.0.0.1:80" },
        { "2130706433:80", "127.0.0.1:80" },
        { "0177.0.0.1:80", "127.0.0.1:80" },
        { "0x7f.1:80", "127.0.0.1:80" },
        { "127.0.0.1.:80", "127.0.0.1:80" },
        { "127.1.:80", "127.0.0.1:80" },
        /* IPv6, and IPv4-mapped IPv6 as IPv4 */
        { "[::1]:80", "[::1]:80" },
        { "[0:0:0:0:0:0:0:1]:80", "[::1]:80" },
        { "[::ffff:127.0.0.1]:80", "127.0.0.1:80" },
        { "[::FFFF:7f00:1]:80", "127.0.0.1:80" },
        { "[2001:DB8::0001]:443", "[2001:db8::1]:443" },
        { "[fe80::1%25eth0]:80", "[fe80::1%25eth0]:80" },
        /* names: case and one trailing dot; localhost is loopback */
        { "Example.COM:80", "example.com:80" },
        { "example.com.:80", "example.com:80" },
        { "localhost:80", "127.0.0.1:80" },
        { "LOCALHOST:80", "127.0.0.1:80" },
        { "localhost.:80", "127.0.0.1:80" },
        { "a.LocalHost:80", "127.0.0.1:80" },
        { "notlocalhost:80", "notlocalhost:80" },
        { "dead.beef:80", "dead.beef:80" }, /* hex letters, but a name */
        { "1.2.3.4.5:80", "1.2.3.4.5:80" }, /* not an address: a name */
        { "256.0.0.1:80", "256.0.0.1:80" },
        /* the port stays apart */
        { "127.1:8080", "127.0.0.1:8080" },
        /* malformed */
        { "noport", NULL },
        { ":80", NULL },
    };
    char out[128];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = host_key(cases[i].in, out, sizeof(out));
        if (cases[i].want == NULL) {
            if (n != 0)
                CHECK_FAIL_("host_key(\"%s\") = \"%s\", want refused", cases[i].in, out);
            continue;
        }
        if (n == 0 || strcmp(out, cases[i].want) != 0 || n != strlen(out))
            CHECK_FAIL_("host_key(\"%s\") = \"%s\" (%zu), want \"%s\"", cases[i].in, n ? out : "",
                        n, cases[i].want);
    }
}

static void test_host_key_fits(void)
{
    char out[16];

    CHECK_EQ_INT(host_key("127.1:80", out, sizeof(out)), 12);
    CHECK_STR(out, "127.0.0.1:80");
    CHECK_EQ_INT(host_key("a-long-host-name.example:80", out, sizeof(out)), 0);
    CHECK_EQ_INT(host_key("127.0.0.1:65535", out, 15), 0); /* NUL does not fit */
    CHECK_EQ_INT(host_key("127.0.0.1:65535", out, 16), 15);
}

static const struct unit_test tests[] = {
    { "host_key_spellings", test_host_key_spellings },
    { "host_key_fits", test_host_key_fits },
};

UNIT_SUITE(queue_suite, "queue", tests);
