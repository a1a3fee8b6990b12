"""Loading local Hugging Face folders (never downloaded) and the base every ``hf:`` encoder shares (see :mod:`sonalign.encoders.hf`)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from sonalign.encoders._common import (
    offline_env,
    sha256_files,
    weight_files,
)
from sonalign.errors import ConfigError
from sonalign.utils.device import resolve_device

SSL_TYPES = ("wav2vec2", "hubert", "wavlm")
AUDIO_TYPES = ("clap", "whisper", *SSL_TYPES)
#: Text models whose position ids start after the padding index (RoBERTa family).
_ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert", "clap_text_model", "longformer", "mpnet")
_IMPL_VERSION = 1
_LOCK = threading.RLock()
_SHARED: dict[tuple[str, str], Any] = {}


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
def resolve_model_dir(path: str | Path) -> Path:
    """Check that ``path`` is a local model folder with a ``config.json``; ConfigError otherwise."""
    if not str(path).strip():
        raise ConfigError("hf: needs a local model folder, e.g. hf:/models/clap-htsat-unfused")
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"hf:{path}: no such folder (hf: loads local folders only, it never downloads)")
    if not p.is_dir():
        raise ConfigError(f"hf:{path}: not a folder (expected a saved Hugging Face model folder)")
    if not (p / "config.json").is_file():
        raise ConfigError(f"hf:{path}: no config.json in the folder (save the model with save_pretrained)")
    return p.resolve()


def model_type(path: str | Path) -> str:
    """``model_type`` from the folder's ``config.json`` (ConfigError if missing)."""
    import json

    p = resolve_model_dir(path)
    try:
        cfg = json.loads((p / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"hf:{path}: unreadable config.json ({exc})") from exc
    mt = cfg.get("model_type")
    if not mt:
        raise ConfigError(f"hf:{path}: config.json has no model_type")
    return str(mt)


def _shared(path: Path, what: str, loader):
    """Load once per (folder, component) per process; CLAP's two towers share one model."""
    key = (str(path), what)
    with _LOCK:
        if key not in _SHARED:
            offline_env()
            _SHARED[key] = loader()
        return _SHARED[key]


def _freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _load_model(path: Path, cls_name: str = "AutoModel"):
    import transformers

    cls = getattr(transformers, cls_name)
    try:
        model = cls.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"hf:{path}: cannot load the model ({exc})") from exc
    return _freeze(model.float())  # fp16/bf16 checkpoints too: outputs are float32 everywhere


def _load_feature_extractor(path: Path):
    from transformers import AutoFeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"hf:{path}: no usable feature extractor (preprocessor_config.json) ({exc})") from exc


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"hf:{path}: no usable tokenizer in the folder ({exc})") from exc


class _HFBase:
    kind = "model"

    def __init__(self, path: str | Path, device: str | None = None):
        self.path = resolve_model_dir(path)
        self.model_type = model_type(self.path)
        self.name = f"hf:{path}"
        self.device = resolve_device(device)
        self._lock = threading.Lock()

    def _model_on_device(self, what: str, loader):
        """A model shared per (folder, component, device): loaded once, moved to :attr:`device`."""
        return _shared(self.path, f"{what}@{self.device}", lambda: loader().to(self.device))

    @property
    def config(self):
        """The model's ``PretrainedConfig`` (``AutoConfig``; no weights loaded)."""

        def load():
            from transformers import AutoConfig

            try:
                return AutoConfig.from_pretrained(str(self.path), local_files_only=True)
            except (OSError, ValueError, KeyError) as exc:
                raise ConfigError(f"hf:{self.path}: unreadable config.json ({exc})") from exc

        return _shared(self.path, "config", load)

    def _preprocessor(self) -> dict[str, Any]:
        import json

        pre = self.path / "preprocessor_config.json"
        return json.loads(pre.read_text()) if pre.is_file() else {}

    def _settings(self, **extra: Any) -> dict[str, Any]:
        return {
            "name": "hf",
            "impl_version": _IMPL_VERSION,
            "kind": self.kind,
            "model_type": self.model_type,
            "weights_sha256": sha256_files(weight_files(self.path), root=self.path),
            **extra,
        }


# --------------------------------------------------------------------------------------------
# audio: wav2vec2 / hubert / wavlm
# --------------------------------------------------------------------------------------------


def _clap_model(encoder: _HFBase):
    """One ClapModel per folder and device, shared by the audio and the text tower."""
    return encoder._model_on_device("model", lambda: _load_model(encoder.path, "ClapModel"))
