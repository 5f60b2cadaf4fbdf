/*
 * compose_item.c - freeing an item's composition fields (compose_item.h).
 */
#include "compose_item.h"

#include <stdlib.h>

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        free(v[i]);
    free(v);
}

void compose_item_free(struct compose_item *c)
{
    if (c == NULL)
        return;
    free(c->deps);
    strv_free(c->dep_names, c->ndep_names);
    tpl_free(&c->url);
    for (size_t i = 0; c->hdr != NULL && i < c->nhdr; i++)
        tpl_free(&c->hdr[i]);
    free(c->hdr);
    tpl_free(&c->body);
    free(c->select_ptr);
    strv_free(c->sel_names, c->nsel);
    strv_free(c->sel_ptrs, c->nsel);
    free(c->group);
    strv_free(c->resp_headers, c->nresp);
    strv_free(c->keep, c->nkeep);
    free(c);
}
