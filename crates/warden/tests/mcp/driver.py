#!/usr/bin/env python3
"""A line-oriented driver around the official MCP Python SDK client (PyPI `mcp`, pinned in
requirements.txt), for Warden's integration tests: a test writes one JSON command per line on stdin and
reads exactly one JSON line per command on stdout, while the driver keeps ONE MCP session open across
commands (see crates/warden/tests/common/mcp.rs).

Commands (every command may carry an "id", echoed in its answer, and a "timeout" in seconds, default 30):

  {"op":"connect","url":"http://127.0.0.1:P/mcp","headers":{"Authorization":"Bearer ..."}}
        streamable HTTP; optional "mode": "legacy" (default: the initialize handshake, protocol
        2025-11-25 or what the server picks) or "auto" (the SDK's default: probes `server/discover`,
        falls back to initialize)
        optional "approve_with": an approver's API token: the client then declares elicitation (form
        and URL mode) and answers a URL-mode elicitation as a user who opens the URL and approves
        there would: it POSTs `<url>/approve` with that token (Warden's approval URL), then accepts
  {"op":"connect","command":["node","/path/server.js","arg"],"env":{...}}     stdio instead of url
        either may carry "elicit": "accept" | "decline": the client then declares elicitation (form and
        URL mode) and answers every `elicitation/create` so, recording its params
  {"op":"elicitations"}  the params of every elicitation/create received so far, in order, and the status
        of each approval made from one ("approve_with")
  {"op":"list_tools"}  {"op":"list_resources"}  {"op":"list_prompts"}  {"op":"ping"}
  {"op":"call_tool","name":"echo","arguments":{"message":"hi"}}
  {"op":"read_resource","uri":"demo://..."}
  {"op":"get_prompt","name":"args-prompt","arguments":{"city":"Paris"}}
  {"op":"set_header","name":"Authorization","value":"Bearer NEW"}   (value null removes it) -- applies to
        every later HTTP request of the open session (the SDK sends each message as its own POST through
        our httpx2 client, whose default headers we change); a GET stream already open keeps the old one
  {"op":"close"}       ends the session (DELETE for HTTP); a new connect may follow
  end of input         closes the session and exits 0

Answers:
  {"ok":true,"result":{...}}            the SDK's result, model_dump(mode="json", by_alias=True,
                                        exclude_none=True); a tool result with "isError": true is ok:true
  {"ok":false,"kind":"jsonrpc","code":N,"message":"...","data":...}   a JSON-RPC error (McpError)
  {"ok":false,"kind":"http","status":401,"message":"...","www_authenticate":"...","code":N,"data":...}
        a POST of this command was answered with HTTP status >= 400. The SDK itself turns such an answer
        into a JSON-RPC error (the body's, when the body is a JSON-RPC error; else -32603 "Server returned
        an error response", or -32600 "Session terminated" for 404 within a session), so the status is
        recorded from the HTTP response here; code/message/data are the SDK's error.
  {"ok":false,"kind":"timeout",...}     no answer within "timeout"; the session is ended if it was connect
  {"ok":false,"kind":"connection",...}  the transport failed (refused, reset: an httpx2 error, or the SDK's
                                        -32000 "Connection closed"); the session is then dead
  {"ok":false,"kind":"closed",...}      no open session (never connected, closed, or died: says why)
  {"ok":false,"kind":"driver",...}      a malformed command
  {"ok":false,"kind":"error","type":"...",...}   anything else the SDK raised

One failed command never ends the driver: the session runs in its own task, and whatever kills it is
reported for the command that was running and for every later one (kind "closed"). Nothing the driver
prints comes from the command's headers: only what the server or the SDK returned.
"""

from __future__ import annotations

import json
import logging
import sys
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, ElicitResult, Implementation
from pydantic import BaseModel, ValidationError

DEFAULT_TIMEOUT = 30.0
CLIENT_INFO = Implementation(name="warden-test-driver", version="1")


def dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    return value


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or the exception itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


class DriverError(Exception):
    """A malformed command."""


class Session:
    """One MCP session, run by its own task (`run`), fed commands one at a time."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.scope = anyio.CancelScope()
        self.commands_send, self.commands_recv = anyio.create_memory_object_stream[dict[str, Any]](1)
        self.answers_send, self.answers_recv = anyio.create_memory_object_stream[dict[str, Any]](1)
        self.http: httpx2.AsyncClient | None = None
        self.client: Client | None = None
        self.dead: str | None = None  # why the session is gone, once it is
        self.answered = True  # whether the command in flight (connect first) has its answer
        self.http_error: tuple[int, str | None] | None = None  # POST status >= 400 seen in this command
        self.elicitations: list[dict[str, Any]] = []  # the params of every elicitation received
        self.approvals: list[int] = []  # the status of each approval made from an elicitation

    async def on_elicitation(self, _context: Any, params: Any) -> Any:
        """The user, shown a URL-mode elicitation, opens the URL and approves there (the test's
        approver token); anything else is declined."""
        from mcp_types import ElicitResult

        self.elicitations.append(dump(params))
        url = getattr(params, "url", None)
        if getattr(params, "mode", None) != "url" or not isinstance(url, str):
            return ElicitResult(action="decline")
        async with httpx2.AsyncClient(trust_env=False, timeout=30.0) as http:
            response = await http.post(
                url.rstrip("/") + "/approve",
                headers={"Authorization": f"Bearer {self.spec['approve_with']}"},
                json={"comment": "approved where the elicitation pointed"},
            )
        self.approvals.append(response.status_code)
        return ElicitResult(action="accept")

    async def on_response(self, response: httpx2.Response) -> None:
        if response.request.method == "POST" and response.status_code >= 400:
            self.http_error = (response.status_code, response.headers.get("www-authenticate"))

    def transport(self) -> Any:
        spec = self.spec
        if "url" in spec:
            headers = spec.get("headers") or {}
            if not isinstance(headers, dict):
                raise DriverError("headers must be an object")
            self.http = httpx2.AsyncClient(
                headers={str(k): str(v) for k, v in headers.items()},
                timeout=httpx2.Timeout(30.0, read=300.0),
                trust_env=False,  # tests talk to loopback only: never through a proxy from the environment
                event_hooks={"response": [self.on_response]},
            )
            return streamable_http_client(str(spec["url"]), http_client=self.http)
        argv = spec.get("command")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise DriverError('connect needs "url" or "command" (a non-empty list of strings)')
        env = spec.get("env")
        return StdioServerParameters(command=argv[0], args=argv[1:], env=env)

    async def run(self) -> None:
        """Connects, answers connect, then serves commands until close or death."""
        with self.scope:
            try:
                async with AsyncExitStack() as stack:
                    self.answered = False
                    self.http_error = None
                    server = self.transport()
                    if self.http is not None:
                        await stack.enter_async_context(self.http)
                    mode = self.spec.get("mode", "legacy")
                    elicit = self.spec.get("elicit")
                    callback = self.on_elicitation if self.spec.get("approve_with") else None
                    if elicit is not None and callback is None:
                        if elicit not in ("accept", "decline"):
                            raise DriverError('elicit must be "accept" or "decline"')

                        async def callback(context: Any, params: Any) -> Any:
                            self.elicitations.append(dump(params))
                            return ElicitResult(action=elicit)

                    client = Client(
                        server, mode=mode, cache=None, client_info=CLIENT_INFO, elicitation_callback=callback
                    )
                    await stack.enter_async_context(client)
                    self.client = client
                    await self.answer(
                        {
                            "ok": True,
                            "result": {
                                "protocolVersion": client.protocol_version,
                                "serverInfo": dump(client.server_info),
                                "capabilities": dump(client.server_capabilities),
                                "instructions": client.instructions,
                            },
                        }
                    )
                    async for command in self.commands_recv:
                        self.answered = False
                        self.http_error = None
                        if command["op"] == "close":
                            break
                        answer = await self.execute(command)
                        if answer.get("kind") == "connection":
                            # The transport is gone: so is the session (set before answering, so that
                            # the next command finds it dead).
                            self.dead = f"the connection failed: {answer.get('message')}"
                            await self.answer(answer)
                            break
                        await self.answer(answer)
                if self.dead is None:
                    # Closed on request (the exit stack sent DELETE and stopped the transport).
                    self.dead = "closed by the test"
                    await self.answer({"ok": True, "result": {}})
            except Exception as exc:  # noqa: BLE001 - every failure becomes an answer
                self.dead = f"the session failed: {describe(exc)}"
                await self.answer(self.failure(exc))
            finally:
                self.client = None
        if self.dead is None:
            self.dead = "the session was cancelled (a command timed out)"

    async def answer(self, answer: dict[str, Any]) -> None:
        if not self.answered:
            self.answered = True
            await self.answers_send.send(answer)

    async def execute(self, command: dict[str, Any]) -> dict[str, Any]:
        client = self.client
        assert client is not None
        op = command["op"]
        try:
            with anyio.fail_after(float(command.get("timeout", DEFAULT_TIMEOUT))):
                if op == "list_tools":
                    result = await client.list_tools(cursor=command.get("cursor"))
                elif op == "list_resources":
                    result = await client.list_resources(cursor=command.get("cursor"))
                elif op == "list_prompts":
                    result = await client.list_prompts(cursor=command.get("cursor"))
                elif op == "call_tool":
                    result = await client.call_tool(str(command["name"]), command.get("arguments") or {})
                elif op == "read_resource":
                    result = await client.read_resource(str(command["uri"]))
                elif op == "get_prompt":
                    arguments = {str(k): str(v) for k, v in (command.get("arguments") or {}).items()}
                    result = await client.get_prompt(str(command["name"]), arguments)
                elif op == "elicitations":
                    result = {"elicitations": self.elicitations, "approvals": self.approvals}
                elif op == "ping":
                    result = await client.session.send_ping()
                elif op == "set_header":
                    if self.http is None:
                        raise DriverError("set_header needs an HTTP session")
                    name, value = str(command["name"]), command.get("value")
                    if value is None:
                        self.http.headers.pop(name, None)
                    else:
                        self.http.headers[name] = str(value)
                    result = {}
                else:
                    raise DriverError(f"unknown op {op!r}")
            return {"ok": True, "result": dump(result)}
        except KeyError as exc:
            return {"ok": False, "kind": "driver", "message": f"{op} needs {exc}"}
        except Exception as exc:  # noqa: BLE001 - every failure becomes an answer
            return self.failure(exc)

    def failure(self, exc: BaseException) -> dict[str, Any]:
        """The answer for a command that raised `exc`."""
        found = [leaf for leaf in leaves(exc) if not isinstance(leaf, anyio.get_cancelled_exc_class())]
        exc = found[0] if found else exc
        answer: dict[str, Any]
        if isinstance(exc, DriverError):
            return {"ok": False, "kind": "driver", "message": str(exc)}
        if isinstance(exc, MCPError):
            # The SDK's own error for a connection that ended under a request (the transport failed).
            closed = exc.code == CONNECTION_CLOSED and exc.message == "Connection closed"
            kind = "connection" if closed else "jsonrpc"
            answer = {"ok": False, "kind": kind, "code": exc.code, "message": exc.message}
            if exc.data is not None:
                answer["data"] = exc.data
        elif isinstance(exc, TimeoutError):
            answer = {"ok": False, "kind": "timeout", "message": "no answer in time"}
        elif isinstance(exc, (httpx2.HTTPError, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)):
            answer = {"ok": False, "kind": "connection", "type": type(exc).__name__, "message": str(exc)}
        elif isinstance(exc, ValidationError):
            answer = {"ok": False, "kind": "invalid_response", "message": str(exc)}
        else:
            answer = {"ok": False, "kind": "error", "type": type(exc).__name__, "message": str(exc)}
        if self.http_error is not None:
            status, www_authenticate = self.http_error
            answer["kind"] = "http"
            answer["status"] = status
            if www_authenticate is not None:
                answer["www_authenticate"] = www_authenticate
        return answer


def describe(exc: BaseException) -> str:
    parts = [f"{type(leaf).__name__}: {leaf}" for leaf in leaves(exc)]
    return "; ".join(parts) or type(exc).__name__


def emit(answer: dict[str, Any], command_id: Any) -> None:
    if command_id is not None:
        answer = {"id": command_id, **answer}
    sys.stdout.write(json.dumps(answer, default=str) + "\n")
    sys.stdout.flush()


async def main() -> None:
    session: Session | None = None
    async with anyio.create_task_group() as tg:
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                break
            if not line.strip():
                continue
            try:
                command = json.loads(line)
                if not isinstance(command, dict) or not isinstance(command.get("op"), str):
                    raise ValueError('a command is an object with a string "op"')
                timeout = float(command.get("timeout", DEFAULT_TIMEOUT))
            except ValueError as exc:
                emit({"ok": False, "kind": "driver", "message": f"bad command: {exc}"}, None)
                continue
            command_id = command.get("id")
            op = command["op"]

            if op == "connect":
                if session is not None and session.dead is None:
                    emit({"ok": False, "kind": "driver", "message": "already connected: close first"}, command_id)
                    continue
                session = Session(command)
                tg.start_soon(session.run)
            elif session is None or session.dead is not None:
                if op == "close":
                    emit({"ok": True, "result": {}}, command_id)
                else:
                    why = session.dead if session is not None else "never connected"
                    emit({"ok": False, "kind": "closed", "message": f"no open session: {why}"}, command_id)
                continue
            else:
                await session.commands_send.send(command)

            # The session answers every command, or dies answering it; the guard only catches a hang of
            # the SDK itself (connect has no timeout of its own, commands have theirs inside the session).
            answer = None
            with anyio.move_on_after(timeout if op == "connect" else timeout + 5.0):
                answer = await session.answers_recv.receive()
            if answer is None:
                session.scope.cancel()
                session.dead = f"{op} timed out after {timeout:g} s; the session was ended"
                answer = {"ok": False, "kind": "timeout", "message": session.dead}
            emit(answer, command_id)
        if session is not None and session.dead is None:
            await session.commands_send.send({"op": "close"})
            with anyio.move_on_after(10.0):
                await session.answers_recv.receive()
            session.scope.cancel()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="driver: %(name)s: %(message)s")
    try:
        anyio.run(main)
    except KeyboardInterrupt:
        pass
