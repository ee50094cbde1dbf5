"""One inference engine for every way of using a trained model: a question about an image in, an answer out.

``chat``, ``serve`` and the web demo ask their questions through :class:`InferenceEngine`, which spells them in the
base model's own format (the same conversation format ``predict`` and ``test`` batch with), generates greedily
(``model/generation.py``, as ``predict`` does; sampled when a request asks for a temperature), and returns per request the answer's text, why it ended
(``stop``: the model's end of turn or a stop string; ``length``: ``max_new_tokens``), token counts, the values the
parsers read from it (ingredients, nutrition, category), and the routing behind it: per adapted layer the mean gate of
each expert over the generated tokens, and the gates per token.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from PIL import Image

from rode_lightning.callbacks.router_sparsity import short_layer_names
from rode_lightning.data.conversation import single_turn
from rode_lightning.data.prompts import QUESTIONS
from rode_lightning.metrics.answers import structured_answer
from rode_lightning.model.generation import generate
from rode_lightning.model.module import FoodLMMModule
from rode_lightning.user_errors import UserError


@dataclass
class Request:
    """A question about one image.

    Attributes:
        image: the picture.
        question: the question; ``None`` asks the task's standard question (``task`` then required).
        task: ``category``, ``ingredients``, ``recipe`` or ``nutrition`` to parse the answer as; ``None`` for a free
            question.
        max_new_tokens: longest answer; ``None``: the model's ``max_new_tokens``.
        stop: strings that end the answer where they first appear (not included in it).
        cluster_id: MoCLE's instruction cluster of the question (cluster-routed adapters only).
        id: a name for the request, kept in its answer.
        temperature: 0 for the greedy answer (``predict``'s); above 0 the answer is sampled (requests answered
            together must share it).
    """

    image: Image.Image
    question: str | None = None
    task: str | None = None
    max_new_tokens: int | None = None
    stop: tuple[str, ...] = ()
    cluster_id: int | None = None
    id: str = "request"
    temperature: float = 0.0


@dataclass
class Answer:
    id: str
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    parsed: dict = field(default_factory=dict)
    routing: dict[str, list[float]] = field(default_factory=dict)
    """Per adapted layer (short name, ``layers.3.q_proj``), each expert's mean gate over the generated tokens."""
    token_routing: dict[str, list[list[float]]] = field(default_factory=dict)
    """Per adapted layer, ``generated tokens x experts`` gates."""
    tokens: list[str] = field(default_factory=list)
    """Each generated token decoded alone (the rows of ``token_routing``)."""


@dataclass
class StreamEvent:
    """A piece of a streamed answer: ``delta`` (new text, whole characters), and on the last event the whole
    :class:`Answer` (finish reason, token counts, routing), whose text is all the deltas joined."""

    delta: str
    answer: Answer | None = None


class _Cancelled(Exception):
    """Raised inside ``generate`` (from the streamer) to stop an answer nobody reads any more."""


class _TokenQueue:
    """transformers' streamer interface (``put``, ``end``) into a queue: the prompt's ``put`` is skipped, then each
    step's new token ids (one per row) are queued as a list, and ``None`` at the end. After :meth:`cancel` the next
    ``put`` stops the generation."""

    def __init__(self, rows: int = 1):
        self.rows = rows
        self.tokens: queue.Queue = queue.Queue()
        self._prompt_seen = False
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

    def put(self, value: torch.Tensor) -> None:
        if self.cancelled.is_set():
            raise _Cancelled
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.tokens.put(value.reshape(self.rows, -1)[:, -1].tolist())

    def end(self) -> None:
        self.tokens.put(None)


def question_of(request: Request) -> str:
    """The request's question, or its task's standard question."""
    if request.question is not None and request.question.strip():
        return request.question
    if request.task in QUESTIONS:
        return QUESTIONS[request.task][0]
    raise UserError(f"request {request.id}: give a question or a task ({', '.join(QUESTIONS)})")


def conversation_of(request: Request, cluster_id: int | None = None):
    """The one-turn conversation the model is asked (what its conversation format spells)."""
    return single_turn(request.image.convert("RGB"), question_of(request), None, id=request.id, dataset="request",
                       task=request.task, cluster_id=cluster_id)


def _safe_prefix(text: str, stops: tuple[str, ...]) -> str:
    """What of the answer so far can be sent without being taken back: no trailing whitespace (the answer is
    stripped), no half character (``\ufffd`` of an incomplete UTF-8 sequence), no ending that may begin a stop
    string."""
    text = text.rstrip()
    if text.endswith("\ufffd"):
        text = text.rstrip("\ufffd").rstrip()
    for stop in stops:
        for length in range(min(len(stop), len(text)), 0, -1):
            if stop and text.endswith(stop[:length]):
                text = text[: len(text) - length].rstrip()
                break
    return text


class InferenceEngine:
    """Answers :class:`Request` s with a built :class:`FoodLMMModule` (either base), in eval mode."""

    def __init__(self, module: FoodLMMModule, record_gates: bool = True, clusters=None):
        """``clusters``: a cluster-routed adapter's instruction clusterer (``InstructionClusters.load`` of its
        directory), which places each question in its cluster; required for such an adapter."""
        if module.model is None:
            module.configure_model()
        if module.model.cluster_embedding is not None and clusters is None:
            raise UserError("a cluster-routed adapter (MoCLE) needs its instruction clusters to answer: load them "
                            "from the adapter directory (InstructionClusters.load)")
        self.module = module.eval()
        self.record_gates = record_gates
        self.clusters = clusters

    def _limit(self, request: Request) -> int:
        return request.max_new_tokens or self.module.hparams.max_new_tokens

    def answer(self, requests: list[Request]) -> list[Answer]:
        """The answers to ``requests``, generated as one batch (each row as it would be alone)."""
        return self._answer(requests)

    @torch.no_grad()
    def _answer(self, requests: list[Request], streamer=None) -> list[Answer]:
        if not requests:
            return []
        module = self.module
        temperatures = {request.temperature for request in requests}
        if len(temperatures) > 1:
            raise ValueError(f"requests answered together share one temperature, not {sorted(temperatures)}")
        cluster_ids = [request.cluster_id for request in requests]
        if self.clusters is not None:
            placed = self.clusters.assign([question_of(request) for request in requests]).tolist()
            cluster_ids = [given if given is not None else found for given, found in zip(cluster_ids, placed)]
        conversations = [conversation_of(request, cluster_id) for request, cluster_id in zip(requests, cluster_ids)]
        batch = module.transfer_batch_to_device(module.conversation_format(conversations), module.device, 0)
        limits = [self._limit(request) for request in requests]
        generated = generate(module.model, batch, max(limits), record_gates=self.record_gates, streamer=streamer,
                             temperature=temperatures.pop())
        names = short_layer_names(sorted({name for row in generated for name in row.gates}))
        answers = []
        for row, (request, result, limit) in enumerate(zip(requests, generated, limits)):
            tokens, finish = result.token_ids, result.finish_reason
            if len(tokens) > limit:  # a shorter limit than the batch's: this row's answer ends at its own
                tokens, finish = tokens[:limit], "length"
            text = module.conversation_format.decode([tokens])[0]
            for stop in request.stop:
                if stop and stop in text:
                    text, finish = text[: text.index(stop)].rstrip(), "stop"
            gates = {names[name]: values[: len(tokens)] for name, values in result.gates.items()}
            answers.append(Answer(
                id=request.id, text=text, finish_reason=finish,
                prompt_tokens=int(batch.prompt_attention_mask[row].sum()), completion_tokens=len(tokens),
                parsed=structured_answer(request.task, text),
                routing={name: values.float().mean(dim=0).tolist() for name, values in gates.items() if len(values)},
                token_routing={name: values.float().tolist() for name, values in gates.items()},
                tokens=module.conversation_format.decode([[token] for token in tokens]) if self.record_gates else []))
        return answers

    def stream(self, request: Request) -> Iterator[StreamEvent]:
        """The answer to ``request`` piece by piece as it is generated: the deltas joined equal :meth:`answer`'s
        text, and the last event carries the whole :class:`Answer`. Generation runs in a thread; a consumer that
        stops early (a client that disconnects: ``close()`` of this generator) stops the generation at its next
        token, and returns once the model is free again."""
        events = self.stream_batch([request])
        try:
            for [event] in events:
                yield event
        finally:
            events.close()  # now, not when collected: it stops the generation

    def stream_batch(self, requests: list[Request],
                     stopped: Callable[[int], bool] | None = None) -> Iterator[list[StreamEvent | None]]:
        """:meth:`stream` for several requests generated as one batch (what the server batches): per step a list
        with one event per row (``None`` where a row has nothing new), the last list carrying each row's
        :class:`Answer`. ``stopped(row)`` is asked at every token: a row it stops (its client left, or its time ran
        out) gets no more events, and once every row is stopped the generation stops and frees the model."""
        rows = len(requests)
        streamer = _TokenQueue(rows)
        result: dict = {}

        def run() -> None:
            try:
                result["answers"] = self._answer(requests=requests, streamer=streamer)
            except _Cancelled:
                streamer.end()
            except BaseException as error:  # re-raised in the consumer
                result["error"] = error
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        stop_ids = set(self.module.model.stop_token_ids)
        limits = [self._limit(request) for request in requests]
        tokens: list[list[int]] = [[] for _ in range(rows)]
        ended = [False] * rows  # a stop token or the row's own limit: nothing more of it to show
        gone = [False] * rows  # stopped by the caller
        sent = [""] * rows
        decode = self.module.conversation_format.decode
        try:
            while True:
                step = streamer.tokens.get()
                if step is None:
                    break
                events: list[StreamEvent | None] = [None] * rows
                for row, token in enumerate(step):
                    gone[row] = gone[row] or (stopped is not None and stopped(row))
                    if gone[row] or ended[row]:
                        continue
                    tokens[row].append(token)
                    ended[row] = token in stop_ids or len(tokens[row]) >= limits[row]
                    safe = _safe_prefix(decode([tokens[row]])[0], requests[row].stop)
                    if any(stop and stop in safe for stop in requests[row].stop):
                        ended[row] = True  # the stop string is in: the rest comes with the answer, cut there
                        continue
                    if safe.startswith(sent[row]) and len(safe) > len(sent[row]):
                        events[row] = StreamEvent(safe[len(sent[row]):])
                        sent[row] = safe
                if all(gone):
                    streamer.cancel()
                if any(event is not None for event in events):
                    yield events
        finally:  # also when the consumer leaves early: stop the generation, free the model
            if thread.is_alive() and "answers" not in result:
                streamer.cancel()
            thread.join()
        if "error" in result:
            raise result["error"]
        if "answers" not in result:
            return  # every row stopped
        final: list[StreamEvent | None] = []
        for row, answer in enumerate(result["answers"]):
            if gone[row]:
                final.append(None)
                continue
            if not answer.text.startswith(sent[row]):  # cannot happen with prefix-stable decoding: never send wrong text
                raise RuntimeError(f"streamed text {sent[row]!r} is not a prefix of the answer {answer.text!r}")
            final.append(StreamEvent(answer.text[len(sent[row]):], answer))
        yield final
