#!/usr/bin/env python3
"""tests/fuzz/seeds.py - writes the seed corpora in tests/fuzz/corpus/<target>/.

The seeds are checked in; this script only documents and regenerates them
(python3 tests/fuzz/seeds.py). Each seed is a small meaningful input:
request forms of CONTRACT.md, config files, CIDRs, upstream bodies.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- fuzz_batch_json: the JSON forms of POST /batch -------------------------
J = "fuzz_batch_json"
write(J, "array_of_strings", '["http://a.example/x", "https://b.example:8443/y?q=1"]')
write(J, "mixed_array", '["http://a/x", {"url": "http://b/y", "id": "bee"}, {"url": "http://c/z"}, "https://d/"]')
write(J, "object_form_deep", '{"requests": ["http://a/", {"url": "http://b/"}], "timeout_ms": 2500, "merge": "deep"}')
write(J, "object_form_bodies", '{"merge": "bodies", "requests": [{"url": "http://a/1", "id": "one"}]}')
write(J, "item_every_field",
      '[{"id": "x1", "url": "http://a/p", "method": "post", "headers": {"X-A": "1", "Accept": "application/json"},'
      ' "body": "raw text", "timeout_ms": 1500},'
      ' {"url": "http://a/q", "method": "PUT", "body": {"k": [1, 2], "s": "v"},'
      ' "headers": {"content-type": "application/merge-patch+json", "X-Empty": ""}},'
      ' {"url": "http://a/r", "method": "DELETE", "body": null},'
      ' {"url": "http://a/s", "method": "PATCH", "body": 5},'
      ' {"url": "http://a/t", "method": "HEAD"}, {"url": "http://a/u", "method": "options"}]')
write(J, "duplicate_default_id", '[{"url": "http://a/", "id": "1"}, "http://b/"]')
write(J, "unicode_ids_and_nul_body",
      '[{"url": "http://a/", "id": "caf\\u00e9 \\ud83d\\ude00", "method": "POST", "body": "a\\u0000b"}]')
write(J, "header_crlf_refused", '[{"url": "http://a/", "headers": {"X": "v\\r\\nEvil: 1"}}]')
write(J, "too_many_items", "[" + ", ".join('"http://h%d/"' % i for i in range(17)) + "]")
write(J, "url_shapes",
      '["http://user:pw@[::1]:8080/p?q#f", "https://xn--caf-dma.example/%41", "HTTP://UPPER.EXAMPLE:80/",'
      ' "http://127.0.0.1:1/", "http://0x7f.1/", "http://a.example:65535/"]')
write(J, "bad_urls", '["ftp://a/", "http:///x", "//a/x", "http://a b/", "file:///etc/passwd"]')
write(J, "timeouts", '{"requests": [{"url": "http://a/", "timeout_ms": 1000.0}, {"url": "http://b/", "timeout_ms": 99999999999999}], "timeout_ms": 1e3}')
write(J, "duplicate_keys", '{"requests": ["http://a/"], "requests": ["http://b/"]}')

# ---- fuzz_batch_plain: plain lists --------------------------------------------
P = "fuzz_batch_plain"
write(P, "two_lines", "http://a.example/x\nhttps://b.example:8443/y?q=1\n")
write(P, "comments_and_blanks",
      "# the list\n\nhttp://a/1\n   # indented comment http://not/a/url\nhttp://b/2 http://c/3\n\t\n")
write(P, "crlf_and_tabs", "http://a/1\r\n\thttp://b/2\r\n\r\n  http://c/3\f\vhttp://d/4")
write(P, "hash_mid_line", "http://a/x #not-a-comment\n")
write(P, "too_many", "".join("http://h%d.example/\n" % i for i in range(17)))
write(P, "not_http", "http://a/\nftp://b/\n")
write(P, "invalid_utf8", b"http://a/\xff\xfe\n")
write(P, "utf8_url", "http://caf\u00e9.example/\u00e9\n")
write(P, "only_comments", "# nothing\n#\n")

# ---- fuzz_config: configuration files -------------------------------------
C = "fuzz_config"
with open(os.path.join(HERE, "..", "..", "config", "fanoutd.conf"), "rb") as f:
    write(C, "sample_every_key", f.read())
write(C, "every_key_set",
      "listen = [::1]:9090\nworkers = 8\nqueue_capacity = 100\nmax_batch = 50\n"
      "max_body_bytes = 65536\nmax_response_bytes = 1024\ndefault_timeout_ms = 500\n"
      "max_timeout_ms = 2000\nbatch_timeout_ms = 1500\nmax_redirects = 0\n"
      "allow = 10.0.0.0/8, fd00::/8, 169.254.169.254\ndeny = 192.168.0.0/16,2001:db8::/32\n"
      "forward_headers = X-Request-Id, Authorization\nauth_token = s3cr3t#1\nper_host_limit = 4\n"
      "shutdown_grace_ms = 0\nmax_connections = 10\nclient_timeout_ms = 0\nlog_level = debug\n")
write(C, "comments_and_spaces",
      "# comment\n   \n\tworkers=3   # trailing comment\nlisten =localhost:8081\r\nlog_level = warn\n")
write(C, "empty_lists", "allow =\ndeny =\nforward_headers =\nauth_token =\n")
write(C, "unknown_key", "workers = 4\nno_such_key = 1\n")
write(C, "duplicate_key", "workers = 4\nworkers = 5\n")
write(C, "bad_values", "max_batch = 0x10\n")
write(C, "out_of_range", "max_redirects = 51\n")
write(C, "mapped_cidrs", "deny = ::ffff:10.0.0.0/104, 64:ff9b::/96, 2002::/16\n")
write(C, "no_equals", "workers 4\n")
write(C, "listen_v6_wildcard", "listen = [::]:8080\n")

# ---- fuzz_cidr: 20-byte header (address, flags, port) + CIDR lines --------
R = "fuzz_cidr"


def hdr(addr, flags, port):
    import ipaddress
    a = ipaddress.ip_address(addr).packed
    if len(a) == 4:
        flags |= 1
    return a.ljust(16, b"\0") + bytes([flags]) + struct.pack(">H", port) + b"\0"


defaults = "169.254.0.0/16\nfe80::/10\n0.0.0.0/8\n224.0.0.0/4\nff00::/8\n255.255.255.255/32\n"
write(R, "text_defaults", defaults)
write(R, "link_local_v4", hdr("169.254.169.254", 0, 80) + b"-10.0.0.0/8\n")
write(R, "link_local_allowed", hdr("169.254.169.254", 0, 80) + b"+169.254.169.254/32\n")
write(R, "mapped_link_local", hdr("::ffff:169.254.1.1", 0, 443) + b"+::ffff:10.0.0.0/104\n")
write(R, "fe80", hdr("fe80::1", 0, 80) + b"fe80::/10\n")
write(R, "multicast_v6", hdr("ff02::1", 0, 80) + b"ff00::/8\n")
write(R, "broadcast", hdr("255.255.255.255", 0, 80) + b"255.255.255.255\n")
write(R, "zero_net", hdr("0.0.0.0", 2, 8080) + b"0.0.0.0/8\n")
write(R, "nat64", hdr("64:ff9b::a9fe:0101", 0, 80) + b"+64:ff9b::/96\n")
write(R, "sixtofour", hdr("2002:a9fe:0101::1", 0, 80) + b"2002::/16\n")
write(R, "v4_compat", hdr("::169.254.1.1", 0, 80) + b"::/96\n")
write(R, "self_exact", hdr("10.1.2.3", 4, 8080) + b"+10.0.0.0/8\n")
write(R, "self_other_port", hdr("2001:db8::5", 4 | 8, 8080) + b"+2001:db8::/32\n")
write(R, "wildcard_self_loopback", hdr("127.0.0.1", 2, 8080) + b"\n")
write(R, "private_ranges", hdr("192.168.1.1", 0, 80) +
      b"-192.168.0.0/16\n+192.168.1.0/24\n10.0.0.0/8\n172.16.0.0/12\nfc00::/7\n::1\n127.0.0.0/8\n")
write(R, "bad_cidrs", b"10.0.0.1/8\n010.0.0.0/8\n1.2.3.4/33\n::/129\n1.2.3.4/08\n/8\n1.2.3.4/\n")

# ---- fuzz_encode: byte 0 = content type, then the body --------------------
E = "fuzz_encode"
NONE, JSON, PJSON, TEXT = b"\x00", b"\x01", b"\x02", b"\x03"
write(E, "json_object", JSON + b'{"a": 1, "b": [true, false, null], "c": {"d": "e"}}')
write(E, "json_big_ints", JSON + b'  {"big": 123456789012345678901234567890, "neg": -98765432109876543210, "r": 1e400}\n')
write(E, "json_number_spellings", PJSON + b'[1.0, 1E5, -0, 0.1e-2, 2e+10]')
write(E, "json_duplicate_keys", JSON + b'{"a": 1, "a": 2}')
write(E, "json_escapes", JSON + b'"\\u00e9\\ud83d\\ude00\\u2028\\/\\b\\f\\n\\r\\t\\u0000"')
write(E, "json_lone_surrogate", JSON + b'["\\ud800"]')
write(E, "json_nul_key", JSON + b'{"a\\u0000": 1}')
write(E, "json_deep", JSON + b"[" * 200 + b"]" * 200)
write(E, "utf8_text", TEXT + "caf\u00e9 \U0001F600 line\u2028sep \"quoted\" back\\slash\ttab\n".encode())
write(E, "text_nul_and_controls", NONE + b"a\x00b\x01c\x7f\x1f")
write(E, "invalid_utf8", TEXT + b"\xff\xfe\xc0\x80\xed\xa0\x80\xf4\x90\x80\x80")
write(E, "binary", NONE + bytes(range(256)))
write(E, "json_type_but_text", JSON + b"not json at all")
write(E, "custom_type_plus_json", b"\x04application/vnd.api+json; charset=utf-8\n{\"data\": []}")
write(E, "custom_type_params", b"\x04 Application/JSON ; q=1\n42")
write(E, "empty_body", JSON)
write(E, "json_bom", JSON + b'\xef\xbb\xbf{"a": 1}')
write(E, "text_bom", TEXT + b"\xef\xbb\xbfhello")
write(E, "latin1_text", b"\x04text/plain; charset=iso-8859-1\ncaf\xe9 cr\xe8me")
write(E, "latin1_json_quoted", b'\x04application/json; charset="ISO-8859-1"\n{"caf\xe9": 1e400}')
write(E, "utf16_bom", b"\x04text/plain; charset=utf-16\n\xff\xfeh\x00\xe9\x00")
write(E, "utf16be_no_bom", b"\x04application/json;charset=UTF-16\n\x00[\x001\x00]")
write(E, "cp1252_undefined", b"\x04text/plain; charset=windows-1252\n\x80\x81")
write(E, "unknown_charset", b"\x04text/plain; charset=x-unknown\nabc")

# ---- fuzz_jtree: byte 0 = max depth, then a pointer up to '\n', then the text --
T = "fuzz_jtree"
write(T, "rfc6901", b"\x20/foo/1\n" + b'{"foo": ["bar", "baz"], "": 0, "a/b": 1, "m~n": 8}')
write(T, "escaped_key", b"\x20/a~1b/0\n" + b'{"a\\/b": [{"x": 1}], "\\u0061": 2, "a": 3}')
write(T, "numbers", b"\x20/big\n" + b'{"big": 123456789012345678901234567890, "f": 1e400, "z": -0, "r": 1.0}')
write(T, "duplicates", b"\x20/d/y\n" + b'{"d": {"x": 1}, "d": {"y": 2}, "o": {"k": 1, "k": [2]}}')
write(T, "array_walk", b"\x20/2/k\n" + b'[0, [1, {"k": 5}], {"k": "\\ud83d\\ude00"}]')
write(T, "deep", b"\x08\n" + b"[" * 9 + b"]" * 9)

# ---- fuzz_merge: count byte, then per item fields -------------------------


def item(status, err, ctype, body, dur=8):
    out = struct.pack(">H", status) + bytes([err])
    if ctype is None:
        out += b"\xff"
    else:
        out += bytes([len(ctype)]) + ctype
    return out + struct.pack(">H", len(body)) + body + bytes([dur])


M = "fuzz_merge"
write(M, "all_ok_json", b"\x01" + item(200, 0, b"application/json", b'{"a": {"x": 1}, "b": [1]}') +
      item(200, 0, b"application/json", b'{"a": {"y": 2}, "b": 3}'))
write(M, "mixed", b"\x03" + item(200, 0, b"text/plain", b"hello") +
      item(404, 0, b"application/json", b'{"error": "nf"}') + item(0, 3, None, b"") +
      item(200, 0, b"application/octet-stream", b"\x00\x01\xff"))
write(M, "errors_keep_status", b"\x01" + item(200, 7, b"text/plain", b"partial") +
      item(0, 5, None, b""))
write(M, "deep_big_numbers", b"\x02" + item(200, 0, b"application/json", b'{"n": 123456789012345678901234567890}') +
      item(201, 0, b"application/json", b'{"r": 1e400, "s": "x"}') + item(200, 0, b"application/json", b'[1, 2]'))
write(M, "empty_and_head", b"\x01" + item(204, 0, None, b"") + item(200, 0, b"text/plain", b""))
write(M, "unicode_ctype", b"\x00" + item(200, 0, "text/pl\u00e9in; x=\"\u2028\"".encode(), "\u2028".encode()))


# ---- composition -------------------------------------------------------------
write(J, "compose.json",
      '{"merge":"deep","merge_arrays":"concat","requests":[{"url":"http://a/x","id":"a"},'
      '{"url":"${a.body#/u}","id":"b","depends_on":["a"],"run_if":"always",'
      '"headers":{"X":"${a.headers.x-t} $${l}"},"body":{"n":"${a.status}","m":"x${a.body}","k":1E+2},'
      '"method":"POST","select":{"p":"/a~0/b~1"},"group":"g"},{"url":"http://h/${b.body#/q}?$${x}",'
      '"depends_on":["b","a"],"body":"${b.status}","method":"PUT"}]}')
# response_headers (merge none only), and references a batch must declare
write(J, "compose_headers.json",
      '[{"url":"http://a/x","id":"a","response_headers":["X-T"]},'
      '{"url":"http://h/?v=${a.status}","id":"b"},'
      '{"url":"http://h/","headers":{"X":"$${a.status}"},"depends_on":[]}]')

# fuzz_template: byte 0 bit 0 = JSON body form, then the template
T = "fuzz_template"
write(T, "url", b"\x00http://h/${a.body#/x~0y}?q=${a.status}&h=${a.headers.X-Y}$${lit}$x")
write(T, "header", b"\x00Bearer ${login.body#/token}")
write(T, "json", b'\x01{"n": "${a.body#/n}", "m": "x=${a.body} $${y}", "${k.status}": '
                 b'["\\u0024{a.status}", 1E+2]}')
write(T, "malformed", b"\x00${a.nope}${")

# fuzz_select: a pointer up to '\n', then the body
S = "fuzz_select"
body = b'{"data": {"items": [{"a": 1}, {"b": 1e400}]}, "x~y": {"a/b": 3}}'
write(S, "array", b"/data/items/1\n" + body)
write(S, "escapes", b"/x~0y/a~1b\n" + body)
write(S, "missing", b"/missing\n[1, 2]")
write(S, "text", b"\nnot json")
