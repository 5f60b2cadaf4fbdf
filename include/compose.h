/*
 * compose.h - composition: what an item with depends_on,
 * run_if, references, select, group or response_headers carries, and the
 * two steps that act on it while the batch runs:
 *
 *   compose_prepare - when the item is about to run (in its worker): the
 *                     run_if check and the references resolved against the
 *                     finished results of its dependencies;
 *   compose_select  - right after its fetch: `select` cuts an ok item's
 *                     body down (before anything is kept, merged or streamed).
 *
 * Upstream bodies are walked with jtree only (numbers keep their spelling).
 */
#ifndef FO_COMPOSE_H
#define FO_COMPOSE_H

#include <stddef.h>

#include "batch.h"
#include "compose_item.h"
#include "result.h"
#include "template.h"

/* An item's request after its references were resolved (owned strings). */
struct compose_run {
    char *url;      /* NULL: the item's own */
    char **headers; /* NULL: the item's own; else nheaders "Name: value" lines */
    size_t nheaders;
    char *body; /* NULL: the item's own */
    size_t body_len;
};

void compose_run_free(struct compose_run *r);

/*
 * Before item i runs: a dependency ended by the batch deadline fails *res
 * deadline_exceeded; with run_if success and a dependency not ok, fails
 * *res with failed_dependency (naming it); then resolves its templates
 * against res_of[dep] (finished results) into *run; a reference that
 * cannot be resolved, or a header value holding CR/LF/NUL, fails *res with
 * failed_dependency; a substituted url that is not absolute http(s) fails
 * it invalid_url (so does one longer than FO_MAX_URL_LEN); a header value
 * longer than FO_MAX_HEADER_LEN, or a body longer than max_body bytes, once
 * substituted, fails it failed_dependency. Returns 1 when the item is to be fetched (with *run), 0
 * when *res holds its failure, -1 out of memory.
 */
int compose_prepare(const struct batch_req *req, size_t i, const struct result *res_of,
                    size_t max_body, struct compose_run *run, struct result *res);

/* Applies item it's select to an ok result: the body becomes the selection,
 * or the item fails select_failed (status kept, no body). */
void compose_select(const struct item_req *it, struct result *res);

#endif
