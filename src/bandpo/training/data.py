"""Prompts for training and evaluation: an embedded task's (`bandpo.training.tasks`), or a local
jsonl/json/parquet file.

A dataset file holds one prompt per row with a prompt column and a reference-answer column. The usual
layouts are recognised without flags:

- ``prompt`` / ``answer`` (the default names; others with ``--prompt-column`` / ``--answer-column``);
- DAPO-Math: ``prompt`` is a list of chat messages and the answer is ``reward_model["ground_truth"]``;
- MATH: ``problem`` / ``solution`` (the answer is the solution's last ``\\boxed{}``);
- GSM8K: ``question`` / ``answer`` (the answer ends with ``#### 72``).

A bad file or row raises a one-line ValueError naming the row (1-based) and the fix. A dataset's prompts are
split into held-out evaluation rows and training rows by a stable hash of their text (`is_held_out_row`: about
10%), so evaluation prompts never appear in training; the training rows are then laid out, in
a seeded order, exactly as the run will consume them (one pass over the returned list), which is what
makes a resumed run see the same prompts as an uninterrupted one.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bandpo.training.config import PromptSource
from bandpo.training.tasks import get_task
from bandpo.training.tasks.countdown import ALPHABET
from bandpo.training.tasks.registry import in_held_out_buckets, reference_answer

__all__ = [
    "HELD_OUT_BUCKETS",
    "PromptRow",
    "adapt_rows",
    "check_embedded_alphabet",
    "is_held_out_row",
    "load_prompt_rows",
    "prompt_token_ids",
    "read_run_rows",
    "schedule_rows",
    "split_rows",
    "task_rows",
]

PROMPT_ALIASES: tuple[str, ...] = ("prompt", "problem", "question")
# bounds on input: a longer prompt or answer is refused before anything is tokenized (a 50 MB prompt would
# take the tokenizer to several GB); a longer jsonl line is refused before it is parsed
MAX_TEXT_CHARS = 200_000
MAX_LINE_BYTES = 16 * 2**20
ANSWER_ALIASES: tuple[str, ...] = ("answer", "solution", "ground_truth")
HELD_OUT_BUCKETS = 10  # of 100: the share of a dataset's prompts held out for evaluation


@dataclass(frozen=True)
class PromptRow:
    """A prompt (text or chat messages), its reference answer, and whether it needs the rare strategy."""

    prompt: Any
    answer: str | None
    needs_rare: bool | None = None

    @property
    def text(self) -> str:
        """The prompt's text (the last message's content for a chat prompt)."""
        if isinstance(self.prompt, str):
            return self.prompt
        return str(self.prompt[-1]["content"])


def task_rows(problems: list[Any]) -> list[PromptRow]:
    """Rows of an embedded task's problems; the reference is the problem's `.answer`, else its prompt."""
    return [PromptRow(prompt=p.prompt, answer=reference_answer(p), needs_rare=p.needs_rare) for p in problems]


def _read_records(path: Path) -> list[dict[str, Any]]:
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suffix == ".jsonl":
        records = []
        with path.open("rb") as handle:
            for line_number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise ValueError(
                        f"{path.name} line {line_number}: not UTF-8 (byte {raw[error.start]:#04x} at column "
                        f"{error.start + 1}); re-save the file as UTF-8 or fix that line"
                    ) from None
                if not line.strip():
                    continue
                if len(raw) > MAX_LINE_BYTES:
                    raise ValueError(
                        f"{path.name} line {line_number}: {len(raw):,} bytes, more than the {MAX_LINE_BYTES:,} "
                        "a row may hold; shorten or delete that line"
                    )
                record = _loads(line, f"{path.name} line {line_number}", "fix or delete that line")
                if not isinstance(record, dict):
                    raise ValueError(
                        f"{path.name} line {line_number}: expected a JSON object with prompt and answer"
                    )
                records.append(record)
        return records
    if suffix == ".json":
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            line_number = raw.count(b"\n", 0, error.start) + 1
            raise ValueError(
                f"{path.name} line {line_number}: not UTF-8 (byte {raw[error.start]:#04x}); re-save the file "
                "as UTF-8 or fix that line"
            ) from None
        data = _loads(text, path.name, "fix the file")
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise ValueError(f"{path.name}: expected a JSON list of objects (or {{'data': [...]}})")
        return data
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("reading parquet needs pyarrow: pip install 'bandpo[train]'") from error
        try:
            return pq.read_table(path).to_pylist()
        except Exception as error:  # pyarrow raises several types for a corrupt file
            raise ValueError(f"{path.name}: cannot read as parquet ({error})") from None
    raise ValueError(f"dataset {path.name!r}: unsupported format; use .jsonl, .json or .parquet")


def _loads(text: str, where: str, fix: str) -> Any:
    """`json.loads` that refuses a key given twice in one object (JSON keeps the last silently) and nesting
    too deep to read, with one line naming `where`."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        record: dict[str, Any] = {}
        for key, value in pairs:
            if key in record:
                raise ValueError(f"{where}: key {key!r} appears twice in one object; {fix}")
            record[key] = value
        return record

    try:
        return json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as error:
        at = f" at line {error.lineno}" if "line" not in where else ""
        raise ValueError(f"{where}: not valid JSON ({error.msg}{at}); {fix}") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply to read; {fix}") from None


def _pick(record: dict[str, Any], preferred: str, aliases: tuple[str, ...]) -> tuple[str | None, Any]:
    if preferred in record:
        return preferred, record[preferred]
    if preferred in aliases:  # only the default names fall back to the known layouts
        for name in aliases:
            if name in record:
                return name, record[name]
        reward_model = record.get("reward_model")
        if "ground_truth" in aliases and isinstance(reward_model, dict) and "ground_truth" in reward_model:
            return "reward_model.ground_truth", reward_model["ground_truth"]
    return None, None


def _valid_messages(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in value)
    )


def load_prompt_rows(
    path: str | Path,
    *,
    prompt_column: str = "prompt",
    answer_column: str = "answer",
    require_answer: bool = True,
) -> list[PromptRow]:
    """Read and validate a local dataset file (see the module docstring for the accepted layouts)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"dataset {str(path)!r} is not a file; pass a local .jsonl, .json or .parquet file")
    records = _read_records(path)
    if not records:
        raise ValueError(f"dataset {path.name!r} has no rows")
    rows = []
    for index, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise ValueError(f"{path.name} row {index}: expected an object with prompt and answer fields")
        name, prompt = _pick(record, prompt_column, PROMPT_ALIASES)
        if name is None:
            raise ValueError(
                f"{path.name} row {index}: no {prompt_column!r} column (found {sorted(record)}); "
                "rename it or pass --prompt-column"
            )
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError(f"{path.name} row {index}: {name!r} is empty; give every row a prompt")
        elif not _valid_messages(prompt):
            raise ValueError(
                f"{path.name} row {index}: {name!r} must be a string or a list of chat messages "
                "({'role': ..., 'content': ...}), got " + type(prompt).__name__
            )
        text = prompt if isinstance(prompt, str) else "".join(str(m["content"]) for m in prompt)
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(
                f"{path.name} row {index}: {name!r} is {len(text):,} characters long, more than the "
                f"{MAX_TEXT_CHARS:,} a prompt may have; shorten it or drop the row"
            )
        answer_name, answer = _pick(record, answer_column, ANSWER_ALIASES)
        if answer is None or (isinstance(answer, str) and not answer.strip()):
            if require_answer:
                raise ValueError(
                    f"{path.name} row {index}: no {answer_column!r} value (found {sorted(record)}); the reward "
                    "needs a reference answer per row; add it or pass --answer-column"
                )
            answer = None
        elif isinstance(answer, list | tuple) and len(answer) == 1:
            answer = answer[0]
        if answer is not None and not isinstance(answer, str | int | float):
            raise ValueError(
                f"{path.name} row {index}: {answer_name!r} must be a string or a number, got {type(answer).__name__}"
            )
        if answer is not None and len(str(answer)) > MAX_TEXT_CHARS:
            raise ValueError(
                f"{path.name} row {index}: {answer_name!r} is {len(str(answer)):,} characters long, more than "
                f"the {MAX_TEXT_CHARS:,} an answer may have; shorten it or drop the row"
            )
        rows.append(PromptRow(prompt=prompt, answer=None if answer is None else str(answer)))
    return rows


def is_held_out_row(row: PromptRow) -> bool:
    """Whether a dataset row belongs to the evaluation pool: its text hashes into the first `HELD_OUT_BUCKETS`
    of 100 (`in_held_out_buckets`), the same in every run, seed and Python version."""
    return in_held_out_buckets(row.text, HELD_OUT_BUCKETS)


def split_rows(rows: list[PromptRow], *, eval_prompts: int) -> tuple[list[PromptRow], list[PromptRow]]:
    """(train, eval): eval = the held-out rows (`is_held_out_row`), at most `eval_prompts`.

    Every held-out row is kept out of training, even beyond the `eval_prompts` cap.
    """
    train, held_out = [], []
    for row in rows:
        (held_out if is_held_out_row(row) else train).append(row)
    if not train:
        raise ValueError(
            "the dataset has no training rows after holding out the evaluation prompts; add rows"
        )
    return train, held_out[:eval_prompts]


def schedule_rows(rows: list[PromptRow], count: int, *, seed: int) -> list[PromptRow]:
    """`count` rows: seeded permutations of `rows`, one after another (a fresh permutation per epoch)."""
    rng = random.Random(f"schedule-{seed}")
    out: list[PromptRow] = []
    while len(out) < count:
        order = list(range(len(rows)))
        rng.shuffle(order)
        out.extend(rows[i] for i in order[: count - len(out)])
    return out


def read_run_rows(source: PromptSource) -> tuple[list[PromptRow], list[PromptRow]]:
    """(training rows in consumption order, held-out evaluation rows) of a run, before any chat template."""
    count, seed = source.train_prompts, source.seed
    if source.dataset is None:
        embedded = get_task(source.task)
        train_rows = task_rows(embedded.sample_train_problems(count, seed=seed))
        eval_rows = task_rows(embedded.sample_eval_problems(source.eval_prompts, seed=seed))
        return train_rows, eval_rows
    rows = load_prompt_rows(
        source.dataset, prompt_column=source.prompt_column, answer_column=source.answer_column
    )
    train_pool, eval_rows = split_rows(rows, eval_prompts=source.eval_prompts)
    return schedule_rows(train_pool, count, seed=seed), eval_rows


def check_embedded_alphabet(rows: list[PromptRow], dataset: str) -> None:
    """Refuse prompts the embedded model cannot read: its tokenizer knows only `countdown.ALPHABET` and would map
    every other character to padding, so the run would train on noise."""
    known = set(ALPHABET)
    for row in rows:
        unknown = sorted(set(row.text) - known)
        if unknown:
            shown = "".join(unknown[:10])
            raise ValueError(
                f"dataset {dataset!r}: the embedded tiny model reads only the characters "
                f"{''.join(ALPHABET)!r}, and a prompt holds others ({shown!r}); pass --model with a "
                "local HF checkpoint whose tokenizer covers the dataset"
            )


def adapt_rows(rows: list[PromptRow], tokenizer: Any, *, use_chat_template: bool) -> list[PromptRow]:
    """Plain prompts wrapped as one user message when the tokenizer has a chat template (and it is wanted);
    chat-message prompts need one."""
    has_template = bool(getattr(tokenizer, "chat_template", None))

    def adapt(row: PromptRow) -> PromptRow:
        if isinstance(row.prompt, str):
            if has_template and use_chat_template:
                return PromptRow([{"role": "user", "content": row.prompt}], row.answer, row.needs_rare)
            return row
        if not has_template:
            raise ValueError(
                "the dataset has chat-message prompts but the tokenizer has no chat template; use plain-text "
                "prompts or a model whose tokenizer has a chat template"
            )
        return row

    return [adapt(row) for row in rows]


def prompt_token_ids(tokenizer: Any, prompt: Any) -> list[int]:
    """Token ids of a prompt exactly as TRL builds them (plain text, or a chat rendered with its template)."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    rendered = tokenizer.apply_chat_template(
        prompt, tokenize=True, add_generation_prompt=True, return_dict=True
    )
    return list(rendered["input_ids"])
