#!/usr/bin/env python3
"""Plays an external OIDC issuer (say, a Kubernetes cluster) for Warden's federation tests.

    python3 federated_tokens.py --jwks-out FILE --issuer ISS --audience AUD --sub SUB --unmapped-sub SUB2

Generates an ES256 (P-256) key pair, writes its public JWK Set to FILE (kid `k1`), and prints on stdout
a JSON object of compact JWTs, each expiring in 2 minutes and with its own `jti`:

    good       signed by the key in FILE, `sub` = SUB
    other_key  signed by another P-256 key, but naming kid `k1` (a forgery)
    unmapped   signed by the key in FILE, `sub` = SUB2

Needs PyJWT with its crypto extra: python3 -m pip install 'pyjwt[crypto]>=2.8'
"""

import argparse
import base64
import json
import sys
import time
import uuid

try:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec
except ImportError:
    sys.exit("PyJWT or cryptography is missing: run  python3 -m pip install 'pyjwt[crypto]>=2.8'")

KID = "k1"


def b64url(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode("ascii")


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x),
        "y": b64url(numbers.y),
        "kid": KID,
        "alg": "ES256",
        "use": "sig",
    }


def sign(key, issuer: str, audience: str, sub: str) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "iat": now,
        "exp": now + 120,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": KID})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jwks-out", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--sub", required=True)
    parser.add_argument("--unmapped-sub", required=True)
    args = parser.parse_args()

    trusted = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    with open(args.jwks_out, "w", encoding="utf-8") as f:
        json.dump({"keys": [public_jwk(trusted)]}, f)
    json.dump(
        {
            "good": sign(trusted, args.issuer, args.audience, args.sub),
            "other_key": sign(other, args.issuer, args.audience, args.sub),
            "unmapped": sign(trusted, args.issuer, args.audience, args.unmapped_sub),
        },
        sys.stdout,
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
