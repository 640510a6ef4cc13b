"""The DAPO math verifier: the paper's strict semantics and verl 0.9.1's lenient ones, on cases written from
reading the two `math_dapo.py` files (the BandPO fork's and verl 0.9.1's). verl itself is the oracle in
tests/integrations/test_verl_recipe_on_cpu.py."""

from __future__ import annotations

import pytest

from bandpo.integrations import math_dapo

BOXED_ONLY = "Adding the two gives $\\boxed{42}$."

# (case, completion, reference, strict score, lenient score, strict pred, lenient pred)
CASES = [
    ("boxed_only", BOXED_ONLY, "42", -1.0, 1.0, math_dapo.INVALID, "42"),
    ("answer_only", "Adding the two gives 42.\nAnswer: 42", "42", 1.0, 1.0, "42", "42"),
    ("both_agree", "So \\boxed{42}.\nAnswer: 42", "42", 1.0, 1.0, "42", "42"),
    # an Answer line is never overruled by a box, in either variant
    ("both_answer_wrong", "So \\boxed{42}.\nAnswer: 41", "42", -1.0, -1.0, "41", "41"),
    ("both_box_wrong", "So \\boxed{41}.\nAnswer: 42", "42", 1.0, 1.0, "42", "42"),
    ("neither", "I am fairly sure it is 42.", "42", -1.0, -1.0, math_dapo.INVALID, math_dapo.INVALID),
    ("box_never_closed", "So \\boxed{42", "42", -1.0, -1.0, math_dapo.INVALID, math_dapo.INVALID),
    ("fbox_is_not_boxed", "So \\fbox{42}", "42", -1.0, -1.0, math_dapo.INVALID, math_dapo.INVALID),
    ("empty_answer_line", "Answer:", "42", -1.0, -1.0, math_dapo.INVALID, math_dapo.INVALID),
    # `Answer\s*:\s*` crosses the line break: the next line is the answer
    ("answer_on_next_line", "Answer:\n42", "42", 1.0, 1.0, "42", "42"),
    ("answer_boxed_on_its_line", "Answer: \\boxed{42}", "42", 1.0, 1.0, "42", "42"),
    ("case_insensitive", "ANSWER : 42", "42", 1.0, 1.0, "42", "42"),
    ("answer_inside_a_sentence", "The final answer: 42", "42", 1.0, 1.0, "42", "42"),
    ("last_answer_wins", "Answer: 41\nNo, wait.\nAnswer: 42", "42", 1.0, 1.0, "42", "42"),
    # only the last 300 characters are read, and the box fallback reads the last 100 of those
    (
        "answer_before_the_window",
        "Answer: 42\n" + "x" * 300,
        "42",
        -1.0,
        -1.0,
        math_dapo.INVALID,
        math_dapo.INVALID,
    ),
    (
        "box_before_the_window",
        "\\boxed{42}" + "." * 95,
        "42",
        -1.0,
        -1.0,
        math_dapo.INVALID,
        math_dapo.INVALID,
    ),
    ("box_inside_the_window", "\\boxed{42}" + "." * 85, "42", -1.0, 1.0, math_dapo.INVALID, "42"),
    # the box fallback compares raw text, the Answer line normalised text
    ("box_not_normalised", "So \\boxed{ 42 }", "42", -1.0, -1.0, math_dapo.INVALID, " 42 "),
    ("box_frac_shorthand", "So \\boxed{\\frac12}", "\\frac{1}{2}", -1.0, -1.0, math_dapo.INVALID, "\\frac12"),
    (
        "nested_braces_in_box",
        "So \\boxed{\\frac{1}{2}}",
        "\\frac{1}{2}",
        -1.0,
        1.0,
        math_dapo.INVALID,
        "\\frac{1}{2}",
    ),
]


@pytest.mark.parametrize(
    ("case", "completion", "reference", "strict", "lenient", "pred", "lenient_pred"), CASES
)
def test_strict_and_lenient_on_written_cases(
    case, completion, reference, strict, lenient, pred, lenient_pred
):
    got_strict = math_dapo.score(completion, reference)  # strict is the default
    got_lenient = math_dapo.score(completion, reference, verifier="lenient")
    assert (got_strict["score"], got_strict["acc"], got_strict["pred"]) == (strict, strict > 0, pred)
    assert (got_lenient["score"], got_lenient["acc"], got_lenient["pred"]) == (
        lenient,
        lenient > 0,
        lenient_pred,
    )


# (answer on the Answer line, reference, match?)
NORMALISATION = [
    ("$\\frac{1}{2}$", "\\frac{1}{2}", True),
    ("\\frac12", "\\frac{1}{2}", True),
    ("\\sqrt2", "\\sqrt{2}", True),
    ("1,000", "1000", True),
    ("1000", "1,000", True),  # the reference is normalised too
    ("x = 5", "5", True),
    ("10 degrees", "10", True),
    ("90^\\circ", "90", True),
    ("\\$5", "5", True),
    ("$5$.", "5", True),
    ("\\text{(A)}", "(A)", True),
    ("\\textbf{7}", "7", True),
    # what it does not equate
    ("5.", "5", False),
    ("0.5", "\\frac{1}{2}", False),
    ("\\dfrac{1}{2}", "\\frac{1}{2}", False),
    ("2\\sqrt{2}", "\\sqrt{8}", False),
]


@pytest.mark.parametrize(("answer", "reference", "match"), NORMALISATION)
def test_normalisation_of_the_answer_line(answer, reference, match):
    result = math_dapo.score(f"Some work.\nAnswer: {answer}", reference)
    assert result["acc"] is match
    assert result["score"] == (1.0 if match else -1.0)


def test_normalize_final_answer_examples():
    assert math_dapo.normalize_final_answer(" $x = \\frac{3}{4}$ ") == "\\frac{3}{4}"
    assert math_dapo.normalize_final_answer("12,345") == "12345"
    assert math_dapo.normalize_final_answer("1,2") == "12"  # commas go whenever the rest are digits
    assert math_dapo.normalize_final_answer("(1, 2)") == "(1,2)"
    assert math_dapo.normalize_final_answer(math_dapo.INVALID) == math_dapo.INVALID


def test_last_boxed():
    assert math_dapo.last_boxed("\\boxed{1} then \\boxed{\\frac{a}{b}} end") == "\\frac{a}{b}"
    assert math_dapo.last_boxed("\\boxed{1} then \\boxed{2") is None  # the last one is unclosed
    assert math_dapo.last_boxed("no box") is None


def test_unknown_verifier_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"verifier='math'.*\['strict', 'lenient'\]"):
        math_dapo.score("Answer: 1", "1", verifier="math")


# math-ai/amc23 stores AMC answers as floats; the strict verifier compares text, so 34.0 must read "34"
@pytest.mark.parametrize(
    ("reference", "text"),
    [(34.0, "34"), (34, "34"), (-3.0, "-3"), (0.5, "0.5"), ("34", "34"), (" 34.0 ", " 34.0 ")],
)
def test_reference_text_writes_numbers_as_the_data_files_do(reference, text):
    assert math_dapo.reference_text(reference) == text


def test_a_float_reference_scores_its_integer_answer_correct():
    numpy = pytest.importorskip("numpy")
    completion = "Adding the two gives 34.\nAnswer: 34"
    for reference in (34.0, numpy.float64(34.0), numpy.int64(34)):
        assert math_dapo.score(completion, reference) == {"score": 1.0, "acc": True, "pred": "34"}
        assert math_dapo.score("So \\boxed{34}.", reference, verifier="lenient")["acc"] is True
    assert math_dapo.score("Answer: 34.5", 34.5)["acc"] is True
    assert math_dapo.score("Answer: 34", 34.5)["acc"] is False


@pytest.mark.parametrize(
    ("reference", "error", "message"),
    [
        (True, TypeError, "neither text nor a number"),
        (None, TypeError, "neither text nor a number"),
        (float("nan"), ValueError, "reference answer is nan"),
        (float("inf"), ValueError, "reference answer is inf"),
    ],
)
def test_a_broken_reference_is_refused_with_the_fix(reference, error, message):
    with pytest.raises(error, match=message):
        math_dapo.score("Answer: 1", reference)


def test_last_boxed_takes_the_commands_it_is_given():
    """examples/verl/prepare_data.py reads a MATH solution's last ``\\boxed{}`` or ``\\fbox{}``."""
    text = "first \\boxed{1}, then \\fbox{\\frac{2}{3}}."
    assert math_dapo.last_boxed(text) == "1"
    assert math_dapo.last_boxed(text, ("\\boxed", "\\fbox")) == "\\frac{2}{3}"
    assert (
        math_dapo.last_boxed(text + " \\fbox{4", ("\\boxed", "\\fbox")) is None
    )  # the last box never closes
    assert math_dapo.last_boxed("no box", ("\\boxed", "\\fbox")) is None
