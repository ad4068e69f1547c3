"""export/quiet.py drops only the known-harmless messages, only inside its block."""

from __future__ import annotations

import logging
import warnings

import pytest

from export.quiet import quiet


def test_known_harmless_messages_are_dropped_and_the_rest_shows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet():
            logging.warning("Please consider to run pre-processing before quantization. Refer")
            logging.getLogger("fusion_skiplayernorm").warning("symbolic shape inference disabled")
            logging.warning("the calibration data is empty")  # not known: it shows
            logging.getLogger("fusion_skiplayernorm").error("fusion failed")  # another message
            warnings.warn(
                "Converting a tensor to a Python boolean might cause the trace to be incorrect",
                stacklevel=1,
            )
            warnings.warn("a different warning", stacklevel=1)
    logging.warning("Please consider to run pre-processing before quantization (outside)")
    assert [r.getMessage() for r in caplog.records] == [
        "the calibration data is empty",
        "fusion failed",
        "Please consider to run pre-processing before quantization (outside)",
    ]
    assert [str(w.message) for w in seen] == ["a different warning"]
