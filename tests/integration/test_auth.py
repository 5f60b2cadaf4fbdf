"""auth_token: POST /batch needs `Authorization: Bearer TOKEN`."""

import os
import unittest

from harness import DaemonCase, new_tag, tmpdir

TOKEN = "s3cr3t-T0ken.with~chars"


class AuthTest(DaemonCase):
    CONFIG = {"workers": 4, "auth_token": TOKEN}

    def test_rejections_fetch_nothing(self):
        key = new_tag()
        for value in (None, "", "Bearer", "Bearer ", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}",
                      f"Basic {TOKEN}", f"Token {TOKEN}", TOKEN, f"Bearer {TOKEN.upper()}",
                      f"Bearer  {TOKEN} extra"):
            with self.subTest(authorization=value):
                headers = {} if value is None else {"Authorization": value}
                resp = self.post([self.url("/count", key=key)], headers=headers)
                self.assert_error(resp, 401, "unauthorized")
        self.assertEqual(self.up.count(key), 0)

    def test_right_token_accepted_and_not_forwarded(self):
        tag = new_tag()
        doc = self.batch([self.url("/echo", tag=tag)], total=1,
                         headers={"Authorization": f"Bearer {TOKEN}"})
        self.assertTrue(doc["results"][0]["ok"])
        (req,) = self.up.requests(tag)
        self.assertEqual(req.header("Authorization"), [], "the client's bearer token leaked upstream")
        self.assertNotIn(TOKEN, str(req.headers))

    def test_plain_list_needs_token_too(self):
        key = new_tag()
        resp = self.post(self.url("/count", key=key) + "\n", ctype="text/plain")
        self.assert_error(resp, 401, "unauthorized")
        self.assertEqual(self.up.count(key), 0)

    def test_other_endpoints_open(self):
        self.assertEqual(self.get("/healthz").status, 200)
        self.assertEqual(self.get("/metrics").status, 200)

    def test_token_not_echoed_in_errors(self):
        resp = self.post([self.url("/json")], headers={"Authorization": f"Bearer {TOKEN}x"})
        self.assertEqual(resp.status, 401)
        self.assertNotIn(TOKEN.encode(), resp.body)


def _token_file():
    path = os.path.join(tmpdir(), "token")
    with open(path, "w") as f:
        f.write(FILE_TOKEN + "\n")
    return path


FILE_TOKEN = "from-a-file.0123"


class AuthTokenFileTest(DaemonCase):
    """auth_token = @/path: the token comes from the file, so it need not be on a command
    line (ps) or in the configuration file."""
    CONFIG = {"workers": 2, "auth_token": "@" + _token_file()}

    def test_token_from_file(self):
        key = new_tag()
        self.assert_error(self.post([self.url("/count", key=key)]), 401, "unauthorized")
        for wrong in ("@" + self.CONFIG["auth_token"], self.CONFIG["auth_token"][1:],
                      self.CONFIG["auth_token"], FILE_TOKEN + "x"):
            with self.subTest(token=wrong):
                resp = self.post([self.url("/count", key=key)],
                                 headers={"Authorization": f"Bearer {wrong}"})
                self.assert_error(resp, 401, "unauthorized")
        self.assertEqual(self.up.count(key), 0)
        doc = self.batch([self.url("/json")], total=1,
                         headers={"Authorization": f"Bearer {FILE_TOKEN}"})
        self.assertTrue(doc["results"][0]["ok"], doc)


if __name__ == "__main__":
    unittest.main()
