"""The model side of the server: LitServe's inference worker, which builds the model and answers batches.

LitServe starts this API in its own process, collects up to ``max_batch_size`` requests within ``batch_timeout``
seconds and hands them to :meth:`FoodServingAPI.predict` as one list; the answers are generated as one batch by the
inference engine (``inference/engine.py``, the same generation ``predict`` uses), streamed token by token. A request
the HTTP side gave up on (its client left, or its ``request_timeout_s`` passed) arrives here as an id on
``cancelled``; its row gets no more output, and once every row of the batch is given up the generation stops, which
frees the model for the next batch.
"""

from __future__ import annotations

import dataclasses
import queue
import time
from collections.abc import Callable, Iterator

import litserve as ls

from rode_lightning.inference.engine import InferenceEngine
from rode_lightning.serving.protocol import ServeItem


class FoodServingAPI(ls.LitAPI):
    def __init__(self, build_engine: Callable[..., InferenceEngine], cancelled, spec, max_batch_size: int,
                 batch_timeout: float):
        """``build_engine(device=...)``: builds the model in this worker (pickled by reference: a module-level
        function or a ``functools.partial`` of one); ``cancelled``: a multiprocessing queue of given-up request
        ids."""
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, spec=spec,
                         api_path="/v1/chat/completions")
        self.build_engine = build_engine
        self.cancelled = cancelled
        self._given_up: dict[str, float] = {}  # request id -> its deadline, after which it is forgotten

    def setup(self, device) -> None:
        self.engine = self.build_engine(device=device)

    def decode_request(self, request: ServeItem, **kwargs) -> ServeItem:
        return request  # checked and decoded on the HTTP side (spec.py)

    def batch(self, items: list[ServeItem]) -> list[ServeItem]:
        return list(items)

    def _given_up_on(self, item: ServeItem) -> bool:
        now = time.monotonic()
        arrived = False
        while True:
            try:
                request_id, deadline = self.cancelled.get_nowait()
            except queue.Empty:
                break
            self._given_up[request_id] = deadline
            arrived = True
        if arrived:  # asked per row and token: prune only when ids came in
            # Past its deadline a request is dropped anyway: its id need not be kept (ids that arrive after their
            # request was answered would pile up otherwise).
            self._given_up = {request_id: deadline for request_id, deadline in self._given_up.items()
                              if deadline >= now}
        return item.request_id in self._given_up or now > item.deadline

    def predict(self, items: ServeItem | list[ServeItem], **kwargs) -> Iterator:
        """Per step, one message per request (a list of them when batched): ``{"delta": text}``, and last
        ``{"delta": text, "answer": {...}, "batch_size": n}``; ``{}`` where a row has nothing new."""
        batched = isinstance(items, list)
        rows = items if batched else [items]
        try:
            # One generation per temperature (greedy, or a sampling temperature): a batch shares its decoding.
            for temperature in sorted({item.request.temperature for item in rows}):
                group = [item for item in rows if item.request.temperature == temperature]
                for messages in self._generate(rows, group):
                    yield messages if batched else messages[0]
        finally:
            for item in rows:
                self._given_up.pop(item.request_id, None)

    def _generate(self, rows: list[ServeItem], group: list[ServeItem]) -> Iterator[list[dict]]:
        live = [item for item in group if not self._given_up_on(item)]  # given up while queued: not generated
        if not live:
            return
        index = {id(item): position for position, item in enumerate(live)}
        events = self.engine.stream_batch([item.request for item in live],
                                          stopped=lambda row: self._given_up_on(live[row]))
        try:
            for step in events:
                messages = []
                for item in rows:
                    event = step[index[id(item)]] if id(item) in index else None
                    messages.append({} if event is None else _message(event, len(live)))
                yield messages
        finally:
            events.close()

    def encode_response(self, outputs: Iterator, **kwargs) -> Iterator:
        yield from outputs


def _message(event, batch_size: int) -> dict:
    if event.answer is None:
        return {"delta": event.delta}
    answer = dataclasses.asdict(event.answer)
    answer.pop("token_routing")  # per token: the web demo's, too large for every response
    answer.pop("tokens")
    return {"delta": event.delta, "answer": answer, "batch_size": batch_size}
