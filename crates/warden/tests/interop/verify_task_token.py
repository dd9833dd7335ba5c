#!/usr/bin/env python3
"""Verifies a Warden task token with an independent JWT implementation (PyJWT), using nothing from
Warden but its public JWK Set.

    python3 verify_task_token.py --server URL --issuer ISSUER --token-file FILE

Fetches <server>/.well-known/jwks.json, picks the key named by the token's `kid`, verifies the EdDSA
signature and the `iss`, `aud` (both must be ISSUER) and `exp` claims, and prints the verified claims as
JSON on stdout. Exits 1 (message on stderr) when the token does not verify.

Needs PyJWT with its crypto extra: python3 -m pip install 'pyjwt[crypto]>=2.8'
"""

import argparse
import json
import sys
import urllib.request

try:
    import jwt
except ImportError:
    sys.exit("PyJWT is missing: run  python3 -m pip install 'pyjwt[crypto]>=2.8'")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="where to fetch /.well-known/jwks.json")
    parser.add_argument("--issuer", required=True, help="the expected `iss` and `aud`")
    parser.add_argument("--token-file", required=True, help="file holding the task token")
    args = parser.parse_args()

    with open(args.token_file, encoding="utf-8") as f:
        token = f.read().strip()
    url = args.server.rstrip("/") + "/.well-known/jwks.json"
    with urllib.request.urlopen(url, timeout=10) as response:
        jwks = json.load(response)

    header = jwt.get_unverified_header(token)
    if header.get("alg") != "EdDSA":
        print(f"unexpected alg {header.get('alg')!r}", file=sys.stderr)
        return 1
    keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys}
    key = keys.get(header.get("kid"))
    if key is None:
        print(f"no key with kid {header.get('kid')!r} in {url}", file=sys.stderr)
        return 1
    try:
        claims = jwt.decode(
            token,
            key=key.key,
            algorithms=["EdDSA"],
            issuer=args.issuer,
            audience=args.issuer,
            options={"require": ["iss", "aud", "exp", "iat", "sub"]},
        )
    except jwt.InvalidTokenError as e:
        print(f"the token does not verify: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    json.dump(claims, sys.stdout, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
