#!/usr/bin/env python3
"""A Python reader, as a service would be: reads a JSON or env token file in a loop until STOP
exists, decodes the JWT's claims and checks the audience; prints "READS BAD"."""
import base64
import json
import os
import sys

kind, path, audience, stop = sys.argv[1:5]
reads = bad = 0


def claims(token):
    header, payload, signature = token.split(".")
    assert len(signature) == 86, "signature length"
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


while not os.path.exists(stop):
    with open(path) as f:
        text = f.read()
    try:
        if kind == "json":
            token = json.loads(text)["access_token"]
        else:
            name, _, value = text.partition("=")
            assert text.endswith("\n") and name == "TOKEN", "env line"
            token = value[:-1]
        assert claims(token)["aud"] == audience, "audience"
    except Exception as e:  # any failure is a torn or foreign read
        bad += 1
        if bad <= 3:
            print(f"bad read of {path} ({e!r}): {text!r}", file=sys.stderr)
    reads += 1
print(reads, bad)
