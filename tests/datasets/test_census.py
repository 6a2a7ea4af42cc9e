from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from polytask.datasets import (
    CENSUS_CATEGORICAL,
    CENSUS_NUMERIC,
    CENSUS_TASKS,
    load_census_income,
    split_frame,
)
from polytask.errors import DataError

N_ROWS = 99_762
FIRST_LINE = (
    "38, Private, 6, 36, 1st 2nd 3rd or 4th grade, 0, Not in universe, Married-civilian spouse "
    "present, Manufacturing-durable goods, Machine operators assmblrs & inspctrs, White, Mexican "
    "(Mexicano), Female, Not in universe, Not in universe, Full-time schedules, 0, 0, 0, Joint "
    "one under 65 & one 65+, Not in universe, Not in universe, Spouse of householder, Spouse of "
    "householder, 1032.38, ?, ?, ?, Not in universe under 1 year old, ?, 4, Not in universe, "
    "Mexico, Mexico, Mexico, Foreign born- Not a citizen of U S , 0, Not in universe, 2, 12, 95, "
    "- 50000."
)


@pytest.fixture(scope="module")
def census(census_test_file: Path) -> pd.DataFrame:
    return load_census_income(census_test_file)


def _write(path: Path, lines: list[str], *, compress: bool = False) -> Path:
    text = "\n".join(lines) + "\n"
    if compress:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


# --- the schema constants, checked without the data -------------------------------------------


def test_feature_constants_leave_out_labels_and_the_sampling_weight() -> None:
    assert "instance_weight" not in CENSUS_NUMERIC
    assert "marital_stat" not in CENSUS_CATEGORICAL
    assert "income_50k" not in CENSUS_CATEGORICAL
    assert not set(CENSUS_NUMERIC) & set(CENSUS_CATEGORICAL)
    assert len(CENSUS_NUMERIC) + len(CENSUS_CATEGORICAL) == 42 - 3


def test_tasks_are_the_mmoe_census_tasks() -> None:
    assert CENSUS_TASKS == {
        "income": {"type": "binary", "label": "income_50k", "positive": "50000+."},
        "marital": {"type": "binary", "label": "marital_stat", "positive": "Never married"},
    }


# --- parsing, on small files written here -----------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_one_line_parses_to_typed_values(tmp_path: Path, compress: bool) -> None:
    df = load_census_income(_write(tmp_path / "one", [FIRST_LINE], compress=compress))
    assert df.shape == (1, 42)
    row = df.iloc[0]
    assert row["age"] == 38.0 and df["age"].dtype == np.float64
    assert row["instance_weight"] == pytest.approx(1032.38)
    assert row["det_ind_code"] == "6" and row["year"] == "95" and row["vet_benefits"] == "2"
    assert row["marital_stat"] == "Married-civilian spouse present"
    assert row["income_50k"] == "- 50000."
    assert pd.isna(row["mig_chg_msa"]) and pd.isna(row["mig_prev_sunbelt"])


def test_only_question_mark_means_missing(tmp_path: Path) -> None:
    line = FIRST_LINE.replace("Mexico, Mexico, Mexico", "NA, None, Mexico")
    df = load_census_income(_write(tmp_path / "na", [line]))
    assert df.loc[0, "country_father"] == "NA"
    assert df.loc[0, "country_mother"] == "None"


def test_missing_file_names_the_path_and_the_source(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.gz"
    with pytest.raises(DataError, match=r"nowhere\.gz.*does not exist.*UCI KDD archive"):
        load_census_income(path)


def test_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected a file"):
        load_census_income(tmp_path)


@pytest.mark.parametrize(
    ("bad_line", "found"),
    [(FIRST_LINE + ", extra", 43), (FIRST_LINE.rsplit(",", 1)[0], 41)],
)
def test_wrong_field_count_names_the_file_line_and_counts(
    tmp_path: Path, bad_line: str, found: int
) -> None:
    path = _write(tmp_path / "bad.csv", [FIRST_LINE, bad_line, FIRST_LINE])
    with pytest.raises(DataError, match=rf"bad\.csv.*line 2 has {found} .*expected 42"):
        load_census_income(path)


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_census_income(path)


def test_text_in_a_numeric_column_is_a_data_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "word", [FIRST_LINE.replace("38,", "thirty-eight,", 1)])
    with pytest.raises(DataError, match=r"word.*cannot be parsed"):
        load_census_income(path)


# --- the official test file -------------------------------------------------------------------


@pytest.mark.slow
def test_official_test_file_shape_and_labels(census: pd.DataFrame) -> None:
    assert census.shape == (N_ROWS, 42)
    income = CENSUS_TASKS["income"]
    marital = CENSUS_TASKS["marital"]
    assert (census[income["label"]] == income["positive"]).sum() == 6_186  # 6.20%
    assert (census[income["label"]] == "- 50000.").sum() == N_ROWS - 6_186
    assert (census[marital["label"]] == marital["positive"]).sum() == 43_143
    assert census["year"].value_counts().to_dict() == {"95": 49_946, "94": 49_816}


@pytest.mark.slow
def test_official_test_file_strings_are_clean(census: pd.DataFrame) -> None:
    strings = census.drop(columns=[*CENSUS_NUMERIC, "instance_weight"])
    for column in strings.columns:
        values = strings[column].dropna().unique()
        assert not any(v.startswith(" ") for v in values), column
        assert "?" not in values, column
    assert census["mig_chg_msa"].isna().any()
    assert all(census[c].dtype == np.float64 for c in CENSUS_NUMERIC)


@pytest.mark.slow
def test_every_feature_and_label_column_exists(census: pd.DataFrame) -> None:
    labels = [task["label"] for task in CENSUS_TASKS.values()]
    assert set(CENSUS_CATEGORICAL) | set(CENSUS_NUMERIC) | set(labels) <= set(census.columns)
    assert set(census.columns) - set(CENSUS_CATEGORICAL) - set(CENSUS_NUMERIC) == {
        "instance_weight",
        *labels,
    }


@pytest.mark.slow
def test_project_split_of_the_official_test_file(census: pd.DataFrame) -> None:
    parts = split_frame(census, seed=0)
    assert [len(p) for p in parts] == [79_810, 9_976, 9_976]
    for part, fraction in zip(parts, (0.8, 0.1, 0.1), strict=True):
        assert abs(len(part) - fraction * N_ROWS) <= 1
    index = np.concatenate([p.index.to_numpy() for p in parts])
    assert len(set(index)) == N_ROWS
    again = split_frame(census, seed=0)
    assert all(a.index.equals(b.index) for a, b in zip(parts, again, strict=True))
