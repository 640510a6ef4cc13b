"""Build the parquet files of examples/verl: the BandPO paper's math training and validation sets.

Train, as the paper's runs read it (docs/verl.md, "The training data"):

- DAPO-Math-17k deduplicated, config "all" of open-r1/DAPO-Math-17k-Processed (17,398 problems, English and
  Chinese), each with its original DAPO prompt (the `source_prompt` column) and answer. The paper's README
  says "English" (config "en", 14,116 problems), but the step count of its logged runs fits "all":
  `--dapo-config en` gives the other reading.
- MATH levels 3-5 from the 12,000-problem training split of nlile/hendrycks-MATH-benchmark (MATH minus
  MATH-500), reference = its `answer` column.

Validation: AIME 2024 (30), AIME 2025 (30) and AMC 2023 (40). MATH and validation prompts are spaced as in
the paper's data scripts: the DAPO instruction, a blank line, " problem ", a blank line, the reminder.

Every row has verl's RL schema: data_source, prompt (chat messages), ability, reward_model.ground_truth
(always text: math-ai/amc23's float answers are written as the verifier reads them, 34.0 as "34"),
extra_info. The script prints each file's row count and the steps per epoch they give. Run it once on a node
with access to the Hugging Face Hub (needs `datasets`):

    python examples/verl/prepare_data.py --out ~/data/bandpo_math

Each source flag takes a dataset id or a local .parquet/.jsonl file (a mirror, or a test's tiny file).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

from bandpo.integrations.math_dapo import last_boxed, reference_text

PROMPT_HEAD = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem."
)
PROMPT_TAIL = 'Remember to put your answer on its own line after "Answer:".'

TRAIN_FILES = ("dapo_math_17k.parquet", "math_level3to5.parquet")
VAL_FILES = ("aime24.parquet", "aime25.parquet", "amc23.parquet")
MATH_LEVELS = (3, 4, 5)

# what the paper's logged runs imply (docs/verl.md): 1,020 steps over 10 epochs of 256 prompts
PAPER_STEPS_PER_EPOCH = 102
TRAIN_BATCH_SIZE = 256
TOTAL_EPOCHS = 10


def dapo_prompt(problem: str, pad: str = "") -> list[dict[str, str]]:
    """The DAPO prompt as a one-message chat.

    `pad=""` is DAPO-Math-17k's own layout; `pad=" "` is the paper's for MATH and the benchmarks (its
    scripts join instruction + " " + problem + " " + reminder, the instruction ending and the reminder
    starting with a blank line). The problem is kept as it is.
    """
    return [{"role": "user", "content": f"{PROMPT_HEAD}\n\n{pad}{problem}{pad}\n\n{PROMPT_TAIL}"}]


def math_level(value: Any) -> int | None:
    """MATH's level as an int from 3 or "Level 3"; None for "Level ?" and the like."""
    if isinstance(value, int):
        return value
    digits = "".join(ch for ch in str(value) if ch.isdigit())
    return int(digits) if digits else None


def verl_row(
    data_source: str, prompt: list[dict[str, str]], answer: Any, index: int, split: str
) -> dict[str, Any]:
    return {
        "data_source": data_source,
        "prompt": prompt,
        "ability": "math",
        # a number as the verifier reads it: AMC's 34.0 becomes "34" (math_dapo.reference_text)
        "reward_model": {"style": "rule", "ground_truth": reference_text(answer).strip()},
        "extra_info": {"index": index, "split": split},
    }


def dapo_rows(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """open-r1/DAPO-Math-17k-Processed rows in verl's schema, with DAPO's original prompt.

    The prompt is `source_prompt` (DAPO's chat message) where present, as the paper's files have it; else
    `prompt` when it already holds the DAPO instruction; else `prompt` as a bare problem, wrapped.
    """
    for index, row in enumerate(rows):
        source = row.get("source_prompt")
        if source is not None and len(source) > 0:
            prompt = [{"role": str(m["role"]), "content": str(m["content"])} for m in source]
        elif str(row["prompt"]).startswith(PROMPT_HEAD):
            prompt = [{"role": "user", "content": str(row["prompt"])}]
        else:
            prompt = dapo_prompt(str(row["prompt"]))
        reward_model = row.get("reward_model") or {}
        answer = reward_model.get("ground_truth") or row.get("solution")
        if not answer:
            raise ValueError(
                f"DAPO row {index} has no answer (neither reward_model.ground_truth nor solution)"
            )
        yield verl_row("dapo_math_17k", prompt, answer, index, "train")


def math_rows(
    rows: Iterable[dict[str, Any]], levels: tuple[int, ...] = MATH_LEVELS
) -> Iterator[dict[str, Any]]:
    """MATH rows (problem, level, answer or a solution with \\boxed{}) of the given levels in verl's schema."""
    index = 0
    for row in rows:
        if math_level(row.get("level")) not in levels:
            continue
        boxed = last_boxed(row.get("solution") or "", ("\\boxed", "\\fbox"))
        answer = row.get("answer") or (boxed or "").strip()
        if not answer:
            continue
        yield verl_row("math_level3to5", dapo_prompt(row["problem"], pad=" "), answer, index, "train")
        index += 1


def qa_rows(rows: Iterable[dict[str, Any]], data_source: str) -> Iterator[dict[str, Any]]:
    """Benchmark rows with a problem/question and an answer column, in verl's schema."""
    for index, row in enumerate(rows):
        problem = row.get("problem") or row.get("question") or row.get("Problem")
        answer = row.get("answer") if row.get("answer") is not None else row.get("Answer")
        yield verl_row(data_source, dapo_prompt(problem, pad=" "), answer, index, "test")


def steps_per_epoch(prompts: int, batch_size: int = TRAIN_BATCH_SIZE) -> int:
    """verl's training steps per epoch: its train dataloader drops the last partial batch."""
    return prompts // batch_size


def load_rows(source: str, config: str | None = None, split: str = "train") -> list[dict[str, Any]]:
    """Rows of a local .parquet/.json/.jsonl file, or of a Hugging Face dataset id (config, split)."""
    if os.path.isfile(source):
        if source.endswith((".json", ".jsonl")):
            with open(source, encoding="utf-8") as handle:
                return [json.loads(line) for line in handle if line.strip()]
        import pyarrow.parquet as pq

        return pq.read_table(source).to_pylist()
    import datasets

    loaded = datasets.load_dataset(source, config) if config else datasets.load_dataset(source)
    return list(loaded[split] if split in loaded else loaded[next(iter(loaded))])


def write_rows(rows: Iterable[dict[str, Any]], path: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(list(rows))
    pq.write_table(table, path)
    return table.num_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.expanduser("~/data/bandpo_math"), help="output folder")
    parser.add_argument(
        "--dapo", default="open-r1/DAPO-Math-17k-Processed", help="DAPO-Math-17k dataset or file"
    )
    parser.add_argument(
        "--dapo-config", default="all", help='config of --dapo: "all" (the paper\'s runs) or "en"'
    )
    parser.add_argument("--math", default="nlile/hendrycks-MATH-benchmark", help="MATH dataset (train split)")
    parser.add_argument("--aime24", default="HuggingFaceH4/aime_2024", help="AIME 2024 dataset or file")
    parser.add_argument("--aime25", default="yentinglin/aime_2025", help="AIME 2025 dataset or file")
    parser.add_argument("--amc23", default="math-ai/amc23", help="AMC 2023 dataset or file (test split)")
    args = parser.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    jobs = [
        (TRAIN_FILES[0], lambda: dapo_rows(load_rows(args.dapo, args.dapo_config))),
        (TRAIN_FILES[1], lambda: math_rows(load_rows(args.math))),
        (VAL_FILES[0], lambda: qa_rows(load_rows(args.aime24), "aime24")),
        (VAL_FILES[1], lambda: qa_rows(load_rows(args.aime25), "aime25")),
        (VAL_FILES[2], lambda: qa_rows(load_rows(args.amc23, split="test"), "amc23")),
    ]
    counts = {}
    for name, rows in jobs:
        counts[name] = write_rows(rows(), os.path.join(args.out, name))
        print(f"{name}: {counts[name]} rows")
    train = sum(counts[name] for name in TRAIN_FILES)
    steps = steps_per_epoch(train)
    print(
        f"train: {train} prompts -> {steps} steps per epoch at {TRAIN_BATCH_SIZE} prompts, "
        f"{steps * TOTAL_EPOCHS} in {TOTAL_EPOCHS} epochs (the paper's runs: {PAPER_STEPS_PER_EPOCH}, "
        f"{PAPER_STEPS_PER_EPOCH * TOTAL_EPOCHS}); verl then drops prompts over data.max_prompt_length"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
