"""Sentence embedders from transformers encoders: local folders, pooling, and the offline error."""

import numpy as np
import pytest
from transformers import BertConfig, BertModel

from seqnb.embedders import transformer_embedder
from seqnb.models import ModelNotAvailableError
from seqnb.tokenizers import word_tokenizer

TEXTS = ["the sun came out", "rain fell on the road", "the sun came out"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A tiny BERT with a word tokenizer, saved like a downloaded embedder."""
    path = tmp_path_factory.mktemp("encoder")
    tok = word_tokenizer(TEXTS, vocab_size=50)
    config = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, pad_token_id=tok.pad_token_id)
    BertModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_local_folder_gives_normalised_mean_pooled_embeddings(encoder_dir):
    embed = transformer_embedder(str(encoder_dir), batch_size=2)  # two batches, the second one padded less
    e = embed(TEXTS)
    assert e.shape == (3, 16) and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert np.allclose(e[0], e[2], atol=1e-6) and not np.allclose(e[0], e[1])
    # padding does not change an embedding: the same text alone and in a padded batch
    assert np.allclose(embed(TEXTS[:1])[0], e[0], atol=1e-5)


def test_missing_embedder_offline_names_the_parameter():
    with pytest.raises(ModelNotAvailableError, match="'embedder'"):
        transformer_embedder("seqnb-nobody/no-such-embedder")
