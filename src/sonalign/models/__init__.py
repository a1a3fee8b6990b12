"""Alignment models: a registry of JSON configs (``configs/``) and the methods built from them."""

from sonalign.models.factory import create_model, list_models

__all__ = ["create_model", "list_models"]
