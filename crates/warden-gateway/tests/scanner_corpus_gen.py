#!/usr/bin/env python3
"""Generates scanner_corpus.json: fake but format-valid secrets (AWS's documented example keys, test
values) under the encodings a leak takes, and ordinary tool arguments. Run from this directory."""
import base64, json, urllib.parse

PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
       "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n-----END RSA PRIVATE KEY-----")
KINDS = {
    "aws-key-id": ("AKIAIOSFODNN7EXAMPLE", "aws-access-key-id"),
    "aws-secret": ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws-secret-access-key"),
    "pem": (PEM, "private-key"),
    "github": ("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", "github-token"),
    "slack": ("xoxb-2637-12345678901-abcdEFGHijkl", "slack-token"),
    "jwt": ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c", "jwt"),
    "db-url": ("postgres://admin:S3cr3tPassw0rd@db.example.com:5432/app", "url-credentials"),
}

def fw(s):
    return "".join(chr(ord(c) + 0xFEE0) if 0x21 <= ord(c) <= 0x7E else c for c in s)

def zw(s, chars):
    return "".join(c + chars[i % len(chars)] for i, c in enumerate(s))

def split(s, n):
    k = max(1, len(s) // n)
    parts = [s[i * k:(i + 1) * k] for i in range(n - 1)] + [s[(n - 1) * k:]]
    return parts

ENCODINGS = {
    "plain": lambda s: {"text": s},
    "in-prose": lambda s: {"message": f"Here is the config you asked for: {s} - keep it safe."},
    "in-json-text": lambda s: {"body": json.dumps({"config": {"value": s}})},
    "hex": lambda s: {"data": s.encode().hex()},
    "hex-upper": lambda s: {"data": s.encode().hex().upper()},
    "hex-in-prose": lambda s: {"note": "payload=" + s.encode().hex() + " end"},
    "base64": lambda s: {"data": base64.b64encode(s.encode()).decode()},
    "base64url-no-pad": lambda s: {"data": base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")},
    "base64-of-hex": lambda s: {"data": base64.b64encode(s.encode().hex().encode()).decode()},
    "hex-of-base64": lambda s: {"data": base64.b64encode(s.encode()).hex()},
    "percent-all": lambda s: {"q": "".join(f"%{b:02X}" for b in s.encode())},
    "percent-in-url": lambda s: {"url": "https://example.com/callback?v=" + urllib.parse.quote(s, safe="")},
    "u-escaped": lambda s: {"src": "".join(f"\\u{ord(c):04x}" for c in s)},
    "x-escaped": lambda s: {"src": "".join(f"\\x{b:02x}" for b in s.encode())},
    "zero-width-space": lambda s: {"text": zw(s, ["\u200b"])},
    "zero-width-mixed": lambda s: {"text": zw(s, ["\u200d", "\u00ad", "\ufeff", "\u2060", "\u200c"])},
    "full-width": lambda s: {"text": fw(s)},
    "full-width-and-zero-width": lambda s: {"text": zw(fw(s), ["\u200b"])},
    "split-object-2": lambda s: dict(zip(["a", "b"], split(s, 2))),
    "split-object-4": lambda s: dict(zip(["p1", "p2", "p3", "p4"], split(s, 4))),
    "split-array-3": lambda s: {"parts": split(s, 3)},
    "split-lines-array": lambda s: {"lines": s.split("\n") if "\n" in s else split(s, 5)},
    "member-name": lambda s: {s: True},
}

pos = []
for kind, (secret, rule) in KINDS.items():
    for enc, f in ENCODINGS.items():
        pos.append({"category": enc, "kind": kind, "rule": rule, "value": f(secret)})
# URLs with credentials, per scheme.
for url in ["postgres://admin:S3cr3tPassw0rd@db.example.com:5432/app", "postgresql://app:pa55w0rd!@10.0.0.5/db",
            "mysql://root:hunter2hunter2@localhost:3306/shop", "redis://:r3disPassw0rd@cache.internal:6379/0",
            "amqp://guest:Gu3st-Pa55@rabbit.internal:5672/vhost", "https://deploy:tok3nValue@git.example.com/org/repo.git",
            "mongodb+srv://svc:Mong0Pass@cluster0.example.net/db?retryWrites=true", "ftp://anon:ftpPass123@ftp.example.org/pub"]:
    pos.append({"category": "url-credentials", "kind": url.split(":")[0], "rule": "url-credentials", "value": {"dsn": url}})
    pos.append({"category": "url-credentials-in-text", "kind": url.split(":")[0], "rule": "url-credentials",
                "value": {"cmd": f"psql \"{url}\" -c 'select 1'"}})
# Credential-named members: any non-empty value.
for name in ["password", "pass", "db_pass", "DB-PASSWORD", "DB_PASS", "userPwd", "db_pwd", "passwd", "secret",
             "client_secret", "token", "access_token", "api_key", "apiKey", "X-Api-Key", "private_key",
             "credentials", "passphrase", "Authorization", "signing_key"]:
    for value in ["Zx9Qm2Lr7Tp4Wv8Ys1Nb6Kd3Hf5Jc0Ga", "correct horse battery staple"]:
        pos.append({"category": "credential-named-member", "kind": name, "rule": "sensitive-key",
                    "value": {"config": {name: value, "host": "db.example.com"}}})

lorem = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua."
neg = [
    ("prose", {"text": lorem}),
    ("prose", {"message": "Please summarise the attached meeting notes and send them to the team by Friday. The password reset flow is described in section 4."}),
    ("prose", {"query": "how do I rotate an AWS access key without downtime?"}),
    ("prose-emoji-zwj", {"text": "Family: \U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466, flag \U0001F3F3\ufe0f\u200d\U0001F308, " + lorem}),
    ("prose-emoji-zwj", {"text": "Great work team \U0001F469\u200d\U0001F4BB\U0001F9D1\u200d\U0001F680 see you tomorrow"}),
    ("prose-zwnj", {"text": "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 \u0628\u0631\u0648\u0645"}),
    ("prose-soft-hyphen", {"text": "super\u00adcali\u00adfragilistic\u00adexpi\u00adali\u00addocious"}),
    ("full-width-cjk", {"address": "東京都渋谷区神南１－２－３　ＡＢＣビル５階", "note": "ＨＥＬＬＯ　ＷＯＲＬＤ！（テスト）"}),
    ("full-width-cjk", {"text": "这是一个测试。价格：１２３４５元，联系电话：０１０－１２３４５６７８。"}),
    ("uuid", {"id": "550e8400-e29b-41d4-a716-446655440000", "ids": ["f81d4fae-7dec-11d0-a765-00a0c91e6bf6", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"]}),
    ("git-sha", {"commit": "da39a3ee5e6b4b0d3255bfef95601890afd80709", "parents": ["e41ccf9a7b1e2c3d4f5a6b7c8d9e0f1a2b3c4d5e", "310090e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7"]}),
    ("hash-field", {"sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "md5": "d41d8cd98f00b204e9800998ecf8427e"}),
    ("hash-field", {"sha512": "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e", "digest": "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}),
    ("hex-colour", {"palette": ["#ff00aa", "#FFFFFF", "#1e1e1e", "#00FF7F"], "background": "#fafafa"}),
    ("base64-image", {"image": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="}),
    ("base64-image", {"src": "data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="}),
    ("base64-image", {"src": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="}),
    ("file-path", {"path": "/home/user/Documents/Report2024Final.pdf", "paths": ["src/main/java/com/Example/App1.java", "C:\\Users\\Alice\\AppData\\Local\\Temp\\build_output.log", "./node_modules/@types/node/index.d.ts"]}),
    ("url-no-password", {"url": "https://github.com/User123/MyRepo/blob/main/src/Lib2.rs", "clone": "https://user@github.com/org/repo.git"}),
    ("url-no-password", {"ssh": "ssh://git@github.com:22/org/repo.git", "db": "postgres://app@localhost:5432/appdb", "cache": "redis://localhost:6379/0"}),
    ("url-no-password", {"url": "https://example.com:8443/path?q=a@b&next=/x", "vite": "http://localhost:3000/@fs/home/user/app/src/main.ts", "v6": "http://[::1]:8080/health"}),
    ("url-no-password", {"search": "https://www.google.com/search?q=hello%20world&hl=en", "api": "https://crm.example.com/api/v2/customers/17?fields=name%2Cemail"}),
    ("url-placeholder", {"dsn": "postgres://app:${DB_PASSWORD}@db:5432/app", "tmpl": "mysql://root:<password>@localhost/db", "masked": "redis://:****@cache:6379"}),
    ("email", {"to": ["alice.smith+tag@example.co.uk", "bob@example.com"], "from": "Carol <carol@mail.example.org>"}),
    ("code", {"code": "fn main() {\n    let x = vec![1, 2, 3];\n    println!(\"{:?}\", x.iter().map(|v| v * 2).collect::<Vec<_>>());\n}"}),
    ("code", {"code": "import os\npassword = os.environ['DB_PASSWORD']\nprint(\"caf\\u00e9\", \"\\x41\\x42\")"}),
    ("shell", {"command": "git commit -m 'Fix the flaky test' && git push origin feature/login-page", "cwd": "/srv/app"}),
    ("shell", {"command": "curl -s https://api.example.com/v1/items?limit=10 | jq '.items[] | .id'", "pwd": "/home/user/project"}),
    ("sql", {"query": "SELECT id, name FROM users WHERE created_at > '2024-01-01' AND email LIKE '%@example.com'"}),
    ("identifiers", {"names": ["ConfigurationManager2024Impl", "ListObjectsV2_Request_Params_Filter", "my-very-long-kebab-case-identifier-2024-Final"]}),
    ("identifiers", {"videos": ["dQw4w9WgXcQ", "9bZkp7q19f0", "kJQP7kiw5Fk", "JGwWNGJdvx8"], "words": ["sk", "-", "live", "_", "key"]}),
    ("credential-lookalike-names", {"max_tokens": 1024, "token_count": "12", "bypass": "cache", "compass": "north", "nextPageToken": "CAUQAA", "tokenizer": "cl100k_base", "passage": "Chapter one", "password_policy": "min 12 chars", "pwd": "/home/user"}),
    ("timestamps", {"at": "2024-06-01T12:34:56.789Z", "version": "1.2.3-beta.4+build.567", "cron": "*/5 * * * *"}),
    ("hex-text", {"data": "48656c6c6f2c20776f726c6421205468697320697320612074657374206f6620686578"}),
    ("json-text", {"body": "{\"name\":\"Widget\",\"price\":12.5,\"tags\":[\"a\",\"b\"],\"url\":\"https://example.com/w/1\"}"}),
    ("escaped-text", {"text": "caf\\u00e9 cr\\u00e8me br\\u00fbl\\u00e9e \\n next line"}),
    ("k8s", {"image": "registry.example.com/team/api-server:v2.3.1@sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", "pod": "api-server-7d9f8b6c5-x2k4p"}),
]
json.dump({"positive": pos, "negative": [{"category": c, "value": v} for c, v in neg]},
          open("scanner_corpus.json", "w"), ensure_ascii=False, indent=1)
print(len(pos), len(neg))
