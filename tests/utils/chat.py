"""Talking to a chat app in tests: one session, message after message."""

from __future__ import annotations


def talk(client, *messages: str, k: int = 5) -> list[dict]:
    """POST each message to /api/v1/chat in one session; the replies, in order (each a 200)."""
    replies, session = [], None
    for message in messages:
        body = {"message": message, "k": k, **({"session_id": session} if session else {})}
        response = client.post("/api/v1/chat", json=body)
        assert response.status_code == 200, response.text
        replies.append(response.json())
        session = replies[-1]["session_id"]
    return replies
