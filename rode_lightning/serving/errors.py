"""A request the server refuses: an HTTP status (4xx) and a message that says what was wrong and what is expected."""

from __future__ import annotations


class RequestError(Exception):
    """Answered as ``{"error": {"message", "type", "code"}}`` with ``status``, the OpenAI API's error shape; the
    server goes on serving."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict:
        kinds = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                 413: "invalid_request_error", 504: "timeout"}
        return {"error": {"message": self.message, "type": kinds.get(self.status, "invalid_request_error"),
                          "param": None, "code": self.status}}
