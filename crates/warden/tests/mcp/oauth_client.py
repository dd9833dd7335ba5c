#!/usr/bin/env python3
"""An off-the-shelf MCP client authenticating with OAuth client credentials, for Warden's integration
tests: the official MCP Python SDK (pinned in requirements.txt) with its own
`PrivateKeyJWTOAuthProvider` and `SignedJWTParameters` (private_key_jwt, EdDSA) and nothing of
Warden's. Given only the MCP endpoint's URL, a client id and the agent's private key (PKCS#8 PEM), the
SDK discovers everything else: the 401's `resource_metadata`, the protected resource's metadata, the
authorization server's metadata and its token endpoint.

    oauth_client.py --url URL --client-id ID --key-pem FILE --issuer ISSUER
                    [--tool echo] [--calls 2] [--sleep SECONDS]

Connects (the initialize handshake), lists the tools, then makes `--calls` calls of `--tool` with
`{"message": "call N"}`, sleeping `--sleep` seconds before every call after the first (so a test can
let the token expire in between), all in ONE session. Prints one JSON line per step on stdout:

  {"step":"connect","protocolVersion":"..."}
  {"step":"list_tools","tools":["echo",...]}
  {"step":"call","n":1,"isError":false,"text":"Echo: call 1"}
  {"step":"http","token_requests":N,"unauthorized":N,"metadata_requests":[...paths]}   (last)

and exits 0; on any failure prints {"step":"error","type":...,"message":...} and exits 1. The token
endpoint's answers and the key never appear in the output.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import anyio
import httpx2
from mcp import Client
from mcp.client.auth.extensions.client_credentials import PrivateKeyJWTOAuthProvider, SignedJWTParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from mcp_types import Implementation


class MemoryStorage:
    """Tokens kept in memory only (the SDK's TokenStorage protocol)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def emit(value: dict) -> None:
    print(json.dumps(value), flush=True)


async def main(args: argparse.Namespace) -> None:
    with open(args.key_pem, encoding="ascii") as f:
        pem = f.read()
    signer = SignedJWTParameters(
        issuer=args.client_id, subject=args.client_id, signing_key=pem, signing_algorithm="EdDSA"
    )
    provider = PrivateKeyJWTOAuthProvider(
        server_url=args.url,
        storage=MemoryStorage(),
        client_id=args.client_id,
        assertion_provider=signer.create_assertion_provider(),
        issuer=args.issuer,
    )
    seen = {"token_requests": 0, "unauthorized": 0, "metadata_requests": []}

    async def on_response(response: httpx2.Response) -> None:
        path = response.request.url.path
        if path.startswith("/.well-known/"):
            seen["metadata_requests"].append(path)
        elif response.request.method == "POST" and path.endswith("/v1/token"):
            seen["token_requests"] += 1
        elif response.status_code == 401:
            seen["unauthorized"] += 1

    http = httpx2.AsyncClient(
        auth=provider,
        timeout=httpx2.Timeout(30.0, read=120.0),
        trust_env=False,  # loopback only: never through a proxy from the environment
        event_hooks={"response": [on_response]},
    )
    async with http:
        transport = streamable_http_client(args.url, http_client=http)
        client = Client(
            transport, mode="legacy", cache=None, client_info=Implementation(name="warden-oauth-test", version="1")
        )
        async with client:
            emit({"step": "connect", "protocolVersion": client.protocol_version})
            tools = await client.list_tools()
            emit({"step": "list_tools", "tools": sorted(t.name for t in tools.tools)})
            for n in range(1, args.calls + 1):
                if n > 1:
                    await anyio.sleep(args.sleep)
                result = await client.call_tool(args.tool, {"message": f"call {n}"})
                text = next((c.text for c in result.content if getattr(c, "type", None) == "text"), None)
                emit({"step": "call", "n": n, "isError": bool(result.is_error), "text": text})
    emit({"step": "http", **seen})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--key-pem", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--tool", default="echo")
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=0.0)
    parsed = parser.parse_args()
    warnings.simplefilter("ignore")
    try:
        anyio.run(main, parsed)
    except BaseException as e:  # noqa: BLE001 -- report anything, as one line
        leaves = [e]
        while leaves and isinstance(leaves[0], BaseExceptionGroup):
            leaves = list(leaves[0].exceptions) + leaves[1:]
        leaf = leaves[0] if leaves else e
        emit({"step": "error", "type": type(leaf).__name__, "message": str(leaf)[:2000]})
        sys.exit(1)
