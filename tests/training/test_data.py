"""Dataset files: accepted layouts, one-line errors naming the row, held-out split, replayable schedule."""

from __future__ import annotations

import json
import zlib

import pytest

from bandpo.training.data import is_held_out_row, load_prompt_rows, schedule_rows, split_rows


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prompt_answer_jsonl(tmp_path):
    rows = load_prompt_rows(
        _jsonl(tmp_path / "d.jsonl", [{"prompt": "1+1?", "answer": 2}, {"prompt": "x", "answer": "y"}])
    )
    assert [(r.prompt, r.answer) for r in rows] == [("1+1?", "2"), ("x", "y")]


def test_known_layouts(tmp_path):
    dapo = {
        "prompt": [{"role": "user", "content": "Solve. Answer: $Answer"}],
        "reward_model": {"ground_truth": "34"},
    }
    math_row = {"problem": "What is 1/2+1/2?", "solution": "It is \\boxed{1}."}
    gsm8k = {"question": "How many?", "answer": "3 + 4 = 7\n#### 7"}
    rows = load_prompt_rows(_jsonl(tmp_path / "d.jsonl", [dapo, math_row, gsm8k]))
    assert rows[0].answer == "34" and rows[0].text.startswith("Solve")
    assert rows[1].prompt == "What is 1/2+1/2?" and "boxed" in rows[1].answer
    assert rows[2].answer.endswith("#### 7")


def test_parquet_and_json(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"q": ["a", "b"], "a": ["1", "2"]}), tmp_path / "d.parquet")
    rows = load_prompt_rows(tmp_path / "d.parquet", prompt_column="q", answer_column="a")
    assert [r.answer for r in rows] == ["1", "2"]
    (tmp_path / "d.json").write_text(json.dumps([{"prompt": "p", "answer": "a"}]))
    assert load_prompt_rows(tmp_path / "d.json")[0].answer == "a"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"prompt": "a", "answer": "1"}\n{"prompt": "b"}\n', "row 2.*answer"),
        ('{"prompt": "a", "answer": "1"}\nnot json\n', "line 2.*JSON"),
        ('{"text": "a", "answer": "1"}\n', "row 1.*'prompt'.*--prompt-column"),
        ('{"prompt": "", "answer": "1"}\n', "row 1.*empty"),
        ('{"prompt": 5, "answer": "1"}\n', "row 1.*string or a list of chat messages"),
        ('{"prompt": "a", "answer": {"x": 1}}\n', "row 1.*string or a number"),
        ("", "no rows"),
    ],
)
def test_bad_rows_name_the_row(tmp_path, content, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        load_prompt_rows(path)
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="not a file"):
        load_prompt_rows(tmp_path / "missing.jsonl")
    (tmp_path / "d.csv").write_text("prompt,answer\n")
    with pytest.raises(ValueError, match="unsupported format"):
        load_prompt_rows(tmp_path / "d.csv")


def test_split_is_disjoint_and_schedule_replays(tmp_path):
    rows = load_prompt_rows(
        _jsonl(tmp_path / "d.jsonl", [{"prompt": f"question {i}", "answer": str(i)} for i in range(300)])
    )
    train, held_out = split_rows(rows, eval_prompts=1000)
    assert held_out and train
    assert {r.text for r in train}.isdisjoint({r.text for r in held_out})
    assert all(is_held_out_row(r) for r in held_out)
    assert len(split_rows(rows, eval_prompts=3)[1]) == 3
    schedule = schedule_rows(train, 1000, seed=0)
    assert len(schedule) == 1000 and schedule == schedule_rows(train, 1000, seed=0)
    assert schedule[:500] == schedule_rows(train, 500, seed=0)  # a longer run starts the same way
    assert {r.text for r in schedule[: len(train)]} == {r.text for r in train}  # each epoch is a permutation


def test_the_split_is_the_crc32_of_the_prompt_text(tmp_path):
    """The naive rule, written out: a row is held out when the CRC-32 of its text is < 10 modulo 100; the split of
    every dataset a run has trained on depends on it, so it never changes."""
    # a chat prompt's text is its last message's
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "question 29"}]
    rows = load_prompt_rows(
        _jsonl(
            tmp_path / "d.jsonl",
            [{"prompt": f"question {i}", "answer": str(i)} for i in range(300)]
            + [{"prompt": messages, "answer": "29"}],
        )
    )
    train, held_out = split_rows(rows, eval_prompts=1000)
    naive = [r for r in rows if zlib.crc32(r.text.encode()) % 100 < 10]
    assert held_out == naive and train == [r for r in rows if r not in naive]
    assert [r.text for r in held_out][:3] == ["question 29", "question 36", "question 40"]


def test_chat_template_wraps_plain_prompts_and_messages_need_one(tmp_path):
    from bandpo.training import TrainConfig
    from bandpo.training.data import adapt_rows, read_run_rows
    from bandpo.training.model import build_char_tokenizer

    def _prompt_rows(source, tokenizer):
        rows = read_run_rows(source)
        return [adapt_rows(part, tokenizer, use_chat_template=source.use_chat_template) for part in rows]

    path = _jsonl(tmp_path / "d.jsonl", [{"prompt": f"question {i}", "answer": str(i)} for i in range(50)])
    config = TrainConfig(dataset=str(path), max_steps=2, prompts_per_step=4, minibatches=2)
    tokenizer = build_char_tokenizer()
    train, _ = _prompt_rows(config.prompt_source, tokenizer)
    assert all(isinstance(r.prompt, str) for r in train)  # no template: plain text
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    train, held_out = _prompt_rows(config.prompt_source, tokenizer)
    assert train[0].prompt == [{"role": "user", "content": train[0].text}]
    assert len(train) == 8 and all(isinstance(r.prompt, list) for r in held_out)
    assert train == _prompt_rows(config.replace(seed=0).prompt_source, tokenizer)[0]  # replayable
    plain = _prompt_rows(config.replace(use_chat_template=False).prompt_source, tokenizer)[0]
    assert all(isinstance(r.prompt, str) for r in plain)
    chat = _jsonl(
        tmp_path / "chat.jsonl", [{"prompt": [{"role": "user", "content": "hi"}], "answer": "1"}] * 3
    )
    with pytest.raises(ValueError, match="chat template"):
        _prompt_rows(
            TrainConfig(dataset=str(chat), max_steps=1, prompts_per_step=4).prompt_source,
            build_char_tokenizer(),
        )
