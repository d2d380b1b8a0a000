"""A stand-in ACP agent (newline-delimited JSON-RPC 2.0 on stdio) for wrapper tests.

It answers initialize, session/new, session/load (replaying one earlier turn as
user_message_chunk/agent_message_chunk first, as real agents do) and session/prompt.
A prompt is answered with the hazards real agents show: an available_commands_update,
an EMPTY agent_message_chunk, then after TOKEN_DELAY_MS the first real chunk, then the
result. Like claude-code-acp, it does not exit when stdin closes unless EXIT_ON_EOF=1.
"""

from __future__ import annotations

import json
import os
import sys
import time

TOKEN_DELAY_MS = float(os.environ.get("TOKEN_DELAY_MS", "80"))
INIT_DELAY_MS = float(os.environ.get("INIT_DELAY_MS", "30"))


def send(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def update(session_id: str, kind: str, text: str) -> None:
    send(
        {
            "jsonrpc": "2.0",
            "method": "session/update",
            "params": {
                "sessionId": session_id,
                "update": {"sessionUpdate": kind, "content": {"type": "text", "text": text}},
            },
        }
    )


def main() -> int:
    sessions = 0
    for raw in sys.stdin:
        msg = json.loads(raw)
        method, rid = msg.get("method"), msg.get("id")
        if method == "initialize":
            send(
                {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "result": {"protocolVersion": 1, "agentCapabilities": {"loadSession": True}},
                }
            )
        elif method == "session/new":
            time.sleep(INIT_DELAY_MS / 1000)
            sessions += 1
            sid = f"sess-{sessions}"
            send({"jsonrpc": "2.0", "id": rid, "result": {"sessionId": sid}})
            send(
                {
                    "jsonrpc": "2.0",
                    "method": "session/update",
                    "params": {
                        "sessionId": sid,
                        "update": {
                            "sessionUpdate": "available_commands_update",
                            "availableCommands": [],
                        },
                    },
                }
            )
        elif method == "session/load":
            sid = msg["params"]["sessionId"]
            time.sleep(INIT_DELAY_MS / 1000)
            update(sid, "user_message_chunk", "earlier question")
            update(sid, "agent_message_chunk", "earlier answer")
            send({"jsonrpc": "2.0", "id": rid, "result": {}})
        elif method == "session/prompt":
            sid = msg["params"]["sessionId"]
            update(sid, "agent_message_chunk", "")
            time.sleep(TOKEN_DELAY_MS / 1000)
            update(sid, "agent_message_chunk", "Hello")
            update(sid, "agent_message_chunk", " there")
            send({"jsonrpc": "2.0", "id": rid, "result": {"stopReason": "end_turn"}})
    if os.environ.get("EXIT_ON_EOF") == "1":
        return 0
    time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
