"""Does a build still answer right? A small exact-match check through the OpenAI API.

After a workload's speed runs, the shipped short-answer and arithmetic questions are sent
to the same server(s) through ``/v1/completions`` (string prompts, which vLLM and TGI
both take), few-shot, greedy (temperature 0), a few tokens, stopped at the line's end.
An answer counts when its first line, trimmed of spaces and a final period, equals one
of the accepted answers (case-insensitive).

The figure is ``accuracy`` = (right answers + 1) / (questions + 1), higher is better and
gated, so a build that got faster but answers worse fails as a regression. The add-one
keeps it above zero: a build that answers nothing right reads as a 97% drop. The raw counts
are recorded beside it (``accuracy_right``, ``accuracy_questions``), and each question's
outcome (``accuracy_items_<k>``, results/metrics.py): the verdict pairs them question by
question in an exact test (judge/discrete.py), since a count has no start-to-start spread.

With random weights (the cpu host's tiny model, ``dummy_weights`` hosts) answers are
noise: the check is skipped and the result says why.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mi300x.net import post_json
from pytest_mi300x.results.metrics import item_figures
from pytest_mi300x.workload.datasets import file_digest

SHIPPED = Path(__file__).with_name("short_answers.jsonl")
FEW_SHOT = ("Answer each question with a number or a single word.\n\n"
            "Q: What is 3 + 4?\nA: 7\n"
            "Q: What is the capital of Italy?\nA: Rome\n"
            "Q: What color is the sky on a clear day?\nA: Blue\n")


@dataclass(frozen=True)
class Question:
    question: str
    answers: tuple[str, ...]

    @property
    def prompt(self) -> str:
        return f"{FEW_SHOT}Q: {self.question}\nA:"

    def is_right(self, text: str) -> bool:
        line = text.strip().split("\n", 1)[0].strip().rstrip(".").strip()
        return line.casefold() in {a.casefold() for a in self.answers}


def load_questions(path: Path) -> tuple[Question, ...]:
    """``{"question", "answers": [...]}`` per line."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            out.append(Question(str(item["question"]), tuple(str(a) for a in item["answers"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not a question line ({exc}); write "
                             '{"question": "...", "answers": ["..."]}') from None
    if not out:
        raise ValueError(f"{path}: no questions")
    return tuple(out)


@dataclass(frozen=True)
class AccuracyCheck:
    """Exact-match questions asked after the speed runs (``Workload(accuracy=...)``)."""

    path: Path = SHIPPED
    max_tokens: int = 8
    concurrency: int = 8
    timeout_s: float = 120.0

    def questions(self) -> tuple[Question, ...]:
        return load_questions(self.path)

    def describe(self) -> dict[str, Any]:
        return {"questions": "shipped" if self.path == SHIPPED else "custom",
                **({} if self.path == SHIPPED else {"path": str(self.path)}),
                "digest": file_digest(self.path),
                "count": len(self.questions()), "max_tokens": self.max_tokens,
                "decoding": "greedy (temperature 0), stop at newline",
                "scoring": "exact match of the first line, case-insensitive",
                "figure": "accuracy = (right + 1) / (questions + 1)"}

    def run(self, base_urls: Sequence[str], api_key: str, model: str) -> AccuracyRun:
        """Ask every question once, question i at server i % n; never raises for an
        answer (a failed request counts as wrong, with its error kept)."""
        questions = self.questions()

        def ask(i: int) -> Answer:
            q = questions[i]
            body = {"model": model, "prompt": q.prompt, "max_tokens": self.max_tokens,
                    "temperature": 0.0, "stop": ["\n"], "stream": False}
            url = f"{base_urls[i % len(base_urls)].rstrip('/')}/v1/completions"
            try:
                status, raw = post_json(url, body, api_key, self.timeout_s)
                if status != 200:
                    return Answer(q.question, "", False,
                                  f"HTTP {status}: {raw[:200].decode(errors='replace')}")
                text = str(json.loads(raw)["choices"][0]["text"])
            except (OSError, ValueError, KeyError, IndexError) as exc:
                return Answer(q.question, "", False, f"{type(exc).__name__}: {exc}")
            return Answer(q.question, text, q.is_right(text))

        with ThreadPoolExecutor(max(1, self.concurrency)) as pool:
            answers = list(pool.map(ask, range(len(questions))))
        return AccuracyRun(answers)


@dataclass(frozen=True)
class Answer:
    question: str
    text: str
    right: bool
    error: str | None = None


@dataclass
class AccuracyRun:
    answers: list[Answer] = field(default_factory=list)

    @property
    def right(self) -> int:
        return sum(a.right for a in self.answers)

    def figures(self) -> dict[str, float]:
        n = len(self.answers)
        return {"accuracy": (self.right + 1) / (n + 1), "accuracy_right": float(self.right),
                "accuracy_questions": float(n),
                **item_figures([a.right for a in self.answers])}

    def to_dict(self) -> dict[str, Any]:
        return {**self.figures(),
                "wrong": [{"question": a.question, "answer": a.text,
                           **({"error": a.error} if a.error else {})}
                          for a in self.answers if not a.right]}
