"""open_clip-style registry: each architecture is a JSON file in ``configs/``.

``create_model(name_or_path, **overrides)`` takes a registered name, a path to a JSON config, or a
run directory holding ``config.json`` (+ ``model.safetensors`` whose weights are then loaded).
A config names its class in ``"method"``; every other key is passed to that class.
"""

from __future__ import annotations

import json
from copy import deepcopy
from importlib import import_module
from pathlib import Path
from typing import Any

from sonalign.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"

#: method name in a config -> "module:Class"
METHODS: dict[str, str] = {
    "clap_baseline": "sonalign.models.clap_baseline:ClapBaseline",
    "hilbert": "sonalign.models.hilbert:Hilbert",
    "robust_atr": "sonalign.models.robust_atr:RobustATR",
    "hade": "sonalign.models.hade:HADE",
    "mga_clap": "sonalign.models.mga_clap:MGAClap",
    "calm": "sonalign.models.calm:CALM",
}


def list_models() -> list[str]:
    """Names of the registered model configs."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def get_model_config(name_or_path: str | Path) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
    if not path.suffix == ".json" or not path.exists():
        path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.exists():
        raise ConfigError(f"unknown model '{name_or_path}'; registered: {', '.join(list_models())}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if "model" in config and "method" not in config:  # a run's resolved config
        config = config["model"]
    if "method" not in config or config["method"] not in METHODS:
        raise ConfigError(f"{path}: 'method' must be one of {sorted(METHODS)}")
    return config


def _deep_update(base: dict, overrides: dict) -> dict:
    out = deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out


def create_model(name_or_path: str | Path, **overrides: Any):
    """Build a model from a registered name, a JSON path or a run directory (weights loaded)."""
    config = _deep_update(get_model_config(name_or_path), overrides)
    module_name, class_name = METHODS[config["method"]].split(":")
    cls = getattr(import_module(module_name), class_name)
    model = cls(config)
    weights = Path(name_or_path) / "model.safetensors"
    if Path(name_or_path).is_dir() and weights.exists():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(weights)))
    model.eval()
    return model
