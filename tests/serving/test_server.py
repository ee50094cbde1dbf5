"""``python -m rode_lightning serve`` started on 127.0.0.1 and called with the real ``openai`` client: the answers
``predict`` gives, streamed and not; concurrent requests batched; every bad input a 4xx with the server serving on;
a timed-out and a disconnected request freeing the model.

One server for the module (its start costs about 20 s): the tiny demo configuration with a RoDE adapter trained a
few steps (``tests/conftest.py``, ``tiny_runs``), fp32.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from openai import APIStatusError, OpenAI
from PIL import Image

from rode_lightning.cli import main
from tests.conftest import tiny_cli_args

ROOT = Path(__file__).parents[2]
KEY = "test-key"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def data_url(image: Image.Image | bytes, kind: str = "png") -> str:
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, kind.upper())
        image = buffer.getvalue()
    return f"data:image/{kind};base64," + base64.b64encode(image).decode()


def ask(question: str | None, image_url: str) -> list[dict]:
    content = ([{"type": "text", "text": question}] if question else []) + [
        {"type": "image_url", "image_url": {"url": image_url}}]
    return [{"role": "user", "content": content}]


class Served:
    def __init__(self, url: str, model: str, photos: Path, predictions: list[dict], process: subprocess.Popen,
                 log: Path):
        self.url, self.model, self.photos, self.predictions, self.process, self.log = (
            url, model, photos, predictions, process, log)
        self.client = OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)

    def good_request(self) -> str:
        answer = self.client.chat.completions.create(
            model=self.model, max_tokens=4, messages=ask("What is on the plate?", data_url(
                Image.new("RGB", (40, 40), (120, 60, 30)))))
        return answer.choices[0].message.content


@pytest.fixture(scope="module")
def served(cli_demo_dir, tiny_runs, tmp_path_factory) -> Served:
    root = tmp_path_factory.mktemp("serve")
    logs, adapter = tiny_runs.logs, tiny_runs.rode
    photos = root / "photos"
    photos.mkdir()
    demo_photos = sorted((cli_demo_dir / "unifood" / "images").glob("test_*.png"))[:3]  # the demo's test photos
    requests = []
    for number, path in enumerate(demo_photos):
        Image.open(path).save(photos / f"dish{number}.png")
        requests += [{"id": f"{number}-ingredients", "image": f"dish{number}.png", "task": "ingredients"},
                     {"id": f"{number}-free", "image": f"dish{number}.png", "question": "What dish is this?"}]
    (photos / "requests.jsonl").write_text("".join(json.dumps(request) + "\n" for request in requests))
    main(["predict", *tiny_cli_args(cli_demo_dir, logs), "--model.adapter_path", str(adapter),
          "--data.predict.source", str(photos / "requests.jsonl")])
    predictions = [json.loads(line) for line in (adapter.parent / "predict" / "predictions.jsonl").read_text()
                   .splitlines()]
    port = _free_port()
    log = root / "server.log"
    command = [sys.executable, "-m", "rode_lightning", "serve", "--port", str(port), "--api_key", KEY,
               "--image_folder", str(photos), "--max_batch_size", "4", "--batch_timeout", "0.5",
               "--request_timeout_s", "2", "--max_new_tokens", "450", "--max_body_mb", "1", "--max_image_mb", "0.25",
               *tiny_cli_args(cli_demo_dir, logs), "--model.adapter_path", str(adapter)]
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=root, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).text == "ok":
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    yield Served(url, str(adapter), photos, predictions, process, log)
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=5)  # LitServe's workers may not stop on SIGINT (measured: the full 30 s of a longer wait)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def _question_of(prediction: dict) -> tuple[str | None, dict]:
    if prediction["task"] is not None:
        return None, {"task": prediction["task"]}
    return prediction["question"], {}


def test_streamed_and_whole_answers_are_predicts(served):
    for prediction in served.predictions:
        question, extra = _question_of(prediction)
        url = data_url((served.photos / prediction["image"]).read_bytes())
        whole = served.client.chat.completions.create(model=served.model, messages=ask(question, url), max_tokens=4,
                                                      extra_body=extra)
        assert whole.choices[0].message.content == prediction["answer"], prediction["id"]
        assert whole.choices[0].finish_reason in ("stop", "length")
        assert whole.usage.completion_tokens <= 4 and whole.usage.prompt_tokens > 0
        routing = whole.model_extra["routing"]
        assert routing and all(len(gates) == 4 and min(gates) >= 0 for gates in routing.values())  # RoDE, 4 experts
        if prediction["task"] == "ingredients":
            assert whole.model_extra["parsed"]["ingredients"] == prediction["ingredients"]
        pieces, finish, extensions = [], None, None
        for chunk in served.client.chat.completions.create(
                model=served.model, messages=ask(question, f"{prediction['image']}"), max_tokens=4, stream=True,
                extra_body=extra):  # the same photo, named as a path inside the image folder
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.choices and chunk.choices[0].finish_reason:
                finish, extensions = chunk.choices[0].finish_reason, chunk.model_extra
        assert "".join(pieces) == prediction["answer"] and finish == whole.choices[0].finish_reason
        assert extensions["routing"] == routing


def test_a_positive_temperature_samples_and_zero_is_greedy(served):
    prediction = served.predictions[1]
    question, extra = _question_of(prediction)
    url = data_url((served.photos / prediction["image"]).read_bytes())
    greedy = served.client.chat.completions.create(model=served.model, messages=ask(question, url), max_tokens=4,
                                                   temperature=0, extra_body=extra)
    assert greedy.choices[0].message.content == prediction["answer"]
    sampled = {served.client.chat.completions.create(model=served.model, messages=ask(question, url), max_tokens=4,
                                                     temperature=2.0, extra_body=extra).choices[0].message.content
               for _ in range(4)}
    assert sampled != {prediction["answer"]}  # at temperature 2 four draws of four tokens are not all the greedy one


def test_stop_strings_end_the_answer_and_are_left_out(served):
    prediction = served.predictions[1]
    question, extra = _question_of(prediction)
    url = data_url((served.photos / prediction["image"]).read_bytes())
    full = prediction["answer"]
    stop = full.split()[-1] if len(full.split()) > 1 else None
    if stop is None:
        pytest.skip("a one-word answer: no stop string inside it")
    answer = served.client.chat.completions.create(model=served.model, messages=ask(question, url), max_tokens=4,
                                                   stop=[stop], extra_body=extra)
    assert answer.choices[0].message.content == full[: full.index(stop)].rstrip()
    assert answer.choices[0].finish_reason == "stop"


def test_concurrent_requests_share_model_batches_and_get_the_answers_given_alone(served):
    images = [Image.new("RGB", (40, 40), (40 * number, 200 - 30 * number, 90)) for number in range(4)]
    alone = [served.client.chat.completions.create(model=served.model, messages=ask("What is this?", data_url(image)),
                                                   max_tokens=6) for image in images]
    assert all(answer.model_extra["batch_size"] == 1 for answer in alone)
    together: list = [None] * len(images)

    def call(number: int) -> None:
        together[number] = served.client.chat.completions.create(
            model=served.model, messages=ask("What is this?", data_url(images[number])), max_tokens=6)

    threads = [threading.Thread(target=call, args=(number,)) for number in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [answer.choices[0].message.content for answer in together] == [
        answer.choices[0].message.content for answer in alone]
    batches = sum(1 / answer.model_extra["batch_size"] for answer in together)
    assert batches < len(images), [answer.model_extra["batch_size"] for answer in together]


def test_models_health_and_the_api_key(served):
    assert httpx.get(f"{served.url}/health").text == "ok"
    assert [model.id for model in served.client.models.list()] == [served.model]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = httpx.get(f"{served.url}/v1/models", headers=headers)
        assert response.status_code == 401 and "API key" in response.json()["error"]["message"]
    wrong = OpenAI(base_url=f"{served.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(APIStatusError) as refused:
        wrong.chat.completions.create(model=served.model, messages=ask("hi", data_url(Image.new("RGB", (8, 8)))))
    assert refused.value.status_code == 401


def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (7000, 7000)).save(buffer, "PNG")  # 49 MP of zeros in a few kB: over the 36 MP limit
    return buffer.getvalue()


def _truncated() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()[:-40]


def _noise(size: int) -> bytes:
    return os.urandom(size)


def bad_requests(served) -> list[tuple[str, dict, int, str]]:
    """(what, request body or raw bytes, expected status, words of the message)."""
    good_image = data_url(Image.new("RGB", (32, 32), (10, 20, 30)))
    outside = served.photos.parent / "secret.png"
    Image.new("RGB", (16, 16)).save(outside)
    link = served.photos / "link.png"
    if not link.exists():
        link.symlink_to(outside)
    noisy = Image.frombytes("RGB", (400, 400), _noise(400 * 400 * 3))

    def body(question="What is this?", image=good_image, **extra) -> dict:
        return {"model": served.model, "messages": ask(question, image), "max_tokens": 4, **extra}

    return [
        ("not an image", body(image=data_url(b"this is not a picture")), 400, "not a readable image"),
        ("a truncated image", body(image=data_url(_truncated())), 400, "not a readable image"),
        ("bad base64", body(image="data:image/png;base64,@@@@"), 400, "not valid base64"),
        ("an image over the size limit", body(image=data_url(noisy)), 413, "bytes"),
        ("a decompression bomb", body(image=data_url(_bomb())), 413, "pixels"),
        ("a body over the size limit", body(question="x" * (1100 * 1024)), 413, "request body"),
        ("no text", body(question=None), 400, "no text"),
        ("a path outside the folder", body(image=str(outside)), 400, "outside the server's image folder"),
        ("a path climbing out", body(image="../secret.png"), 400, "outside the server's image folder"),
        ("a symbolic link out", body(image="link.png"), 400, "outside the server's image folder"),
        ("an http URL", body(image="http://example.com/a.png"), 400, "http URLs are not fetched"),
        ("an https URL", body(image="https://example.com/a.png"), 400, "https URLs are not fetched"),
        ("a file URL", body(image=f"file://{outside}"), 400, "file URLs are not fetched"),
        ("a prompt over the context", body(question="rice " * 600), 400, "prompt is too long"),
        ("a prompt and max_tokens over the context", body(question="rice " * 200, max_tokens=290), 400,
         "are over the context of 512"),
        ("max_tokens over the server's", body(max_tokens=100000), 400, "max_tokens"),
        ("malformed JSON", b'{"model": "x", "messages": [', 400, "not valid JSON"),
        ("a wrong field type", body(max_tokens="many"), 400, "max_tokens"),
        ("an unknown model", {**body(), "model": "gpt-4"}, 404, "not served here"),
        ("a system prompt", {**body(), "messages": [{"role": "system", "content": "be brief"}, *ask("hi",
                                                                                                    good_image)]},
         400, "one user message"),
        ("a temperature over 2", body(temperature=2.5), 400, "temperature"),
        ("no image", {**body(), "messages": [{"role": "user", "content": "What is this?"}]}, 400, "0 image_url"),
    ]


def test_every_bad_input_gets_its_4xx_and_the_server_serves_on(served):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    for what, request, status, words in bad_requests(served):
        content = request if isinstance(request, bytes) else json.dumps(request).encode()
        response = httpx.post(f"{served.url}/v1/chat/completions", content=content, headers=headers, timeout=60)
        assert response.status_code == status, (what, response.status_code, response.text[:300])
        assert words in response.json()["error"]["message"], (what, response.text[:300])
        assert served.good_request() is not None, what  # and a good request right after succeeds
    assert served.process.poll() is None


def _long_request(served, stream: bool):
    return served.client.chat.completions.create(
        model=served.model, messages=ask("Describe this dish.", data_url(Image.new("RGB", (40, 40), (90, 90, 90)))),
        max_tokens=450, stream=stream)


def _tokens_per_second(served) -> float:
    start = time.monotonic()
    answer = served.client.chat.completions.create(
        model=served.model, messages=ask("Describe it.", data_url(Image.new("RGB", (40, 40), (9, 9, 9)))),
        max_tokens=60)
    return answer.usage.completion_tokens / (time.monotonic() - start)


def test_a_timed_out_request_gets_a_504_and_frees_the_model(served):
    rate = _tokens_per_second(served)
    if 450 / rate < 4:
        pytest.skip(f"the model writes {rate:.0f} tokens/s: 450 tokens take less than twice the 2 s timeout")
    start = time.monotonic()
    with pytest.raises(APIStatusError) as timed_out:
        _long_request(served, stream=False)
    assert timed_out.value.status_code == 504 and "request_timeout_s" in timed_out.value.message
    assert time.monotonic() - start < 2 + 2
    # The model stopped generating for it: a short request is answered long before 450 tokens could be written.
    start = time.monotonic()
    served.good_request()
    assert time.monotonic() - start < 0.5 * 450 / rate


def test_a_client_that_disconnects_stops_its_generation(served):
    start = time.monotonic()
    stream = _long_request(served, stream=True)
    received = 0
    for chunk in stream:
        received += bool(chunk.choices and chunk.choices[0].delta.content)
        if received == 3:
            break
    stream.close()  # the client leaves mid-answer
    served.good_request()
    # Answered before the long request's 2 s timeout would have stopped it: its generation stopped when its client
    # left (the server is told of a disconnect; without that the model would write on until the timeout).
    assert time.monotonic() - start < 1.8
