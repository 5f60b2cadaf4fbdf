/* outcome.c - the table of refusals (see outcome.h). */
#include "outcome.h"

const char *const outcome_hdr_retry[] = { "Retry-After", FO_RETRY_AFTER, NULL };
const char *const outcome_hdr_close[] = { "Connection", "close", NULL };
const char *const outcome_hdr_auth[] = { "WWW-Authenticate", "Bearer", NULL };

#define REFUSAL_ROW(e, status, code, hdrs, word, metric) \
    [e] = { status, code, hdrs, word, metric },
static const struct refusal_row rows[REFUSE_COUNT] = { REFUSALS(REFUSAL_ROW) };
#undef REFUSAL_ROW

const struct refusal_row *refusal_row(enum refusal r)
{
    return &rows[r < REFUSE_COUNT ? r : REFUSE_INTERNAL];
}

enum refusal refusal_of_malformed(unsigned status)
{
    switch (status) {
    case 414:
        return REFUSE_URI_TOO_LONG;
    case 431:
        return REFUSE_HEADERS_TOO_LARGE;
    case 501:
        return REFUSE_NOT_IMPLEMENTED;
    case 505:
        return REFUSE_BAD_VERSION;
    default:
        return REFUSE_MALFORMED;
    }
}
