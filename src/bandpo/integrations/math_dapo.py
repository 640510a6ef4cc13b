"""The DAPO math verifier ("math_dapo"): +1 when the final answer matches the reference, -1 otherwise.

Two variants, selected by name:

- ``strict``: the verifier of the BandPO paper's runs (the `math_dapo.py` of its verl fork, the same as verl
  before upstream change #7407). The answer is the text after the last ``Answer:`` in the completion's last
  300 characters (case-insensitive, to the end of that line); a completion without one scores -1, whatever it
  boxed. This is what the DAPO prompt asks for ("The last line of your response should be of the form
  Answer: $Answer").
- ``lenient``: verl 0.9.1's `verl.utils.reward_score.math_dapo`. The same, except that a completion with no
  ``Answer:`` falls back to its last ``\\boxed{...}`` (within the last 100 of those 300 characters), compared
  with the reference character for character, without normalisation.

The two differ only on completions that box an answer and write no ``Answer:``. A model that boxes (Qwen2.5
Instruct often does) gets +1 for them under ``lenient`` and -1 under ``strict``, so training rewards and
validation accuracy are higher under ``lenient`` and not comparable with the paper's curves.

Normalisation (both variants, applied to the extracted answer and to the reference): keep the text after the
last ``=``; delete articles, spaces, dollar escapes, common unit words (degrees, cm, dollars, ...) and a
list of TeX noise (``\\text{}``, ``^\\circ``, ``\\!``, ...); keep the first ``$...$`` span; unwrap
``\\text``, ``\\textbf``, ``\\overline`` and ``\\boxed``; expand ``\\frac12`` to ``\\frac{1}{2}`` and
``\\sqrt2`` to ``\\sqrt{2}``; drop thousands commas of plain integers. The rules are the fork's, in its
order; nothing else is equivalent (``0.5`` and ``\\frac{1}{2}`` differ, ``\\dfrac`` is not ``\\frac``).

A reference stored as a number (math-ai/amc23 keeps AMC answers as floats: 34.0) is first written as a
string (`reference_text`: "34", not "34.0", which would never match an ``Answer: 34``). The fork's verifier
takes only strings (it splits the reference on "="), so the AMC file of the paper's logged runs held text.

Pure Python and deterministic: no sympy, no timeouts needed. verl's reward interface is
`examples/verl/reward.py`; this module imports nothing from verl, so the recipe's reward workers and its data
script need only bandpo.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

__all__ = ["INVALID", "VERIFIERS", "last_boxed", "normalize_final_answer", "reference_text", "score"]

VERIFIERS = ("strict", "lenient")

# the prediction when no answer is found (the fork logs this string as `pred`)
INVALID = "[INVALID]"

# both variants read only the end of the completion; the lenient fallback only the end of that
_TAIL_CHARS = 300
_BOXED_TAIL_CHARS = 100

_ANSWER = re.compile(r"Answer\s*:\s*([^\n]+)", re.IGNORECASE)

# literal rewrites, applied in this order: first substitutions, then deletions (unit words and TeX noise)
_SUBSTITUTIONS = (
    ("an ", ""),
    ("a ", ""),
    (".$", "$"),
    ("\\$", ""),
    ("\\ ", ""),
    (" ", ""),
    ("mbox", "text"),
    (",\\text{and}", ","),
    ("\\text{and}", ","),
    ("\\text{m}", "\\text{}"),
)
_DELETIONS = (
    *("square", "ways", "integers", "dollars", "mph", "inches", "hours", "km", "units", "\\ldots", "sue"),
    *("points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals"),
    *("edges", "students", "childrentickets", "multiples"),
    *("\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}"),
    *("\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;", ",\\!", "{,}", '"', "\\dots"),
)
# regex rewrites, in order: the first $...$ span, then unwrapping, then TeX shorthand
_REGEX_REWRITES = (
    (re.compile(r"(.*?)(\$)(.*?)(\$)(.*)"), r"$\3$"),
    (re.compile(r"(\\text\{)(.*?)(\})"), r"\2"),
    (re.compile(r"(\\textbf\{)(.*?)(\})"), r"\2"),
    (re.compile(r"(\\overline\{)(.*?)(\})"), r"\2"),
    (re.compile(r"(\\boxed\{)(.*)(\})"), r"\2"),  # greedy: up to the last closing brace
    (re.compile(r"(frac)([^{])(.)"), r"frac{\2}{\3}"),
    (re.compile(r"(sqrt)([^{])"), r"sqrt{\2}"),
)


def reference_text(reference: str | numbers.Real) -> str:
    """A reference answer as the string the verifier compares: text as it is, a number written as text.

    Integral numbers become their integer digits (34.0 -> "34", so that ``Answer: 34`` matches); other
    finite numbers their shortest round-trip form (0.5 -> "0.5"). numpy scalars count as numbers. A bool,
    NaN or infinity is refused: it is a broken data file, not an answer.
    """
    if isinstance(reference, str):
        return reference
    if isinstance(reference, bool) or not isinstance(reference, numbers.Real):
        raise TypeError(
            f"reference answer {reference!r} ({type(reference).__name__}) is neither text nor a number; "
            "store reward_model.ground_truth as a string such as '34'"
        )
    if isinstance(reference, numbers.Integral):
        return str(int(reference))
    value = float(reference)
    if not math.isfinite(value):
        raise ValueError(f"reference answer is {value}; fix reward_model.ground_truth in the data file")
    return str(int(value)) if value.is_integer() else repr(value)


def normalize_final_answer(answer: str) -> str:
    """The fork's canonical form of a final answer (module docstring); two answers match iff equal after it."""
    text = answer.split("=")[-1]
    for old, new in _SUBSTITUTIONS:
        text = text.replace(old, new)
    for noise in _DELETIONS:
        text = text.replace(noise, "")
    for pattern, replacement in _REGEX_REWRITES:
        text = pattern.sub(replacement, text)
    text = text.replace("$", "")
    if text.replace(",", "").isdigit():
        text = text.replace(",", "")
    return text.strip()


def last_boxed(text: str, commands: tuple[str, ...] = ("\\boxed",)) -> str | None:
    """Content of the last ``\\boxed{...}`` in `text`, braces balanced, as written; None if absent or never
    closed. The one extractor of a boxed answer: this verifier's fallback, the math reward of `bandpo train`
    (`bandpo.training.rewards.extract_final_answer`) and examples/verl/prepare_data.py.

    Only a command directly followed by ``{`` counts (not ``\\boxed 5`` nor ``\\boxed {5}``), as in the
    verifier being reproduced; `commands` names the commands that count (``("\\boxed", "\\fbox")`` also takes
    ``\\fbox{...}``).
    """
    start = max(text.rfind(command + "{") for command in commands)
    if start < 0:
        return None
    brace = text.index("{", start)
    depth = 0
    for end in range(brace, len(text)):
        if text[end] == "{":
            depth += 1
        elif text[end] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : end]
    return None


def _answer_line(tail: str) -> str:
    """Normalised text after the last ``Answer:`` (INVALID if none).

    ``\\s*`` after the colon also crosses a line break, so an ``Answer:`` that ends its line takes the next
    line as the answer; this quirk is part of the reproduced semantics.
    """
    found = _ANSWER.findall(tail)
    return normalize_final_answer(found[-1] if found else INVALID)


def score(solution: str, ground_truth: str | numbers.Real, *, verifier: str = "strict") -> dict[str, Any]:
    """Score one completion against its reference answer.

    Args:
        solution: the decoded completion (the prompt excluded).
        ground_truth: the reference answer, e.g. ``"34"`` or ``"\\frac{1}{2}"`` (normalised like the answer);
            a number is first written as `reference_text` writes it (34.0 -> ``"34"``).
        verifier: ``"strict"`` (the paper's) or ``"lenient"`` (verl 0.9.1's); see the module docstring.

    Returns:
        verl's reward dict: ``score`` (+1.0 or -1.0), ``acc`` (bool) and ``pred`` (the normalised answer,
        the raw boxed content for a lenient fallback, or ``"[INVALID]"`` when nothing was found).
    """
    if verifier not in VERIFIERS:
        raise ValueError(f"verifier={verifier!r} is unknown; use one of {list(VERIFIERS)}")
    ground_truth = reference_text(ground_truth)
    tail = solution[-_TAIL_CHARS:]
    pred = _answer_line(tail)
    correct = pred == normalize_final_answer(ground_truth)
    if verifier == "lenient" and pred == INVALID:
        boxed = last_boxed(tail[-_BOXED_TAIL_CHARS:])
        if boxed is not None:
            pred, correct = boxed, boxed == ground_truth
    return {"score": 1.0 if correct else -1.0, "acc": correct, "pred": pred}
