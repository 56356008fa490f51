"""The accuracy check's questions, scoring and figure (the end-to-end run is in test_tgi.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mi300x.accuracy.check import (
    SHIPPED,
    AccuracyCheck,
    AccuracyRun,
    Answer,
    Question,
    load_questions,
)
from pytest_mi300x.results.metrics import GATED_METRICS, METRIC_DIRECTIONS, items_of


def test_the_shipped_questions_load_and_each_has_answers() -> None:
    questions = load_questions(SHIPPED)
    assert len(questions) == 40 and all(q.answers for q in questions)
    assert len({q.question for q in questions}) == 40
    assert questions[0].prompt.endswith("Q: What is 12 + 7?\nA:")


@pytest.mark.parametrize("text, right", [
    (" 19", True), ("19.", True), (" 19\nQ: next", True), ("nineteen", False), ("190", False),
    ("", False)])
def test_exact_match_of_the_first_line(text: str, right: bool) -> None:
    assert Question("What is 12 + 7?", ("19",)).is_right(text) is right
    assert Question("Capital?", ("Paris",)).is_right(" paris") is True


def test_accuracy_is_gated_higher_is_better_and_never_zero() -> None:
    assert METRIC_DIRECTIONS["accuracy"] == "higher" and "accuracy" in GATED_METRICS
    none_right = AccuracyRun([Answer("q", "x", False)] * 40).figures()
    assert none_right == {"accuracy": 1 / 41, "accuracy_right": 0.0,
                          "accuracy_questions": 40.0, "accuracy_items_0": 0.0}
    # each question's outcome rides along, for the exact paired test (judge/discrete.py)
    some = AccuracyRun([Answer("q", "x", i % 2 == 0) for i in range(50)]).figures()
    assert items_of(some) == [i % 2 == 0 for i in range(50)]
    assert AccuracyRun([Answer("q", "x", True)] * 40).figures()["accuracy"] == 1.0


def test_a_bad_question_file_says_where(tmp_path: Path) -> None:
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "a", "answers": ["b"]}\n{"question": "c"}\n')
    with pytest.raises(ValueError, match=r"q.jsonl:2: not a question line"):
        load_questions(bad)
    good = tmp_path / "good.jsonl"
    good.write_text('{"question": "a", "answers": ["b"]}\n')
    described = AccuracyCheck(good).describe()
    assert described["questions"] == "custom" and described["count"] == 1


def test_an_unreachable_server_counts_as_wrong_with_its_error() -> None:
    run = AccuracyCheck(timeout_s=1.0).run(["http://127.0.0.1:9"], "", "m")
    assert run.right == 0 and all(a.error for a in run.answers)
