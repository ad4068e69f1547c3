"""Where a looping answer is cut (orchestrator/pipeline/loops.py)."""

from __future__ import annotations

from orchestrator.pipeline.loops import loop_start


def test_a_digit_repeated_to_the_budget_is_cut_after_its_first_occurrence() -> None:
    text = "The embedded Redis listens on port 63" + "9" * 40
    assert text[: loop_start(text)] == "The embedded Redis listens on port 639"


def test_a_phrase_repeated_is_cut_to_one() -> None:
    text = "Keys rotate every 90 days [1]. " + "and then " * 9
    assert text[: loop_start(text)] == "Keys rotate every 90 days [1]. and then "


def test_a_line_said_again_is_cut_where_it_starts_again() -> None:
    text = "Backups run nightly at 02:00 UTC [2].\nThey are kept 35 days.\n"
    text += "Backups run  nightly at 02:00 UTC [2].\nmore"
    assert (
        text[: loop_start(text)]
        == "Backups run nightly at 02:00 UTC [2].\nThey are kept 35 days.\n"
    )


def test_honest_answers_are_left_alone() -> None:
    honest = [
        "The limit is 1000000 requests per day [1].",
        "Steps:\n- yes\n- yes\n- run `make setup`\n",
        "| a | b | c |\n|---|---|---|\n| 1 | 2 | 3 |\n",
        "Wait for the line ........ to finish.",
        "Backups run nightly [2].\nBackups run nightly",  # the last line is still growing
    ]
    assert [loop_start(t) for t in honest] == [None] * len(honest)
