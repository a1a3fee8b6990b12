"""The plain-torch BERT equals ``transformers.BertModel`` (MiniLM's real weights and a tiny random config)."""

import json

import pytest
import torch

from sonalign.encoders.bert import BertEncoder, FastTokenizer
from sonalign.encoders.minilm import model_dir
from sonalign.errors import ConfigError

transformers = pytest.importorskip("transformers")

TEXTS = ["a dog barks twice", "", "the quick brown fox jumps over the lazy dog " * 40, "Please enter your account number!"]


def reference(path, texts, max_length):
    tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        return enc, model(**enc).last_hidden_state


def test_minilm_weights_equal_transformers():
    path = model_dir()
    enc_ref, hidden_ref = reference(path, TEXTS, 128)
    enc = FastTokenizer(path, 128)(TEXTS)
    assert torch.equal(enc["input_ids"], enc_ref["input_ids"]) and torch.equal(enc["attention_mask"], enc_ref["attention_mask"])
    with torch.inference_mode():
        hidden = BertEncoder.from_dir(path)(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    mask = enc["attention_mask"].bool()
    torch.testing.assert_close(hidden[mask], hidden_ref[mask], atol=2e-5, rtol=1e-4)


def test_tiny_random_bert_equals_transformers(tmp_path):
    config = transformers.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(tmp_path, safe_serialization=True)
    ids = torch.randint(1, 120, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    types = torch.zeros_like(ids)
    types[2, 4:] = 1
    with torch.inference_mode():
        ref = transformers.BertModel.from_pretrained(tmp_path).eval()(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = BertEncoder.from_dir(tmp_path)(ids, mask, types)
    torch.testing.assert_close(got[mask.bool()], ref[mask.bool()], atol=1e-5, rtol=1e-4)


def test_unsupported_or_incomplete_checkpoints_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="absolute positions"):
        BertEncoder({"model_type": "bert", "position_embedding_type": "relative_key", "hidden_size": 8})
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                       "intermediate_size": 16, "max_position_embeddings": 16}))
    from safetensors.torch import save_file

    save_file({"embeddings.word_embeddings.weight": torch.zeros(10, 8)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match="lacks"):
        BertEncoder.from_dir(tmp_path)
    with pytest.raises(ConfigError, match="tokenizer.json"):
        FastTokenizer(tmp_path, 16)
