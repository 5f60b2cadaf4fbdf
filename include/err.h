/*
 * err.h - the one error type of fanoutd.
 *
 * Functions that can fail return fo_err; FO_OK is zero. fo_strerror() gives
 * a fixed English text for logs. User-facing messages (a 400's "message",
 * a config error naming file and line) travel separately in a struct fo_msg,
 * filled by the function that knows the detail.
 */
#ifndef FO_ERR_H
#define FO_ERR_H

#include <stdarg.h>
#include <stddef.h>

typedef enum {
    FO_OK = 0,
    FO_ENOMEM,    /* allocation failed */
    FO_EINVAL,    /* bad input (the message says what) */
    FO_ETOOBIG,   /* input over a configured or built-in bound */
    FO_ESYS,      /* a system call failed (errno kept in the message) */
    FO_EFULL,     /* no room (queue capacity) */
    FO_ESTOPPED,  /* the component is shutting down */
    FO_ENOTFOUND, /* the thing asked for does not exist (a JSON Pointer names nothing) */
} fo_err;

const char *fo_strerror(fo_err err);

/* A human-readable message that goes with an error. */
#define FO_MSG_LEN 512
struct fo_msg {
    char text[FO_MSG_LEN];
};

/* Formats into msg (may be NULL: then nothing happens); truncates safely. */
void fo_msg_set(struct fo_msg *msg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * The one checked number parser (in the spirit of OpenBSD's strtonum): s
 * must be a whole decimal number, an optional '-' then digits and nothing
 * else (no white space, no '+'). FO_OK with *out set; FO_EINVAL: not such a
 * number (NULL, empty, other bytes); FO_ETOOBIG: outside [min, max]
 * (overflow included), *out then min or max, whichever side it passed.
 */
fo_err fo_parse_num(const char *s, long long min, long long max, long long *out)
    __attribute__((warn_unused_result));

#endif
