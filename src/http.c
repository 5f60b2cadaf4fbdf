/*
 * http.c - request methods (see http.h).
 */
#include "http.h"

#include <strings.h>

#include "fanoutd.h"

/* A constant table: read by any thread without a lock. */
static const char *const method_names[] = {
    [M_GET] = "GET",     [M_HEAD] = "HEAD",     [M_POST] = "POST",       [M_PUT] = "PUT",
    [M_PATCH] = "PATCH", [M_DELETE] = "DELETE", [M_OPTIONS] = "OPTIONS",
};

const char *http_method_name(enum http_method m)
{
    return method_names[m];
}

int http_method_parse(const char *text, enum http_method *out)
{
    for (size_t i = 0; i < FO_ARRAY_LEN(method_names); i++) {
        if (strcasecmp(text, method_names[i]) == 0) {
            *out = (enum http_method)i;
            return 1;
        }
    }
    return 0;
}
