/* util.c - clock helpers (see fanoutd.h). */
#include "fanoutd.h"

#include <string.h>
#include <strings.h>
#include <time.h>

int64_t fo_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t fo_now_ms(void)
{
    return fo_now_us() / 1000;
}

int fo_header_not_forwardable(const char *name)
{
    static const char *const names[] = {
        "Connection",        "Keep-Alive", "Proxy-Connection", "TE",   "Trailer",
        "Transfer-Encoding", "Upgrade",    "Content-Length",   "Host", "Expect",
        "CDN-Loop",
    };
    size_t n = strcspn(name, ":;");

    for (size_t i = 0; i < FO_ARRAY_LEN(names); i++) {
        if (strlen(names[i]) == n && strncasecmp(name, names[i], n) == 0)
            return 1;
    }
    return 0;
}
