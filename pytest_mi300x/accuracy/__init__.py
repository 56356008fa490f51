"""Answers beside speed: a small exact-match check after a workload's speed runs."""

from pytest_mi300x.accuracy.check import AccuracyCheck

__all__ = ["AccuracyCheck"]
