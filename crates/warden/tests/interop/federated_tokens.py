#!/usr/bin/env python3
"""Plays an external OIDC issuer (say, a Kubernetes cluster) for Warden's federation tests.

    python3 federated_tokens.py --jwks-out FILE --issuer ISS --audience AUD --sub SUB --unmapped-sub SUB2

Generates an ES256 (P-256) key pair, writes its public JWK Set to FILE (kid `k1`), and prints on stdout
a JSON object of compact JWTs, each expiring in 2 minutes and with its own `jti`:

    good       signed by the key in FILE, `sub` = SUB
    other_key  signed by another P-256 key, but naming kid `k1` (a forgery)
    unmapped   signed by the key in FILE, `sub` = SUB2

and, all signed by the key in FILE with `sub` = SUB (issue 15):

    no_jti            no `jti`
    no_jti_malleated  the same token with its ECDSA signature rewritten (r, n - s): it still verifies
    no_iat            no `iat` (its lifetime cannot be known)
    thirty_days       valid for 30 days (`exp` - `iat`)

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


# The order of the P-256 group.
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def sign(key, issuer: str, audience: str, sub: str, drop=(), lifetime: int = 120) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "iat": now,
        "exp": now + lifetime,
        "jti": str(uuid.uuid4()),
    }
    for name in drop:
        del claims[name]
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": KID})


def malleate(token: str) -> str:
    """The same header and payload with the other valid ES256 signature, (r, n - s)."""
    head, payload, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    other = r + (P256_N - s).to_bytes(32, "big")
    return ".".join([head, payload, base64.urlsafe_b64encode(other).rstrip(b"=").decode("ascii")])


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
    no_jti = sign(trusted, args.issuer, args.audience, args.sub, drop=("jti",))
    json.dump(
        {
            "good": sign(trusted, args.issuer, args.audience, args.sub),
            "other_key": sign(other, args.issuer, args.audience, args.sub),
            "unmapped": sign(trusted, args.issuer, args.audience, args.unmapped_sub),
            "no_jti": no_jti,
            "no_jti_malleated": malleate(no_jti),
            "no_iat": sign(trusted, args.issuer, args.audience, args.sub, drop=("iat",)),
            "thirty_days": sign(trusted, args.issuer, args.audience, args.sub, lifetime=30 * 86400),
        },
        sys.stdout,
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
