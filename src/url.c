/*
 * url.c - URLs, on libcurl's URL API and libidn2 (see url.h).
 */
#include "url.h"

#include <ctype.h>
#include <curl/curl.h>
#include <idn2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "encode.h"
#include "fanoutd.h"

#define CLIP(s, max) utf8_clip((s), (max)), (s)

/* One "xn--" label of n bytes: 1 when it is a valid A-label (it decodes to a
 * U-label that converts back to the same label), 0 when not, -1 for want of
 * memory. */
static int a_label_valid(const char *label, size_t n)
{
    char ascii[64], *u = NULL, *back = NULL;
    int rc, ok;

    if (n >= sizeof(ascii))
        return 0; /* longer than a DNS label */
    for (size_t i = 0; i < n; i++)
        ascii[i] = (char)tolower((unsigned char)label[i]);
    ascii[n] = '\0';
    rc = idn2_to_unicode_8z8z(ascii, &u, 0);
    if (rc == IDN2_MALLOC)
        return -1;
    if (rc != IDN2_OK)
        return 0;
    rc = idn2_to_ascii_8z(u, &back, IDN2_NONTRANSITIONAL);
    if (rc != IDN2_OK && rc != IDN2_MALLOC) /* as url_host_to_ascii: IDNA2003 names too */
        rc = idn2_to_ascii_8z(u, &back, IDN2_TRANSITIONAL);
    ok = rc == IDN2_MALLOC ? -1 : rc == IDN2_OK && strcmp(back, ascii) == 0;
    idn2_free(u);
    idn2_free(back);
    return ok;
}

/* FO_EINVAL when a label of the ASCII name starts "xn--" (any case) and is
 * not a valid A-label ("xn--zz", "xn--a", "xn--"): DNS would be asked for a
 * name no IDN can have. */
static fo_err a_labels_check(const char *name)
{
    for (const char *p = name; *p != '\0';) {
        size_t n = strcspn(p, ".");
        if (n >= 4 && strncasecmp(p, "xn--", 4) == 0) {
            int ok = a_label_valid(p, n);
            if (ok <= 0)
                return ok < 0 ? FO_ENOMEM : FO_EINVAL;
        }
        p += n;
        if (*p == '.')
            p++;
    }
    return FO_OK;
}

fo_err url_host_to_ascii(const char *host, char **ace)
{
    char *out = NULL;
    fo_err err;
    int rc;

    *ace = NULL;
    for (const unsigned char *p = (const unsigned char *)host; *p < 0x80; p++) {
        if (*p == '\0')
            return a_labels_check(host); /* plain ASCII: used as written */
    }
    /* What libcurl itself does (lib/idn.c), minus the locale: IDNA2008
     * with TR46 mapping (which also lowercases), falling back to the
     * transitional mapping for names only IDNA2003 accepted. */
    rc = idn2_to_ascii_8z(host, &out, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
    if (rc != IDN2_OK && rc != IDN2_MALLOC)
        rc = idn2_to_ascii_8z(host, &out, IDN2_TRANSITIONAL);
    if (rc == IDN2_MALLOC)
        return FO_ENOMEM;
    if (rc != IDN2_OK)
        return FO_EINVAL;
    if ((err = a_labels_check(out)) != FO_OK) { /* an "xn--" label written as such */
        idn2_free(out);
        return err;
    }
    *ace = strdup(out); /* the caller frees with free(), not idn2_free() */
    idn2_free(out);
    return *ace != NULL ? FO_OK : FO_ENOMEM;
}
fo_err url_check(const char *url, char **hostkey, struct fo_msg *msg)
{
    CURLU *h = NULL;
    char *scheme = NULL, *host = NULL, *port = NULL, *ace = NULL;
    size_t len = strlen(url);
    fo_err err = FO_EINVAL;

    if (len == 0) {
        fo_msg_set(msg, "the URL is empty");
        goto out;
    }
    if (len > FO_MAX_URL_LEN) {
        fo_msg_set(msg, "the URL is longer than %d bytes", FO_MAX_URL_LEN);
        goto out;
    }
    for (const unsigned char *p = (const unsigned char *)url; *p; p++) {
        if (*p <= 0x20 || *p == 0x7f) {
            fo_msg_set(msg, "URL '%.*s' contains white space or a control character",
                       CLIP(url, 200));
            goto out;
        }
    }
    /* curl is lenient ("http:///x" becomes host x): demand scheme://authority. */
    const char *sep = strstr(url, "://");
    if (sep == NULL || sep[3] == '/' || sep[3] == '\\' || sep[3] == '\0') {
        fo_msg_set(msg, "'%.*s' is not an absolute http or https URL", CLIP(url, 200));
        goto out;
    }
    if ((h = curl_url()) == NULL) {
        err = FO_ENOMEM;
        goto out;
    }
    if (curl_url_set(h, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        fo_msg_set(msg, "'%.*s' is not an absolute http or https URL", CLIP(url, 200));
        goto out;
    }
    if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) {
        fo_msg_set(msg, "URL '%.*s' is not http or https", CLIP(url, 200));
        goto out;
    }
    if (curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0') {
        fo_msg_set(msg, "URL '%.*s' has no host", CLIP(url, 200));
        goto out;
    }
    if (curl_url_get(h, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        fo_msg_set(msg, "URL '%.*s' has no valid port", CLIP(url, 200));
        goto out;
    }
    err = FO_OK;
    if (hostkey != NULL) {
        /* An internationalised name counts as its A-label, the host it is
         * fetched from; one that does not convert fails when fetched. */
        if (url_host_to_ascii(host, &ace) == FO_ENOMEM) {
            err = FO_ENOMEM;
            goto out;
        }
        const char *name = ace != NULL ? ace : host;
        size_t n = strlen(name) + strlen(port) + 2;
        if ((*hostkey = malloc(n)) == NULL)
            err = FO_ENOMEM;
        else
            (void)snprintf(*hostkey, n, "%s:%s", name, port);
    }
out:
    free(ace);
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(h);
    return err;
}
fo_err url_ascii_host(struct Curl_URL *u, struct fo_msg *why)
{
    char *host = NULL, *ace = NULL;
    fo_err err = FO_EINVAL;

    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        fo_msg_set(why, "the URL has no host");
        goto out;
    }
    err = url_host_to_ascii(host, &ace);
    if (err == FO_EINVAL)
        fo_msg_set(why, "'%.*s' is not a valid internationalised domain name", CLIP(host, 200));
    if (err == FO_OK && ace != NULL && curl_url_set(u, CURLUPART_HOST, ace, 0) != CURLUE_OK) {
        fo_msg_set(why, "'%.*s' is not a usable host name", CLIP(ace, 200));
        err = FO_EINVAL;
    }
out:
    curl_free(host);
    free(ace);
    return err;
}

fo_err url_origin(struct Curl_URL *u, char **origin)
{
    char *scheme = NULL, *host = NULL, *port = NULL;
    fo_err err = FO_ENOMEM;

    *origin = NULL;
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
        goto out;
    size_t n = strlen(scheme) + strlen(host) + strlen(port) + 5;
    if ((*origin = malloc(n)) == NULL)
        goto out;
    (void)snprintf(*origin, n, "%s://%s:%s", scheme, host, port);
    for (char *p = *origin; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    err = FO_OK;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    return err;
}

fo_err url_origin_path(struct Curl_URL *u, char **origin, char **path)
{
    char *p = NULL, *query = NULL;
    fo_err err = FO_ENOMEM;

    *path = NULL;
    if (url_origin(u, origin) != FO_OK || curl_url_get(u, CURLUPART_PATH, &p, 0) != CURLUE_OK)
        goto out;
    CURLUcode qc = curl_url_get(u, CURLUPART_QUERY, &query, 0);
    if (qc != CURLUE_OK && qc != CURLUE_NO_QUERY)
        goto out;
    size_t n = strlen(p) + (query ? strlen(query) : 0) + 2;
    if ((*path = malloc(n)) == NULL)
        goto out;
    (void)snprintf(*path, n, "%s%s%s", p, query ? "?" : "", query ? query : "");
    err = FO_OK;
out:
    if (err != FO_OK)
        FO_FREE(*origin);
    curl_free(p);
    curl_free(query);
    return err;
}

fo_err url_prefix(const char *prefix, char **origin, char **path, struct fo_msg *msg)
{
    CURLU *u = curl_url();
    char *part = NULL;
    fo_err err = FO_EINVAL;

    *origin = *path = NULL;
    if (u == NULL)
        return FO_ENOMEM;
    if ((err = url_check(prefix, NULL, msg)) == FO_ENOMEM)
        goto out;
    if (err != FO_OK)
        goto bad;
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, prefix, 0);
    if (uc == CURLUE_OUT_OF_MEMORY) {
        err = FO_ENOMEM;
        goto out;
    }
    /* userinfo would never match a fetched URL's origin; a fragment is
     * never sent, so no request path would ever carry it. */
    if (uc != CURLUE_OK || curl_url_get(u, CURLUPART_USER, &part, 0) != CURLUE_NO_USER ||
        curl_url_get(u, CURLUPART_FRAGMENT, &part, 0) != CURLUE_NO_FRAGMENT)
        goto bad;
    /* An internationalised host counts as its A-label, as it is fetched. */
    if ((err = url_ascii_host(u, msg)) == FO_ENOMEM)
        goto out;
    if (err != FO_OK)
        goto bad;
    err = url_origin_path(u, origin, path);
    goto out;
bad:
    fo_msg_set(msg, "'%.*s' is not a prefix such as https://api.example.com/v1/",
               CLIP(prefix, 200));
    err = FO_EINVAL;
out:
    curl_free(part);
    curl_url_cleanup(u);
    return err;
}
