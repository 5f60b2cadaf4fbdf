/*
 * access.h - who asked, and what they got: request ids, client addresses
 * and the access log (one logfmt line per batch request).
 */
#ifndef FO_ACCESS_H
#define FO_ACCESS_H

#include <arpa/inet.h>
#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>

#include "fanoutd.h"

struct job;

#define ACCESS_ID_SIZE     (FO_REQUEST_ID_MAX + 1)
#define ACCESS_CLIENT_SIZE (INET6_ADDRSTRLEN + 8)

/* The client's X-Request-Id when it is 1-128 characters of
 * [A-Za-z0-9._:/+=@-] (safe in a header and a log line), otherwise 32
 * random hex digits. out has ACCESS_ID_SIZE bytes. */
void access_request_id(struct MHD_Connection *conn, char *out, size_t size);

/* "address:port" of the client; out has ACCESS_CLIENT_SIZE bytes. */
void access_client(struct MHD_Connection *conn, char *out, size_t size);

/* The access line of one batch request; job is NULL when it was refused.
 * bytes: of the answer's body actually sent. outcome: how the exchange
 * ended when not as the batch did ("client_gone": the client went away
 * while its answer was sent; "shutdown": the connection was closed by the
 * shutdown), or NULL: the batch's own outcome (job_outcome), "refused"
 * without a job. */
void access_log(const char *request_id, const char *client, unsigned status, size_t bytes,
                int64_t arrival_us, const struct job *job, const char *outcome);

#endif
