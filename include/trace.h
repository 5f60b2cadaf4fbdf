/*
 * trace.h - W3C Trace Context (traceparent) for the upstream requests of
 * a batch: the client's traceparent is checked once when the batch
 * arrives, and each item's requests carry a child of it (same trace-id and
 * flags, a new random span id of its own).
 */
#ifndef FO_TRACE_H
#define FO_TRACE_H

#include <stddef.h>

/* "00-" 32 hex "-" 16 hex "-" 2 hex, and its NUL. */
#define TRACE_PARENT_LEN 55
/* "traceparent: " and a value, and its NUL. */
#define TRACE_LINE_SIZE  (13 + TRACE_PARENT_LEN + 1)

/*
 * Whether value is a valid traceparent (W3C Trace Context, level 1):
 * version-traceid-parentid-flags in lowercase hex; version ff invalid;
 * version 00 exactly 55 characters; a higher version at least 55, with a
 * '-' after the flags if longer; an all-zero trace-id or parent-id
 * invalid. On 1, out (TRACE_PARENT_LEN + 1 bytes) holds the value as
 * version 00 ("00-TRACEID-PARENTID-FLAGS"), the only one fanoutd sends.
 * NULL value: 0.
 */
int trace_parse(const char *value, char *out);

/*
 * Writes into line (TRACE_LINE_SIZE bytes) "traceparent: 00-TRACEID-SPAN-FLAGS"
 * for parent (as trace_parse wrote it), with a new random non-zero span id
 * (getrandom).
 */
void trace_child_line(const char *parent, char *line);

#endif
