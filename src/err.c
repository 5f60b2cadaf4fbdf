/* err.c - fo_strerror and the message helper (see err.h). */
#include "err.h"

#include <stdio.h>

const char *fo_strerror(fo_err err)
{
    switch (err) {
    case FO_OK:        return "success";
    case FO_ENOMEM:    return "out of memory";
    case FO_EINVAL:    return "invalid input";
    case FO_ETOOBIG:   return "input too large";
    case FO_ESYS:      return "system call failed";
    case FO_EFULL:     return "no room left";
    case FO_ESTOPPED:  return "shutting down";
    case FO_ENOTFOUND: return "not found";
    }
    return "unknown error";
}

void fo_msg_set(struct fo_msg *msg, const char *fmt, ...)
{
    va_list ap;

    if (msg == NULL)
        return;
    va_start(ap, fmt);
    /* Truncation is acceptable for a message; vsnprintf always terminates. */
    (void)vsnprintf(msg->text, sizeof(msg->text), fmt, ap);
    va_end(ap);
}
