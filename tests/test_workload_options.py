"""The --sharegpt option and the sharegpt_dataset fixture."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SAMPLE = Path(__file__).parent / "data" / "sharegpt-sample.json"


def test_missing_sharegpt_file_is_a_one_line_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--sharegpt", "nope.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--sharegpt */nope.json is not a file; give the path of "
                                 "ShareGPT_V3_unfiltered_cleaned_split.json*"])


@pytest.mark.parametrize(("args", "expected"), [
    ((), "SyntheticShareGPT"), (("--sharegpt", "sg.json"), "ShareGPTDataset"),
])
def test_fixture_uses_the_file_when_given(pytester: pytest.Pytester, args: tuple[str, ...],
                                          expected: str) -> None:
    shutil.copy(SAMPLE, pytester.path / "sg.json")
    pytester.makepyfile(f"""
        def test_it(sharegpt_dataset):
            ds = sharegpt_dataset(40, seed=3)
            assert type(ds).__name__ == "{expected}" and ds.num_prompts == 40 and ds.seed == 3
    """)
    pytester.runpytest(*args).assert_outcomes(passed=1)
