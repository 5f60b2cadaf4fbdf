/* err.c - fo_strerror and the message helper (see err.h). */
#include "err.h"

#include <errno.h>
#include <stdlib.h>

#include <stdio.h>

const char *fo_strerror(fo_err err)
{
    switch (err) {
    case FO_OK:
        return "success";
    case FO_ENOMEM:
        return "out of memory";
    case FO_EINVAL:
        return "invalid input";
    case FO_ETOOBIG:
        return "input too large";
    case FO_ESYS:
        return "system call failed";
    case FO_EFULL:
        return "no room left";
    case FO_ESTOPPED:
        return "shutting down";
    case FO_ENOTFOUND:
        return "not found";
    }
    return "unknown error";
}

void fo_msg_set(struct fo_msg *msg, const char *fmt, ...)
{
    va_list ap;
    size_t len, i, need;
    int n;

    if (msg == NULL)
        return;
    va_start(ap, fmt);
    /* Truncation is acceptable for a message; vsnprintf always terminates. */
    n = vsnprintf(msg->text, sizeof(msg->text), fmt, ap);
    va_end(ap);
    if (n < (int)sizeof(msg->text))
        return;
    /* Cut: end on a character boundary, so the message stays UTF-8. */
    len = sizeof(msg->text) - 1;
    for (i = len; i > 0 && len - i < 4; i--) {
        unsigned char c = (unsigned char)msg->text[i - 1];
        if ((c & 0xC0) == 0x80)
            continue; /* a continuation byte: look further back */
        need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        if (len - (i - 1) < need)
            msg->text[i - 1] = '\0';
        break;
    }
}

fo_err fo_parse_num(const char *s, long long min, long long max, long long *out)
{
    const char *digits;
    char *end = NULL;
    long long v;

    *out = 0;
    if (s == NULL)
        return FO_EINVAL;
    digits = s[0] == '-' ? s + 1 : s;
    if (*digits < '0' || *digits > '9')
        return FO_EINVAL;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (*end != '\0')
        return FO_EINVAL;
    if (errno == ERANGE || v < min || v > max) {
        *out = s[0] == '-' ? min : max;
        return FO_ETOOBIG;
    }
    *out = v;
    return FO_OK;
}
