/*
 * access.c - request ids, client addresses and the access log (see access.h).
 */
#include "access.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "job.h"
#include "log.h"
#include "metrics.h"
#include "result.h"

void access_request_id(struct MHD_Connection *conn, char *out, size_t size)
{
    static const char safe[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:/+=@-";
    const char *id = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    unsigned char rnd[FO_REQUEST_ID_RANDOM];
    size_t n = id ? strlen(id) : 0;

    if (n > 0 && n < size && n <= FO_REQUEST_ID_MAX && strspn(id, safe) == n) {
        memcpy(out, id, n + 1);
        return;
    }
    if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
        /* No entropy yet (early boot): unique enough for a log, not a secret. */
        uint64_t t = (uint64_t)fo_now_us() ^ ((uint64_t)(uintptr_t)out << 16);
        for (size_t i = 0; i < sizeof(rnd); i++)
            rnd[i] = (unsigned char)(t >> (8 * (i % 8))) ^ (unsigned char)i;
    }
    for (size_t i = 0; i < sizeof(rnd) && 2 * i + 2 < size; i++)
        (void)snprintf(out + 2 * i, 3, "%02x", rnd[i]);
}

void access_client(struct MHD_Connection *conn, char *out, size_t size)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    char addr[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, addr, sizeof(addr));
        port = ntohs(in->sin_port);
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof(addr));
        port = ntohs(in6->sin6_port);
    } else if (sa != NULL && sa->sa_family == AF_UNIX) {
        (void)snprintf(out, size, "unix"); /* a unix socket's peer has no name */
        return;
    }
    (void)snprintf(out, size, "%s:%u", addr, port);
}

#define OUTCOME_NAME(e, s) [e] = s,
static const char *const outcome_names[OUT_COUNT] = { BATCH_OUTCOMES(OUTCOME_NAME) };
#undef OUTCOME_NAME

void access_log(const char *request_id, const char *client, unsigned status, size_t bytes,
                int64_t arrival_us, const struct job *job, const char *outcome)
{
    size_t items = 0, ok = 0;

    if (job != NULL) {
        items = job_items(job);
        ok = job_items_ok(job);
        if (outcome == NULL)
            outcome = outcome_names[job_outcome(job)];
    }
    if (outcome == NULL)
        outcome = "refused";
    log_info(
        "access request_id=%s client=%s status=%u items=%zu ok=%zu failed=%zu bytes=%zu "
        "duration_ms=%.1f outcome=%s",
        request_id, client, status, items, ok, items - ok, bytes,
        (double)(fo_now_us() - arrival_us) / 1000.0, outcome);
}
