/*
 * url.h - everything fanoutd knows about URLs, on libcurl's URL API
 * (CURLU): which URLs may be fetched, a URL's host key and origin, the
 * IDNA A-label of a host, and the prefix of an inject_header rule.
 *
 * Owns nothing; every string it returns belongs to the caller (free()).
 * Callers that hold a parsed URL pass it as a struct Curl_URL * (libcurl's
 * CURLU), so that this header does not bring curl.h to them.
 */
#ifndef FO_URL_H
#define FO_URL_H

#include "err.h"
#include "fanoutd.h"

struct Curl_URL; /* libcurl's CURLU */

/*
 * Checks that url is an absolute http(s) URL with a host, no white space
 * or control byte, at most FO_MAX_URL_LEN bytes; fills *hostkey with
 * "host:port" (default port written; an internationalised host as its
 * A-label) when hostkey is not NULL. FO_EINVAL with msg saying why;
 * FO_ENOMEM.
 */
fo_err url_check(const char *url, char **hostkey, struct fo_msg *msg) FO_MUST_CHECK;

/*
 * A URL's host as DNS is asked for it: a name with any byte >= 0x80 (read as
 * UTF-8) becomes its IDNA A-label ("bücher.example" -> "xn--bcher-kva.example"),
 * by libidn2 directly: libcurl would convert it through the process locale,
 * which fanoutd never sets. *ace is NULL when host is plain ASCII (use it as
 * written), else a new string the caller frees. FO_EINVAL: not a valid
 * internationalised name, or a label starting "xn--" that is not a valid
 * A-label (in an ASCII name too); FO_ENOMEM.
 */
fo_err url_host_to_ascii(const char *host, char **ace) FO_MUST_CHECK;

/* Puts the parsed URL's host in the form DNS is asked for (its IDNA A-label,
 * url_host_to_ascii). FO_EINVAL with why set: no host, or not a valid or
 * usable internationalised name; FO_ENOMEM. */
fo_err url_ascii_host(struct Curl_URL *u, struct fo_msg *why) FO_MUST_CHECK;

/* The origin of a parsed URL (RFC 6454): "scheme://host:port", lower
 * case, the default port written. FO_ENOMEM (or a URL without a host). */
fo_err url_origin(struct Curl_URL *u, char **origin) FO_MUST_CHECK;

/* The origin of u and its path with the query ("/v1/x?a=b"), as an
 * inject_header rule matches them. FO_ENOMEM. */
fo_err url_origin_path(struct Curl_URL *u, char **origin, char **path) FO_MUST_CHECK;

/*
 * An inject_header PREFIX ("https://api.example.com/v1/") as the origin and
 * path that url_origin_path gives for the URLs under it (path "/" when it
 * has none). FO_EINVAL with msg set when prefix is not an http(s) URL with
 * a host and no userinfo or fragment; FO_ENOMEM.
 */
fo_err url_prefix(const char *prefix, char **origin, char **path,
                  struct fo_msg *msg) FO_MUST_CHECK;

#endif
