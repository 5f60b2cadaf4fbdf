/*
 * compose_item.h - what an item with v2 composition fields carries
 * (struct item_req's `compose`): its dependencies, run_if, the
 * templates of its url, header values and body, select, group and
 * response_headers. Parsed and checked by batch.c; used by compose.c
 * (run time) and result.c (answers). Data only: no batch or result types.
 */
#ifndef FO_COMPOSE_ITEM_H
#define FO_COMPOSE_ITEM_H

#include <stddef.h>

#include "err.h"
#include "template.h"

enum select_kind { SELECT_NONE = 0, SELECT_POINTER, SELECT_OBJECT };

/* An item's composition fields (struct item_req's `compose`), all owned. */
struct compose_item {
    size_t *deps; /* indices of the items in depends_on (no repeats) */
    size_t ndeps;
    char **dep_names; /* depends_on as given, until the batch's ids are known */
    size_t ndep_names;
    int run_always;  /* run_if "always" */
    int has_deps;    /* depends_on given (even empty): url, headers, body are templates */
    struct tpl url;  /* the url's template (has_deps) */
    struct tpl *hdr; /* per item header: its value's template (has_deps), nhdr of them */
    size_t nhdr;
    struct tpl body; /* the body's template (has_deps and a body) */

    enum select_kind select;
    char *select_ptr;             /* SELECT_POINTER */
    char **sel_names, **sel_ptrs; /* SELECT_OBJECT: nsel pairs */
    size_t nsel;
    char *group;         /* NULL: none */
    char **resp_headers; /* response_headers, lower case, no repeats */
    size_t nresp;
    int has_resp; /* response_headers given (RESULT gets `headers`) */
    char **keep;  /* resp_headers and the names dependants' references read */
    size_t nkeep;
};

void compose_item_free(struct compose_item *c);

/* Adds a name to `response_headers` (RESULT shows it; also kept by the
 * fetch), lower-cased, no repeats; sets has_resp. For the item's own field
 * and for a batch's defaults (an item without composition fields gets a
 * zeroed struct compose_item first). FO_ENOMEM. */
fo_err compose_response_header(struct compose_item *c, const char *name) FO_MUST_CHECK;

/* Adds a name to the headers the fetch keeps (a dependant's reference
 * reads it) without showing it in RESULT. FO_ENOMEM. */
fo_err compose_keep_header(struct compose_item *c, const char *name) FO_MUST_CHECK;

#endif
