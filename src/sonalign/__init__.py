"""sonalign: align sound and language.

Public surface (open_clip / sentence-transformers style):

>>> import sonalign
>>> sonalign.list_models()
>>> model = sonalign.create_model("hilbert")
"""

__version__ = "0.1.0"


def list_models() -> list[str]:
    from sonalign.models.factory import list_models as _list

    return _list()


def create_model(name_or_path: str, **overrides):
    from sonalign.models.factory import create_model as _create

    return _create(name_or_path, **overrides)
