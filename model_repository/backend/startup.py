"""What every python-backend model here reads first: its version folder and its parameters.

Copied beside each model's `model.py` (export, publish-llm); imports nothing of ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def model_args(args: dict[str, Any]) -> tuple[Path, dict[str, str]]:
    """The version folder (model.py, weights, tokenizer) and the config's `parameters`."""
    config = json.loads(args["model_config"])
    params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
    return Path(args["model_repository"]) / args["model_version"], params
