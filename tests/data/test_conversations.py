"""Conversation JSON (LLaVA-Instruct / ShareGPT style) as a dataset: reading it as people have it, bad records named
or skipped, the demo copy reproducible, each conversation one sample for its task, and every answer of a multi-turn
conversation trained on in both conversation formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from rode_lightning.conventions import IGNORE_INDEX, IMAGE_PLACEHOLDER, SYSTEM_PROMPT, TASKS
from rode_lightning.data.conversation import Conversation, Turn
from rode_lightning.data.datasets import DATASETS, ReadRequest
from rode_lightning.data.datasets.conversations.demo import generate_demo_conversations
from rode_lightning.data.datasets.conversations.reader import read_conversation_split
from rode_lightning.data.dishes import directory_digest
from rode_lightning.data.errors import DataFormatError, MissingSplitError, SkipCounter
from rode_lightning.data.instructions import InstructionDataset, Sample
from rode_lightning.data.prompts import CONVERSATION_TASK, answer_for, question_for, task_available
from rode_lightning.data.splits import is_held_out
from rode_lightning.data.tokenizer import load_tokenizer
from rode_lightning.model.formats import ChatTemplateFormat, LlavaFormat
from rode_lightning.user_errors import ExistingFileError, MissingFileError, UserError

GOOD = {"id": "000123", "image": "images/a.png", "task": "ingredients", "conversations": [
    {"from": "human", "value": "<image>\nWhat dish is this?"}, {"from": "gpt", "value": "fried rice"},
    {"from": "human", "value": "What is in it?"}, {"from": "gpt", "value": "rice, egg, carrot"}]}
# The chat APIs' spelling (ms-swift's "messages"), an image list of one, no id and no task: free text.
CHAT = {"images": ["images/b.png"], "messages": [
    {"role": "user", "content": "Is it spicy? <image>"}, {"role": "assistant", "content": "No, it is mild."}]}


def write_root(root: Path, splits: dict[str, list], suffix: str = ".json", val: bool = True) -> Path:
    """Images ``a.png``, ``b.png`` (and a broken one) and the splits' files; a val file unless ``val`` is false, so
    that train is the whole train file."""
    if val and "train" in splits:
        splits = {"val": [GOOD], **splits}
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name, colour in (("a.png", (200, 30, 30)), ("b.png", (30, 200, 30))):
        Image.new("RGB", (32, 32), colour).save(root / "images" / name)
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    for split, records in splits.items():
        if suffix == ".json":
            text = json.dumps(records)
        else:
            text = "\n".join(record if isinstance(record, str) else json.dumps(record) for record in records) + "\n"
        (root / f"{split}{suffix}").write_text(text)
    return root


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_a_multi_turn_file_is_read_with_its_roles_turns_and_task(tmp_path, suffix):
    write_root(tmp_path, {"train": [GOOD, CHAT], "test": [GOOD]}, suffix)
    first, second = read_conversation_split(tmp_path, "train", dataset="mine")
    assert first.id == "000123" and first.dataset == "mine" and first.turns_task == "ingredients"
    assert first.image == str(tmp_path / "images" / "a.png")
    assert first.turns == (Turn("user", "What dish is this?"), Turn("assistant", "fried rice"),
                           Turn("user", "What is in it?"), Turn("assistant", "rice, egg, carrot"))
    assert second.turns == (Turn("user", "Is it spicy?"), Turn("assistant", "No, it is mild."))
    assert second.turns_task is None and second.id == ("train-1" if suffix == ".json" else "train-2")
    assert not any(IMAGE_PLACEHOLDER in turn.text for record in (first, second) for turn in record.turns)
    assert first.category is None and not first.ingredients and not first.conversations


def test_json_and_jsonl_give_the_same_records(tmp_path):
    records = {}
    for suffix in (".json", ".jsonl"):
        write_root(tmp_path / suffix[1:], {"train": [GOOD, {**GOOD, "id": 7}]}, suffix)
        records[suffix] = [(r.id, Path(r.image).name, r.turns, r.turns_task)
                           for r in read_conversation_split(tmp_path / suffix[1:], "train")]
    assert records[".json"] == records[".jsonl"] and [r[0] for r in records[".json"]] == ["000123", "7"]


def test_repeated_ids_stay_distinct_records(tmp_path):
    """LLaVA's data repeats an image's id for its several conversations; each stays a sample of its own."""
    write_root(tmp_path, {"train": [GOOD, GOOD, GOOD]})
    assert [r.id for r in read_conversation_split(tmp_path, "train")] == ["000123", "000123#2", "000123#3"]


def test_val_is_held_out_of_train_by_image_when_there_is_no_val_file(tmp_path):
    images = [f"images/{index}.png" for index in range(40)]
    held = [image for image in images if is_held_out(image, 0.25)]
    assert 0 < len(held) < len(images)  # the chosen images give both sides something
    write_root(tmp_path, {"train": [{**GOOD, "id": str(i), "image": image} for i, image in enumerate(images)]
                          + [{**CHAT, "id": "again", "images": [held[0]]}]},  # a second conversation, held image
               val=False)
    for image in images:
        Image.new("RGB", (16, 16)).save(tmp_path / image)
    train = read_conversation_split(tmp_path, "train", val_fraction=0.25)
    val = read_conversation_split(tmp_path, "val", val_fraction=0.25)
    assert sorted(Path(r.image).name for r in val) == sorted(Path(image).name for image in held + held[:1])
    assert {r.id for r in train}.isdisjoint({r.id for r in val}) and len(train) + len(val) == len(images) + 1
    assert "again" in {r.id for r in val}  # every conversation about a held-out image is in val
    with pytest.raises(MissingSplitError, match=r"split 'test': .* no test.json or test.jsonl"):
        read_conversation_split(tmp_path, "test")
    # With a val file, train is the whole train file and val the file.
    write_root(tmp_path, {"val": [CHAT]})
    assert len(read_conversation_split(tmp_path, "train", val_fraction=0.25)) == len(images) + 1
    assert [r.turns_task for r in read_conversation_split(tmp_path, "val", val_fraction=0.25)] == [None]


def _turns(*pairs) -> list[dict]:
    return [{"from": role, "value": value} for role, value in pairs]


BAD = [
    ({**GOOD, "image": None}, "no image"),
    ({**CHAT, "images": ["images/a.png", "images/b.png"]}, "several images"),
    ({**GOOD, "conversations": _turns(("gpt", "hello"), ("human", "<image>\nhi"))}, "first turn not human"),
    ({**GOOD, "conversations": _turns(("human", "<image>\nQ?"), ("human", "Q?"), ("gpt", "A"))},
     "roles not alternating: turn 2"),
    ({**GOOD, "conversations": _turns(("human", "<image>\nQ?"), ("gpt", "  "))}, "empty turn: turn 2"),
    ({**GOOD, "conversations": _turns(("human", "<image>"), ("gpt", "A"))}, "empty turn: turn 1"),
    ({**GOOD, "conversations": _turns(("human", "<image>\nQ?"), ("gpt", "A"), ("human", "Q?"))}, "no final answer"),
    ({**GOOD, "conversations": _turns(("human", "Q?"), ("gpt", "A"), ("human", "<image>\nQ?"), ("gpt", "A"))},
     "misplaced <image>: in turn 3"),
    ({**GOOD, "conversations": _turns(("narrator", "Once"), ("human", "Q?"), ("gpt", "A"))}, "unknown role"),
    ({**GOOD, "conversations": _turns(("system", "Be brief."), ("human", "Q?"), ("gpt", "A"))}, "system turn"),
    ({**GOOD, "conversations": []}, "no conversation"),
    ({**GOOD, "task": "calories"}, "unknown task: 'calories'"),
    ({**GOOD, "image": "images/missing.png"}, "missing image"),
    ({**GOOD, "image": "images/broken.png"}, "unreadable image"),
]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
@pytest.mark.parametrize("bad, reason", BAD, ids=[reason.split(":")[0] for _, reason in BAD])
def test_a_bad_record_is_named_by_file_and_record_or_skipped_and_counted(tmp_path, suffix, bad, reason):
    write_root(tmp_path, {"train": [GOOD, bad]}, suffix)
    location = "train.json\\[1\\]" if suffix == ".json" else "train.jsonl:2"
    with pytest.raises(DataFormatError, match=rf"{location}: {reason}"):
        read_conversation_split(tmp_path, "train")
    skipped = SkipCounter()
    assert [r.id for r in read_conversation_split(tmp_path, "train", on_error="skip", skipped=skipped)] == ["000123"]
    assert list(skipped.values()) == [1] and reason.split(":")[0] in skipped.report()


def test_text_that_is_not_utf8_is_named(tmp_path):
    write_root(tmp_path, {"train": [GOOD, GOOD]}, ".jsonl")
    lines = (tmp_path / "train.jsonl").read_bytes().splitlines()
    (tmp_path / "train.jsonl").write_bytes(lines[0] + b"\n" + lines[1].replace(b"rice, egg", b"r\xe9sotto") + b"\n")
    with pytest.raises(DataFormatError, match=r"train.jsonl:2: not UTF-8"):
        read_conversation_split(tmp_path, "train")
    skipped = SkipCounter()
    assert len(read_conversation_split(tmp_path, "train", on_error="skip", skipped=skipped)) == 1
    assert "not UTF-8" in skipped.report()
    # A JSON list is one document: the file is named, with the byte.
    (tmp_path / "train.jsonl").unlink()
    (tmp_path / "train.json").write_bytes(json.dumps([GOOD]).encode().replace(b"rice", b"r\xe9ce", 1))
    with pytest.raises(DataFormatError, match=r"train.json: not UTF-8 text \(byte \d+\)"):
        read_conversation_split(tmp_path, "train")
    (tmp_path / "train.json").write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(DataFormatError, match=r"train.json: malformed JSON: Extra data .*name the file .jsonl"):
        read_conversation_split(tmp_path, "train")


def test_the_plug_in_checks_its_root_and_reads_named_files(tmp_path):
    dataset = DATASETS["conversations"]
    assert dataset.tasks == TASKS + (CONVERSATION_TASK,)
    write_root(tmp_path, {})
    (tmp_path / "llava_instruct_150k.json").write_text(json.dumps([{**GOOD, "image": "a.png"}]))
    with pytest.raises(MissingFileError, match=r"data.sources\[0\].root: .* has no train.json or train.jsonl; it "
                                               r"holds llava_instruct_150k.json: name the train file with "
                                               r"data.sources\[0\].options.files"):
        dataset.check(tmp_path, dataset.parse_options(None, "data.sources[0]"), "data.sources[0]")
    (tmp_path / "val.json").write_text(json.dumps([{**GOOD, "image": "b.png"}]))
    options = dataset.parse_options({"files": {"train": "llava_instruct_150k.json", "val": "val.json"},
                                     "image_folder": "images"}, "data.sources[0]")
    dataset.check(tmp_path, options, "data.sources[0]")
    records = dataset.read(tmp_path, options, ReadRequest("train", name="llava"))
    assert [(r.dataset, r.image) for r in records] == [("llava", str(tmp_path / "images" / "a.png"))]
    with pytest.raises(UserError, match=r"options: \['folder'\]"):
        dataset.parse_options({"folder": "x"}, "data.sources[0]")


# ----------------------------------------------------------------------------- the demo copy


def test_the_demo_is_byte_identical_for_a_seed_and_reads_back(tmp_path):
    sizes = {"train": 12, "test": 4}
    digests = [directory_digest(generate_demo_conversations(tmp_path / name, seed, sizes))
               for name, seed in (("a", 3), ("b", 3), ("c", 4))]
    assert digests[0] == digests[1] != digests[2]
    generate_demo_conversations(tmp_path / "a", 3, sizes)  # the same arguments: nothing rewritten
    assert directory_digest(tmp_path / "a") == digests[0]
    assert sorted(path.name for path in (tmp_path / "a").glob("*.json")) == ["test.json", "train.json"]
    raw = json.loads((tmp_path / "a" / "train.json").read_text())
    assert all(record["conversations"][0]["value"].startswith("<image>\n") for record in raw)
    records = [record for split in ("train", "val")
               for record in read_conversation_split(tmp_path / "a", split, val_fraction=0.5)]
    assert len(records) == 12 and all(len(r.turns) >= 4 for r in records)
    assert {r.turns_task for r in records} == {None, "ingredients", "recipe", "nutrition"}
    # The other arguments replace the copy; a folder of one's own conversations is never taken for one.
    generate_demo_conversations(tmp_path / "a", 4, sizes)
    assert directory_digest(tmp_path / "a") == digests[2]
    write_root(tmp_path / "mine", {"train": [GOOD]})
    with pytest.raises(ExistingFileError,
                       match=r"holds \['images', 'train.json', 'val.json'\] but no .demo_conversations marker"):
        generate_demo_conversations(tmp_path / "mine", 0, sizes)
    assert (tmp_path / "mine" / "train.json").is_file()


# ----------------------------------------------------------------------------- samples


def test_each_conversation_is_one_sample_for_its_task_with_all_its_turns(tmp_path):
    write_root(tmp_path, {"train": [GOOD, CHAT]})
    tagged, free = read_conversation_split(tmp_path, "train")
    tasks = TASKS + (CONVERSATION_TASK,)
    assert [task for task in tasks if task_available(tagged, task)] == ["ingredients"]
    assert [task for task in tasks if task_available(free, task)] == [CONVERSATION_TASK]
    assert (question_for(tagged, "ingredients"), answer_for(tagged, "ingredients")) == ("What is in it?",
                                                                                          "rice, egg, carrot")
    dataset = InstructionDataset([Sample(tagged, "ingredients"), Sample(free, CONVERSATION_TASK, cluster_id=2)])
    first, second = dataset[0], dataset[1]
    assert first.turns == tagged.turns and first.task == "ingredients" and first.reference == "rice, egg, carrot"
    assert first.question == "What is in it?" and first.image.size == (32, 32)
    assert second.turns == free.turns and second.task == CONVERSATION_TASK and second.cluster_id == 2
    assert dataset.question(1) == "Is it spicy?"


# ----------------------------------------------------------------------------- every answer trained on

TURNS = (Turn("user", "What dish is shown in the image?"), Turn("assistant", "Ramen with egg."),
         Turn("user", "Which ingredients are in this dish?"), Turn("assistant", "rice, chicken, onion"),
         Turn("user", "How many calories does this meal have?"), Turn("assistant", "About 450 kcal"))
ANSWERS = [turn.text for turn in TURNS if turn.role == "assistant"]


def _runs(labels: torch.Tensor) -> list[list[int]]:
    """The runs of kept labels, each a list of token ids."""
    runs, current = [], []
    for label in labels.tolist() + [IGNORE_INDEX]:
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            runs.append(current)
            current = []
    return runs


def _answer_positions(ids: list[int], opening: list[int], close: int) -> list[int]:
    """Independently of the formats: every position after an occurrence of ``opening`` up to and including the
    ``close`` token that ends it."""
    positions = []
    for start in range(len(ids) - len(opening) + 1):
        if ids[start:start + len(opening)] == opening:
            end = ids.index(close, start + len(opening))
            positions += range(start + len(opening), end + 1)
    return positions


def test_the_llava_format_labels_every_answer():
    tokenizer = load_tokenizer("demo")
    spelling = LlavaFormat(tokenizer, image_size=32, num_image_tokens=4)
    batch = spelling([Conversation(Image.new("RGB", (32, 32)), TURNS, id="a", dataset="chat"),
                      Conversation(Image.new("RGB", (32, 32)), TURNS[:2], id="b", dataset="chat")])
    for row, answers in enumerate((ANSWERS, ANSWERS[:1])):
        ids = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        # The text the ids spell: the system prompt, then each question and "ASSISTANT:" before its answer.
        assert tokenizer.decode(ids, skip_special_tokens=True).startswith(SYSTEM_PROMPT)
        expected = _answer_positions(ids, tokenizer.encode(" ASSISTANT:", add_special_tokens=False),
                                     tokenizer.eos_token_id)
        assert torch.nonzero(batch.labels[row] != IGNORE_INDEX).flatten().tolist() == expected
        assert [tokenizer.decode(run, skip_special_tokens=True).strip() for run in _runs(batch.labels[row])] == answers
        assert all(run[-1] == tokenizer.eos_token_id for run in _runs(batch.labels[row]))


def test_the_chat_template_format_labels_every_answer_and_each_end_of_turn(tmp_path):
    from tests.tiny_vlm import IM_END, IM_START, tiny_qwen2vl_processor

    processor = tiny_qwen2vl_processor(tmp_path / "processor")
    tokenizer = processor.tokenizer
    spelling = ChatTemplateFormat(processor, end_of_turn=IM_END)
    conversations = [Conversation(Image.new("RGB", (32, 32), (200, 30, 30)), TURNS, id="a", dataset="chat"),
                     Conversation(Image.new("RGB", (64, 48)), TURNS[:2], id="b", dataset="chat", task="category"),
                     Conversation(Image.new("RGB", (48, 32)), TURNS[:4], id="c", dataset="chat")]
    batch = spelling(conversations)
    opening = tokenizer.encode(f"{IM_START}assistant\n", add_special_tokens=False)
    close = tokenizer.convert_tokens_to_ids(IM_END)
    for row, conversation in enumerate(conversations):
        ids = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        expected = _answer_positions(ids, opening, close)
        assert torch.nonzero(batch.labels[row] != IGNORE_INDEX).flatten().tolist() == expected
        answers = [turn.text for turn in conversation.turns if turn.role == "assistant"]
        assert [tokenizer.decode(run) for run in _runs(batch.labels[row])] == [a + IM_END for a in answers]
        # Generation continues after the last question: the prompt is the ids before the last answer.
        prompt = batch.prompt_ids[row][batch.prompt_attention_mask[row].bool()].tolist()
        assert len(prompt) == expected[-len(tokenizer.encode(answers[-1])) - 1] and ids[:len(prompt)] == prompt
    # A single-turn conversation is spelled exactly as in a batch of its own (no prefix call changes it).
    alone = spelling(conversations[1:2])
    length = int(alone.attention_mask[0].sum())
    assert torch.equal(alone.labels[0, :length], batch.labels[1, :length])
    # An end-of-turn token the template does not write: an earlier answer has no end, which is refused.
    wrong = ChatTemplateFormat(processor, end_of_turn="<|vision_end|>")
    with pytest.raises(UserError, match=r"does not close answer 1 of sample a with the end-of-turn token"):
        wrong(conversations[:1])
    # A template that spells the turns differently once the conversation is longer (as templates that drop earlier
    # answers' reasoning do): the earlier answers cannot be found, which is refused rather than guessed.
    processor.chat_template = processor.chat_template.replace(
        "{{ part['text'] }}", "{% if messages|length > 3 %}(long) {% endif %}{{ part['text'] }}")
    with pytest.raises(UserError, match=r"does not render the turns before answer 1 of sample a .* multi-turn"):
        ChatTemplateFormat(processor, end_of_turn=IM_END)(conversations[:1])


def test_every_answer_is_labelled_in_each_tiny_family(tmp_path):
    """Every family's chat template renders the earlier turns' generation prompt as a token prefix of the whole
    conversation, so each answer, and its end-of-turn token, is found."""
    from transformers import AutoProcessor

    from tests.tiny_families import END_OF_TURN, FAMILIES, build_tiny_family

    conversation = Conversation(Image.new("RGB", (48, 64), (30, 30, 200)), TURNS[:4], id="a", dataset="chat")
    for family in FAMILIES:
        processor = AutoProcessor.from_pretrained(build_tiny_family(family, tmp_path / family))
        batch = ChatTemplateFormat(processor, end_of_turn=END_OF_TURN[family])([conversation])
        runs = _runs(batch.labels[0])
        end_of_turn = processor.tokenizer.convert_tokens_to_ids(END_OF_TURN[family])
        assert [run[-1] for run in runs] == [end_of_turn, end_of_turn], family
        assert [processor.tokenizer.decode(run[:-1]).strip() for run in runs] == ANSWERS[:2], family


def test_the_data_module_serves_tagged_and_free_conversations_and_scores_the_free_ones(tmp_path):
    from collections import Counter

    from rode_lightning.conventions import SERVED_TASKS
    from rode_lightning.data.datamodule import FoodDataModule
    from rode_lightning.metrics.suite import EvaluationSuite, flatten_result
    from tests.conftest import demo_format

    module = FoodDataModule(sources=[{"dataset": "conversations", "demo_sizes": {"train": 64, "test": 8}}],
                            demo_dir=str(tmp_path), batch_size=4, eval_batch_size=4)
    module.setup("fit")
    train = Counter(sample.task for sample in module.datasets["train"].samples)
    assert train[CONVERSATION_TASK] > 0 and len(train) > 1 and set(train) <= set(SERVED_TASKS)
    assert CONVERSATION_TASK in module.evaluation_pairs["conversations"]
    module.conversation_format = demo_format()
    batch = next(iter(module.train_dataloader()))
    assert len(batch) == 4
    suite = EvaluationSuite(module.evaluation_pairs)
    free = [sample for sample in module.datasets["train"].samples if sample.task == CONVERSATION_TASK]
    references = [answer_for(sample.record, sample.task) for sample in free]
    suite.update("conversations", CONVERSATION_TASK, references, references)
    scores = flatten_result(CONVERSATION_TASK, suite.metric("conversations", CONVERSATION_TASK).compute())
    assert float(scores["conversation_sacrebleu"]) == pytest.approx(100.0)
    assert float(scores["conversation_rouge_l"]) == pytest.approx(100.0)
