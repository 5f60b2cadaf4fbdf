/*
 * compose_item.c - freeing an item's composition fields (compose_item.h).
 */
#include "compose_item.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

/* Adds a lower-case header name to a list (no repeats). */
static fo_err name_list_add(char ***list, size_t *n, const char *name)
{
    char **l, *low;

    for (size_t i = 0; i < *n; i++) {
        if (strcasecmp((*list)[i], name) == 0)
            return FO_OK;
    }
    if ((low = strdup(name)) == NULL)
        return FO_ENOMEM;
    for (char *p = low; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if ((l = realloc(*list, (*n + 1) * sizeof(*l))) == NULL) {
        free(low);
        return FO_ENOMEM;
    }
    l[(*n)++] = low;
    *list = l;
    return FO_OK;
}

fo_err compose_keep_header(struct compose_item *c, const char *name)
{
    return name_list_add(&c->keep, &c->nkeep, name);
}

fo_err compose_response_header(struct compose_item *c, const char *name)
{
    fo_err err = name_list_add(&c->resp_headers, &c->nresp, name);

    c->has_resp = 1;
    return err != FO_OK ? err : compose_keep_header(c, name);
}
