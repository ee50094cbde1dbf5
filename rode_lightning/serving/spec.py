"""The HTTP side of the server: OpenAI's ``/v1/chat/completions`` and ``/v1/models`` as a LitServe spec.

Each request is read with a cap on its body (before any JSON or base64 decoding), checked (``protocol.py``, the API
key, the prompt's length), and only then queued for the model (``worker.py``), so a bad request costs the model
nothing and gets its 4xx at once. The answer comes back as a stream of messages from the worker: sent on as
server-sent events for ``stream: true``, or joined into one ``chat.completion``. The server gives up on a request when
its client disconnects or after ``request_timeout_s`` (a 504): the worker is told, and stops generating for it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from dataclasses import dataclass

from fastapi import Request
from starlette.requests import ClientDisconnect
from fastapi.responses import JSONResponse, StreamingResponse
from litserve.specs.base import LitSpec

from rode_lightning.compat import litserve_forget, litserve_submit
from rode_lightning.inference.engine import Answer, Request as EngineRequest, conversation_of
from rode_lightning.serving import protocol
from rode_lightning.serving.errors import RequestError
from rode_lightning.serving.images import ImageLimits
from rode_lightning.user_errors import UserError


@dataclass
class ServingLimits:
    """Attributes:
        max_body_bytes: largest request body, read before it is decoded.
        request_timeout_s: how long a request may wait for its whole answer (queue and generation); then a 504.
        max_new_tokens: the longest answer a request may ask for (``max_tokens``); also the default.
        context_length: the language model's context; a prompt plus ``max_tokens`` beyond it is refused.
    """

    max_body_bytes: int = 16 * 2**20
    request_timeout_s: float = 60.0
    max_new_tokens: int = 256
    context_length: int = 2048


class FoodChatSpec(LitSpec):
    def __init__(self, model_name: str, conversation_format, images: ImageLimits, limits: ServingLimits,
                 cancelled, api_key: str | None = None):
        """``conversation_format``: the model's (to count a prompt's tokens here); ``cancelled``: a multiprocessing
        queue on which the ids of given-up requests go to the worker."""
        super().__init__()
        self.api_path = "/v1/chat/completions"
        self.model_name = model_name
        self.conversation_format = conversation_format
        self.images = images
        self.limits = limits
        self.cancelled = cancelled
        self.api_key = api_key

    @property
    def stream(self) -> bool:
        return True  # the worker always streams; a non-streamed answer is the stream joined

    def pre_setup(self, lit_api) -> None:
        self.add_endpoint(self.api_path, self.chat_completion, ["POST"])
        self.add_endpoint("/v1/models", self.models, ["GET"])

    def decode_request(self, request, context_kwargs=None):
        return request

    def encode_response(self, output, context_kwargs=None):
        yield from output

    # -- endpoints -------------------------------------------------------------------------------------------------

    async def models(self, request: Request):
        try:
            self._check_key(request)
        except RequestError as error:
            return JSONResponse(error.body(), status_code=error.status)
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": 0,
                                            "owned_by": "rode_lightning"}]}

    async def chat_completion(self, request: Request):
        try:
            self._check_key(request)
            body = await self._body(request)
            chat = protocol.parse_request(body, self.model_name, self.images)
            # Decoding the image and counting the prompt's tokens take a while: off the event loop, which serves the
            # other requests' streams meanwhile.
            item = await asyncio.to_thread(self._item, chat)
        except RequestError as error:
            return JSONResponse(error.body(), status_code=error.status)
        except ClientDisconnect:  # the client left while sending its body: nobody to answer
            return JSONResponse({}, status_code=499)
        uid, messages = self._submit(item)
        if chat.stream:
            return await self._streamed(request, chat, item, uid, messages)
        return await self._joined(request, item, uid, messages)

    # -- checks ----------------------------------------------------------------------------------------------------

    def _check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer ") or not secrets.compare_digest(given[7:].encode(), self.api_key.encode()):
            raise RequestError(401, "a wrong or missing API key: send 'Authorization: Bearer <key>', the key the "
                                    "server was started with (--api_key)")

    async def _body(self, request: Request) -> bytes:
        cap = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise RequestError(413, f"the request body has {declared} bytes; this server takes up to {cap}")
        chunks, size = [], 0
        async for piece in request.stream():
            size += len(piece)
            if size > cap:
                raise RequestError(413, f"the request body is over {cap} bytes, this server's limit")
            chunks.append(piece)
        return b"".join(chunks)

    def _item(self, chat: protocol.ChatCompletionRequest) -> protocol.ServeItem:
        question, image = protocol.question_and_image(chat, self.images)
        wanted = chat.max_completion_tokens or chat.max_tokens
        if wanted is not None and wanted > self.limits.max_new_tokens:
            raise RequestError(400, f"max_tokens: {wanted}; this server writes answers of up to "
                                    f"{self.limits.max_new_tokens} tokens (serve --max_new_tokens)")
        stops = (chat.stop,) if isinstance(chat.stop, str) else tuple(chat.stop or ())
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        engine_request = EngineRequest(image, question, chat.task, wanted or self.limits.max_new_tokens, stops,
                                       id=request_id, temperature=chat.temperature or 0.0)
        self._check_length(engine_request)
        return protocol.ServeItem(engine_request, request_id, time.monotonic() + self.limits.request_timeout_s)

    def _check_length(self, request: EngineRequest) -> None:
        try:
            batch = self.conversation_format([conversation_of(request)])
        except UserError as error:
            raise RequestError(400, f"the prompt is too long for this model: {error}") from None
        prompt = int(batch.prompt_attention_mask.sum())
        if prompt + request.max_new_tokens > self.limits.context_length:
            raise RequestError(400, f"the prompt is too long for this model: its {prompt} tokens and max_tokens "
                                    f"{request.max_new_tokens} are over the context of {self.limits.context_length}")

    # -- the way to the worker and back ----------------------------------------------------------------------------

    def _submit(self, item: protocol.ServeItem):
        return litserve_submit(self, item)

    async def _next(self, messages, item: protocol.ServeItem) -> dict | None:
        """The worker's next message for this request, ``None`` at its end; a 504 past the deadline."""
        remaining = item.deadline - time.monotonic()
        try:
            data, failed = await asyncio.wait_for(anext(messages), timeout=max(remaining, 0.001))
        except StopAsyncIteration:
            return None
        except asyncio.TimeoutError:
            raise _timed_out(self.limits) from None
        if failed:
            status_code = getattr(data, "status_code", 500)
            if status_code == 504:
                raise RequestError(504, "the request waited in the queue past request_timeout_s and was given up")
            raise RuntimeError(f"the model failed on request {item.request_id}: {data!r}")
        return json.loads(data)

    def _give_up(self, uid: str, item: protocol.ServeItem) -> None:
        self.cancelled.put((item.request_id, item.deadline))
        litserve_forget(self, uid)

    async def _joined(self, http: Request, item: protocol.ServeItem, uid: str, messages):
        text, final = [], None
        watcher = asyncio.create_task(_disconnected(http))
        try:
            while True:
                next_message = asyncio.create_task(self._next(messages, item))
                done, _ = await asyncio.wait({next_message, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if next_message not in done:  # the client left: nobody to answer
                    next_message.cancel()
                    self._give_up(uid, item)
                    return JSONResponse({}, status_code=499)
                message = next_message.result()
                if message is None:
                    break
                text.append(message.get("delta", ""))
                final = message if "answer" in message else final
        except RequestError as error:
            self._give_up(uid, item)
            return JSONResponse(error.body(), status_code=error.status)
        except BaseException:  # a failed worker (or a cancelled handler): stop waiting, keep no buffer
            self._give_up(uid, item)
            raise
        finally:
            watcher.cancel()
        litserve_forget(self, uid)
        if final is None:  # the worker dropped it: its deadline passed before the HTTP side's timer fired
            return JSONResponse(_timed_out(self.limits).body(), status_code=504)
        answer = Answer(**final["answer"])
        assert "".join(text) == answer.text, "the streamed pieces must join to the answer"
        return protocol.completion(item.request_id, self.model_name, answer, final["batch_size"])

    async def _streamed(self, http: Request, chat, item: protocol.ServeItem, uid: str, messages):
        try:
            first = await self._next(messages, item)  # a 504 before any token is still a status, not an event
            if first is None:  # dropped by the worker at its deadline
                raise _timed_out(self.limits)
        except RequestError as error:
            self._give_up(uid, item)
            return JSONResponse(error.body(), status_code=error.status)
        except BaseException:
            self._give_up(uid, item)
            raise
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)

        async def events():
            finished = False
            try:
                yield _sse(protocol.chunk(item.request_id, self.model_name, {"role": "assistant", "content": ""}))
                message, answered = first, False
                while message is not None:
                    if message.get("delta"):
                        yield _sse(protocol.chunk(item.request_id, self.model_name, {"content": message["delta"]}))
                    if "answer" in message:
                        answered = True
                        answer = Answer(**message["answer"])
                        yield _sse(protocol.chunk(item.request_id, self.model_name, {}, answer.finish_reason,
                                                  **protocol.extensions(answer, message["batch_size"])))
                        if include_usage:
                            yield _sse({**protocol.chunk(item.request_id, self.model_name, {}), "choices": [],
                                        "usage": protocol.usage(answer)})
                    message = await self._next(messages, item)
                if not answered:  # dropped by the worker at its deadline: no [DONE] that would look like success
                    raise _timed_out(self.limits)
                finished = True
                yield "data: [DONE]\n\n"
            except RequestError as error:  # past the deadline mid-answer: the stream ends with the error
                yield _sse(error.body())
            finally:
                if not finished:  # a timeout, or the client left (the response task cancelled)
                    self._give_up(uid, item)
                litserve_forget(self, uid)

        return StreamingResponse(events(), media_type="text/event-stream")


def _timed_out(limits: ServingLimits) -> RequestError:
    return RequestError(504, f"no answer within request_timeout_s ({limits.request_timeout_s:g} s); the request was "
                             "given up")


async def _disconnected(request: Request) -> None:
    """Returns once the client has closed the connection."""
    while not await request.is_disconnected():
        await asyncio.sleep(0.05)


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"
