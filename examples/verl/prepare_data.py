"""Build the parquet files of examples/verl: the BandPO paper's math training and validation sets.

Train (the paper's setup, docs/verl.md "Example: GRPO vs BandPO on math"): DAPO-Math-17k, English and deduplicated (open-r1/DAPO-Math-17k-Processed, config
"en"), plus the MATH training problems of levels 3-5, both with the DAPO prompt (answer on a last line
"Answer: ..."). Validation: AIME 2024, AIME 2025 and AMC 2023 with the same prompt.

Every row has verl's RL schema: data_source, prompt (chat messages), ability, reward_model.ground_truth,
extra_info. Needs network access to the Hugging Face Hub and `datasets`; run once on a node that has it:

    python examples/verl/prepare_data.py --out ~/data/bandpo_math

Dataset ids are flags (`--dapo`, `--math`, ...) in case a mirror is used.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Iterator
from typing import Any

PROMPT_HEAD = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem."
)
PROMPT_TAIL = 'Remember to put your answer on its own line after "Answer:".'

TRAIN_FILES = ("dapo_math_17k_en.parquet", "math_level3to5.parquet")
VAL_FILES = ("aime24.parquet", "aime25.parquet", "amc23.parquet")


def dapo_prompt(problem: str) -> list[dict[str, str]]:
    """The DAPO prompt as a one-message chat."""
    return [{"role": "user", "content": f"{PROMPT_HEAD}\n\n{problem.strip()}\n\n{PROMPT_TAIL}"}]


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, with nested braces; None if absent."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def math_level(value: Any) -> int | None:
    """MATH's level as an int from 3 or "Level 3"; None for "Level ?" and the like."""
    if isinstance(value, int):
        return value
    digits = "".join(ch for ch in str(value) if ch.isdigit())
    return int(digits) if digits else None


def verl_row(data_source: str, problem: str, answer: str, index: int, split: str) -> dict[str, Any]:
    return {
        "data_source": data_source,
        "prompt": dapo_prompt(problem),
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(answer).strip()},
        "extra_info": {"index": index, "split": split},
    }


def math_rows(
    rows: Iterable[dict[str, Any]], levels: tuple[int, ...] = (3, 4, 5)
) -> Iterator[dict[str, Any]]:
    """MATH rows (problem, solution, level, optional answer) of the given levels in verl's schema."""
    index = 0
    for row in rows:
        if math_level(row.get("level")) not in levels:
            continue
        answer = row.get("answer") or last_boxed(row.get("solution", ""))
        if not answer:
            continue
        yield verl_row("math_level3to5", row["problem"], answer, index, "train")
        index += 1


def qa_rows(rows: Iterable[dict[str, Any]], data_source: str) -> Iterator[dict[str, Any]]:
    """Benchmark rows with a problem/question and an answer column, in verl's schema."""
    for index, row in enumerate(rows):
        problem = row.get("problem") or row.get("question") or row.get("Problem")
        answer = row.get("answer") if row.get("answer") is not None else row.get("Answer")
        if isinstance(answer, float) and answer.is_integer():
            answer = int(answer)  # AMC answers stored as floats
        yield verl_row(data_source, problem, answer, index, "test")


def dapo_rows(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """open-r1/DAPO-Math-17k-Processed rows (prompt = bare problem, solution = answer) in verl's schema."""
    for index, row in enumerate(rows):
        yield verl_row("dapo_math_17k", row["prompt"], row["solution"], index, "train")


def _write(rows: Iterable[dict[str, Any]], path: str) -> int:
    import datasets

    table = datasets.Dataset.from_list(list(rows))
    table.to_parquet(path)
    return len(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.expanduser("~/data/bandpo_math"), help="output folder")
    parser.add_argument(
        "--dapo", default="open-r1/DAPO-Math-17k-Processed", help="DAPO-Math-17k (en) dataset id"
    )
    parser.add_argument("--dapo-config", default="en", help="config of --dapo")
    parser.add_argument(
        "--math", default="nlile/hendrycks-MATH-benchmark", help="MATH dataset id (train split)"
    )
    parser.add_argument("--aime24", default="HuggingFaceH4/aime_2024", help="AIME 2024 dataset id")
    parser.add_argument("--aime25", default="yentinglin/aime_2025", help="AIME 2025 dataset id")
    parser.add_argument("--amc23", default="math-ai/amc23", help="AMC 2023 dataset id")
    args = parser.parse_args(argv)

    import datasets

    os.makedirs(args.out, exist_ok=True)

    def load(name: str, config: str | None = None, split: str = "train") -> Any:
        loaded = datasets.load_dataset(name, config) if config else datasets.load_dataset(name)
        return loaded[split] if split in loaded else loaded[next(iter(loaded))]

    jobs = [
        (TRAIN_FILES[0], dapo_rows(load(args.dapo, args.dapo_config))),
        (TRAIN_FILES[1], math_rows(load(args.math))),
        (VAL_FILES[0], qa_rows(load(args.aime24), "aime24")),
        (VAL_FILES[1], qa_rows(load(args.aime25, split="test"), "aime25")),
        (VAL_FILES[2], qa_rows(load(args.amc23, split="test"), "amc23")),
    ]
    for name, rows in jobs:
        count = _write(rows, os.path.join(args.out, name))
        print(f"{name}: {count} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
