"""The OpenAI chat-completions request this server reads, and the responses it writes.

Our own models rather than LitServe's ``OpenAISpec`` because that spec rebuilds every message (extension fields are
dropped), answers ``finish_reason: stop`` whatever ended the answer and leaves ``stop`` to the model. The request is
checked here, in the HTTP process, so that a bad one gets its 4xx before it reaches the model's queue.

What a request may hold: one ``user`` message with a text part (the question) and one ``image_url`` part, as the
adapters were trained (one question about one picture, no system prompt); ``max_tokens`` (or
``max_completion_tokens``), ``stop`` (a string or up to four), ``temperature`` (0 or absent: the greedy answer, as
``predict`` gives; above 0: sampled, with no top-k or top-p cut),
``stream`` with ``stream_options.include_usage``, ``n`` = 1. Extensions: ``task`` (``category``, ``ingredients``,
``recipe`` or ``nutrition``): the answer is also parsed as that task's (``parsed`` in the response). Every response
carries ``routing``: per adapted layer, each expert's mean gate over the generated tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rode_lightning.data.prompts import QUESTIONS
from rode_lightning.inference.engine import Answer, Request
from rode_lightning.serving.errors import RequestError
from rode_lightning.serving.images import ImageLimits, load_image


class ImageURL(BaseModel):
    url: str
    detail: str | None = None


class ContentPart(BaseModel):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | str | None = None


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # Fields of the OpenAI API this server does not use (top_p, seed, user, ...) are accepted and have no effect.
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    task: str | None = None


@dataclass
class ServeItem:
    """A checked request on its way to the model (pickled into the inference worker)."""

    request: Request
    request_id: str
    deadline: float  # time.monotonic() after which the answer is no longer awaited


def parse_request(body: bytes, served_model: str, limits: ImageLimits) -> ChatCompletionRequest:
    """The request in ``body``, or a 400 naming what is wrong (malformed JSON, a field of the wrong type)."""
    try:
        request = ChatCompletionRequest.model_validate_json(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        if first["type"] == "json_invalid":
            raise RequestError(400, f"the request body is not valid JSON ({first['msg']})") from None
        raise RequestError(400, f"{where}: {first['msg']}") from None
    if request.model != served_model:
        raise RequestError(404, f"model {request.model!r} is not served here; this server serves {served_model!r} "
                                "(GET /v1/models)")
    if request.n != 1:
        raise RequestError(400, "n: this server writes one answer per request (n = 1)")
    if request.task is not None and request.task not in QUESTIONS:
        raise RequestError(400, f"task: {request.task!r}; expected one of {', '.join(QUESTIONS)}")
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stops) > 4 or any(not stop for stop in stops):
        raise RequestError(400, "stop: up to 4 non-empty strings")
    return request


def question_and_image(request: ChatCompletionRequest, limits: ImageLimits):
    """The user's question and picture: one user message, text and one image; anything else a 400."""
    roles = [message.role for message in request.messages]
    if roles != ["user"]:
        raise RequestError(400, f"messages: roles {roles}; this server answers one user message (a question about "
                                "one image), as its adapters were trained: no system prompt, no earlier turns")
    content = request.messages[0].content
    parts = [ContentPart(type="text", text=content)] if isinstance(content, str) else list(content or [])
    texts = [part.text for part in parts if part.type == "text" and part.text and part.text.strip()]
    images = [part.image_url for part in parts if part.type == "image_url"]
    if not texts and request.task is None:
        raise RequestError(400, "messages[0].content: no text; ask a question (or give the extension field "
                                "'task' for a task's standard question)")
    if len(images) != 1 or images[0] is None:
        raise RequestError(400, f"messages[0].content: {len(images)} image_url parts; exactly one image is expected")
    url = images[0] if isinstance(images[0], str) else images[0].url
    return "\n".join(texts) or None, load_image(url, limits)


def completion(request_id: str, model: str, answer: Answer, batch_size: int) -> dict:
    """A non-streamed ``chat.completion`` object, with the ``routing`` (and, given a task, ``parsed``) extensions."""
    return {
        "id": request_id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                     "finish_reason": answer.finish_reason, "logprobs": None}],
        "usage": usage(answer), **extensions(answer, batch_size),
    }


def chunk(request_id: str, model: str, delta: dict, finish_reason: str | None = None, **extra) -> dict:
    """One ``chat.completion.chunk`` of a stream."""
    return {"id": request_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}], **extra}


def usage(answer: Answer) -> dict:
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens}


def extensions(answer: Answer, batch_size: int) -> dict:
    """``routing``: per adapted layer, each expert's mean gate over the generated tokens (empty for plain LoRA);
    ``parsed``: what the task's parser read from the answer (only with ``task``); ``batch_size``: how many requests
    shared this answer's model batch."""
    return {"routing": answer.routing, **({"parsed": answer.parsed} if answer.parsed else {}),
            "batch_size": batch_size}
