"""Frozen encoders behind one protocol, looked up by name (``aisfx-cnn``, ``minilm-l6``, ``hf:PATH``, ``pocketsphinx``)."""

from sonalign.encoders.base import AudioEncoder, TextEncoder, get_audio_encoder, get_text_encoder, list_encoders

__all__ = ["AudioEncoder", "TextEncoder", "get_audio_encoder", "get_text_encoder", "list_encoders"]
