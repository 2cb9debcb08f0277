#!/usr/bin/env python3
"""Writes seed inputs for the fuzz targets from real inputs in the repository: the configs in
README.md, packaging/ and the tests (`config`), and requests as curl and `tokend get` send them
(`socket_request`). Answers of the development issuer (`token_response`) are captured by
capture-issuer.sh. Run from fuzz/; then `cargo fuzz cmin` keeps the ones that add coverage.

    python3 seeds.py && ./capture-issuer.sh
"""

import hashlib
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / ("seed-" + hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


def configs():
    texts = []
    for md in [ROOT / "README.md"]:
        texts += re.findall(r"```yaml\n(.*?)```", md.read_text(), re.S)
    for p in ROOT.glob("packaging/**/*.yaml"):
        text = p.read_text()
        if "clients:" in text or "defaults:" in text:
            texts.append(text)
    # Rust string literals that hold a config: "\<newline>..." continuation strings and r#"..."#.
    for p in list(ROOT.glob("src/**/*.rs")) + list(ROOT.glob("tests/**/*.rs")):
        src = p.read_text()
        for lit in re.findall(r'"\\\n(.*?)(?<!\\)"', src, re.S) + re.findall(r'r#"(.*?)"#', src, re.S):
            if "clients:" not in lit and "defaults:" not in lit:
                continue
            text = lit.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
            text = text.replace("{{", "{").replace("}}", "}")
            texts.append(text)
    for t in texts:
        write("config", t)
    return len(texts)


def requests():
    curl = "Host: localhost\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n"
    get = "host: localhost\r\naccept: {}\r\n"
    reqs = [
        # (caller, request): caller 0 stranger, 1 reader of billing, 2 reader of reports, 3 metrics
        (1, f"GET /v1/tokens/billing HTTP/1.1\r\n{curl}\r\n"),
        (1, "GET /v1/tokens/billing HTTP/1.1\r\n" + get.format("text/plain") + "\r\n"),
        (1, "GET /v1/tokens/billing?wait=29950ms HTTP/1.1\r\n" + get.format("application/json") + "\r\n"),
        (1, f"GET /v1/tokens/billing?format=json HTTP/1.1\r\n{curl}\r\n"),
        (1, f"GET /v1/tokens/billing?wait=30s&after=1790000000000 HTTP/1.1\r\n{curl}\r\n"),
        (1, f"GET /v1/tokens/expired?wait=5s HTTP/1.1\r\n{curl}\r\n"),
        (1, f"GET /v1/tokens/pending HTTP/1.1\r\n{curl}\r\n"),
        (1, f"HEAD /v1/tokens/billing HTTP/1.1\r\n{curl}\r\n"),
        (2, f"GET /v1/tokens/reports HTTP/1.1\r\n{curl}Accept: text/plain;q=0.5, application/json\r\n\r\n"),
        (2, f"GET /v1/tokens HTTP/1.1\r\n{curl}\r\n"),
        (0, f"GET /v1/tokens/billing HTTP/1.1\r\n{curl}\r\n"),
        (0, f"GET /v1/tokens/%2e%2e/billing HTTP/1.1\r\n{curl}\r\n"),
        (0, f"GET /v1/tokens/../tokens/billing HTTP/1.1\r\n{curl}\r\n"),
        (0, f"GET /healthz HTTP/1.1\r\n{curl}\r\n"),
        (0, f"GET /readyz HTTP/1.0\r\n\r\n"),
        (3, f"GET /metrics HTTP/1.1\r\n{curl}\r\n"),
        (0, f"GET /metrics HTTP/1.1\r\n{curl}\r\n"),
        (0, f"POST /v1/tokens/billing HTTP/1.1\r\n{curl}Content-Length: 5\r\n\r\nhello"),
        (1, f"GET /v1/tokens/billing HTTP/1.1\r\n{curl}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        # Pipelined: a reader's own client, then another's.
        (1, f"GET /v1/tokens/billing HTTP/1.1\r\n{curl}\r\nGET /v1/tokens/reports HTTP/1.1\r\n{curl}\r\n"),
        (2, f"GET /v1/tokens/reports HTTP/1.1\r\n{curl}Connection: close\r\n\r\nGET /v1/tokens/billing HTTP/1.1\r\n\r\n"),
        (1, f"GET /v1/tokens/billing HTTP/1.1\r\n{curl}X-Padding: {'a' * 9000}\r\n\r\n"),
        (1, "GET /v1/tokens/billing HTTP/1.1\r\nHost: localhost\r\n"),
    ]
    for who, r in reqs:
        write("socket_request", bytes([ord("0") + who]) + r.encode())
    return len(reqs)


if __name__ == "__main__":
    print("config seeds:", configs())
    print("socket_request seeds:", requests())
