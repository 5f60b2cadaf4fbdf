/*
 * config.h - the configuration: one table row per key.
 *
 * The table (config.c) gives each key its type, default, bounds and help;
 * the file parser, the --key-name flags, --check-config, --help and the
 * sample config/fanoutd.conf all come from it.
 *
 * A struct config is immutable once built and reference counted: the daemon
 * holds the current one, every batch holds the one it started with, and a
 * SIGHUP reload builds a new one and swaps it in (server.c), so in-flight
 * work never sees values change under it.
 */
#ifndef FO_CONFIG_H
#define FO_CONFIG_H

#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>

#include "err.h"
#include "fanoutd.h"
#include "policy.h"

struct str_list {
    char **v; /* owned strings */
    size_t n;
};

/* share: one inject_header rule (a prefix and the header put there). */
/* Printed by --check-config in place of a secret given as itself (a value
 * read from a file is printed as its "@/path"); refused as a value. */
#define FO_SECRET_MASK "***"

struct inject_rule {
    char *origin; /* "scheme://host:port", lower case, port always written */
    char *path;   /* the prefix's path ("/" when it gave none) */
    char *name;   /* header name */
    char *line;   /* the whole "Name: value" line sent; a secret, never printed */
    char *prefix; /* the PREFIX as written, for --check-config */
    char *src;    /* "@/path" when the value came from a file, else NULL */
};

struct config {
    _Atomic long refs;
    unsigned long generation; /* set when installed; grows on each reload */

    char *listen;                        /* as given, "host:port" or "unix:/path" */
    struct sockaddr_storage listen_addr; /* AF_INET, AF_INET6 or AF_UNIX */
    socklen_t listen_len;
    long workers;
    long queue_capacity;
    long max_batch;
    long max_body_bytes;
    long max_response_bytes;
    long max_answer_bytes; /* bodies held for one answer, as written */
    long default_timeout_ms;
    long max_timeout_ms;
    long batch_timeout_ms;
    long max_redirects;
    struct cidr_list allow;
    struct cidr_list deny; /* the built-in defaults plus the file's */
    struct str_list forward_headers;
    char *auth_token;     /* "" when unset */
    char *auth_token_src; /* "@/path" as given, or NULL (a literal token) */
    long per_host_limit;
    long shutdown_grace_ms;
    long max_connections;
    long client_timeout_ms;
    long log_level;    /* enum log_level */
    char *loop_token;  /* this deployment's CDN-Loop token */
    size_t file_bytes; /* bytes read from the file (0: empty or none) */
    size_t file_keys;  /* settings read from the file (0: none at all) */
    long listen_mode;  /* permission bits of a unix socket (0 - 0777) */
    long reuse_port;   /* 1: SO_REUSEPORT on a TCP listening socket */

    /* share: coalescing, cache, injected headers, sensitive_headers */
    long coalesce;              /* 1: identical in-flight GET/HEAD share one fetch */
    long cache_ttl_ms;          /* 0: no cache */
    long cache_max_bytes;       /* bytes the cache may hold in all */
    struct inject_rule *inject; /* inject_header rules, owned */
    size_t ninject;
    struct str_list sensitive_headers; /* more names dropped on cross-origin redirects */
    /* Retries, circuit breaker, rate. */
    long retries;              /* retries per item by default */
    long max_retries;          /* most an item may ask for */
    long retry_backoff_ms;     /* base of the backoff */
    long retry_backoff_max_ms; /* cap on one backoff wait */
    long breaker_failures;     /* consecutive failures that open a breaker, 0: off */
    long breaker_open_ms;      /* how long it stays open */
    long per_host_rate;        /* requests per second per host:port, 0: off */
    /* streaming */
    long stream_heartbeat_ms; /* heartbeat interval of a quiet stream; 0: none */
};

/* share: the inject_header rule whose prefix is the longest that url (an
 * absolute http(s) URL: scheme://host[:port]/path?query, as fanoutd sends
 * it) starts with, compared after lower-casing scheme and host and writing
 * the default port; NULL: none. */
const struct inject_rule *config_inject_match(const struct inject_rule *rules, size_t n,
                                              const char *origin, const char *path);

/* One command-line override: --key-name VALUE (key already in file form). */
struct config_override {
    const char *key;   /* borrowed from argv or static */
    const char *value; /* borrowed */
};

/*
 * Builds a configuration: defaults, then the file (path may be NULL), then
 * the overrides in order. On error returns FO_EINVAL and msg names the file
 * and line ("fanoutd.conf:3: unknown key 'x'") or the flag. On success *out
 * holds one reference for the caller.
 */
fo_err config_build(const char *path, const struct config_override *ov, size_t nov,
                    struct config **out, struct fo_msg *msg) FO_MUST_CHECK;

/* Maps a flag name ("max-batch", without the dashes) to its key, or NULL. */
const char *config_key_for_flag(const char *flag);

struct config *config_ref(struct config *cfg);
void config_unref(struct config *cfg);

/* 1 if key (a table name, e.g. "auth_token") has different values in a and
 * b; 0 if the same or no such key. */
int config_changed(const struct config *a, const struct config *b, const char *key);

/* Every key as "key = value", one per line (lists comma-separated); the
 * auth_token as "@/path" when read from a file, "***" when given itself. */
void config_dump(const struct config *cfg, FILE *out);
/* The keys with their defaults and help, for --help and the sample file. */
void config_print_help(FILE *out);
void config_print_sample(FILE *out);

/* Parses "host:port" / "[v6]:port" / "unix:/absolute/path" into a socket
 * address (AF_UNIX for the last; the path must fit sun_path). */
fo_err config_parse_listen(const char *text, struct sockaddr_storage *ss, socklen_t *len,
                           struct fo_msg *msg) FO_MUST_CHECK;

#endif
