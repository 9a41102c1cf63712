"""Hub dataset definitions (for users who have a dataset hub): path, config, task, columns.

Torch- and pandas-free, so that config validation can learn a hub dataset's task while
Snakemake parses the workflow. A definition maps hub columns to canonical ones
(`columns`), builds a canonical column from several hub columns with a format string
(`templates`), or, for nested fields (a translation pair, a list of answers), turns each
hub record into canonical fields with a plain function (`row`; None drops the record).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

Row = Callable[[dict[str, Any]], "dict[str, Any] | None"]


@dataclass(frozen=True)
class HubDataset:
    path: str
    config: str | None
    task: str
    columns: dict[str, str]  # canonical -> hub column
    splits: dict[str, str]  # our split (or "all" for a lone split to cut) -> hub split
    label_names: tuple[str, ...] | None = None
    templates: dict[str, str] = field(default_factory=dict)  # canonical -> "{hub_column} ..."
    row: Row | None = None  # hub record -> canonical fields, for nested columns


def translation(source_lang: str, target_lang: str) -> Row:
    """WMT records hold {"translation": {lang: text}}: source and target by language."""

    def row(record: dict[str, Any]) -> dict[str, Any]:
        pair = record["translation"]
        return {"source": pair[source_lang], "target": pair[target_lang]}

    return row


def first_answer(id_prefix: str = "") -> Row:
    """Extractive QA (SQuAD layout): question then passage -> the first gold answer.

    The question comes first so that truncation cuts the passage's end, never the question.
    TyDiQA's GoldP file mixes languages; its ids start with the language name (`id_prefix`).
    """

    def row(record: dict[str, Any]) -> dict[str, Any] | None:
        answers = record["answers"]["text"]
        if not str(record.get("id", "")).startswith(id_prefix) or not answers:
            return None
        return {"source": f"Question: {record['question']}\nPassage: {record['context']}", "target": answers[0]}

    return row


GLUE_TEST_HIDDEN = {"train": "train", "test": "validation"}
TRAIN_TEST = {"train": "train", "test": "test"}
ALL_THREE = {"train": "train", "validation": "validation", "test": "test"}
NLI3 = ("entailment", "neutral", "contradiction")
PAIR_TEMPLATE = {"text": "{premise}\nHypothesis: {hypothesis}"}


def _glue(config: str, columns: dict[str, str], label_names: tuple[str, ...], **extra: Any) -> HubDataset:
    return HubDataset("nyu-mll/glue", config, "classification", columns, extra.pop("splits", GLUE_TEST_HIDDEN),
                      label_names, **extra)


def _xnli(language: str) -> HubDataset:
    return HubDataset("facebook/xnli", language, "classification", {"label": "label"}, ALL_THREE, NLI3,
                      templates=PAIR_TEMPLATE)


def _tydiqa(language: str) -> HubDataset:
    # GoldP has no test split with answers: its validation is our test, validation is cut from train.
    return HubDataset("google-research-datasets/tydiqa", "secondary_task", "summarisation", {}, GLUE_TEST_HIDDEN,
                      row=first_answer(language))


# GLUE test labels are hidden (-1): its validation split is the test set and validation is cut from train.
# Generation sources (translation, QA, code) use the summarisation columns: source -> target.
HUB_DATASETS = {
    "glue/sst2": _glue("sst2", {"text": "sentence", "label": "label"}, ("negative", "positive")),
    "glue/cola": _glue("cola", {"text": "sentence", "label": "label"}, ("unacceptable", "acceptable")),
    "glue/rte": _glue("rte", {"label": "label"}, ("entailment", "not_entailment"),
                      templates={"text": "{sentence1}\nHypothesis: {sentence2}"}),
    "glue/mnli": _glue("mnli", {"label": "label"}, NLI3, templates=PAIR_TEMPLATE,
                       splits={"train": "train", "test": "validation_matched"}),
    "glue/qnli": _glue("qnli", {"label": "label"}, ("entailment", "not_entailment"),
                       templates={"text": "{question}\nSentence: {sentence}"}),
    "cnn_dailymail": HubDataset(
        "abisee/cnn_dailymail", "3.0.0", "summarisation", {"source": "article", "target": "highlights"}, ALL_THREE,
    ),
    "xsum": HubDataset("EdinburghNLP/xsum", None, "summarisation", {"source": "document", "target": "summary"},
                       ALL_THREE),
    "wmt14/en-de": HubDataset("wmt/wmt14", "de-en", "summarisation", {}, ALL_THREE, row=translation("en", "de")),
    "wmt16/ro-en": HubDataset("wmt/wmt16", "ro-en", "summarisation", {}, ALL_THREE, row=translation("ro", "en")),
    "tydiqa/sw": _tydiqa("swahili"),
    "tydiqa/fi": _tydiqa("finnish"),
    "squad": HubDataset("rajpurkar/squad", "plain_text", "summarisation", {}, GLUE_TEST_HIDDEN, row=first_answer()),
    "boolq": HubDataset("google/boolq", None, "classification", {"label": "answer"}, GLUE_TEST_HIDDEN, ("no", "yes"),
                        templates={"text": "Question: {question}?\nPassage: {passage}"}),
    "code_alpaca": HubDataset("sahil2801/CodeAlpaca-20k", None, "summarisation", {"target": "output"},
                              {"all": "train"}, templates={"source": "{instruction}\n{input}"}),
    "mbpp": HubDataset("google-research-datasets/mbpp", "full", "summarisation", {"source": "text", "target": "code"},
                       ALL_THREE),
    "ag_news": HubDataset("fancyzhx/ag_news", None, "classification", {"text": "text", "label": "label"}, TRAIN_TEST,
                          ("World", "Sports", "Business", "Sci/Tech")),
    "dbpedia_14": HubDataset(
        "fancyzhx/dbpedia_14", None, "classification", {"label": "label"}, TRAIN_TEST,
        ("Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder", "MeanOfTransportation",
         "Building", "NaturalPlace", "Village", "Animal", "Plant", "Album", "Film", "WrittenWork"),
        templates={"text": "{title}: {content}"},
    ),
    "yahoo_answers_topics": HubDataset(
        "community-datasets/yahoo_answers_topics", None, "classification", {"label": "topic"}, TRAIN_TEST,
        ("Society & Culture", "Science & Mathematics", "Health", "Education & Reference", "Computers & Internet",
         "Sports", "Business & Finance", "Entertainment & Music", "Family & Relationships", "Politics & Government"),
        templates={"text": "{question_title}\n{question_content}\n{best_answer}"},
    ),
    "imdb": HubDataset("stanfordnlp/imdb", "plain_text", "classification", {"text": "text", "label": "label"},
                       TRAIN_TEST, ("negative", "positive")),
    "amazon_polarity": HubDataset("fancyzhx/amazon_polarity", "amazon_polarity", "classification", {"label": "label"},
                                  TRAIN_TEST, ("negative", "positive"), templates={"text": "{title}\n{content}"}),
    "tweet_eval/sentiment": HubDataset("cardiffnlp/tweet_eval", "sentiment", "classification",
                                       {"text": "text", "label": "label"}, ALL_THREE,
                                       ("negative", "neutral", "positive")),
    "paws-x/de": HubDataset("google-research-datasets/paws-x", "de", "classification", {"label": "label"}, ALL_THREE,
                            ("no", "yes"), templates={"text": "{sentence1}\nSentence 2: {sentence2}"}),
    **{f"xnli/{language}": _xnli(language) for language in ("fr", "es", "ar", "zh", "ru")},
}


# --------------------------------------------------------------------------- text-to-text casts


CASTS = ("text2text",)
CAST_KEYS = ("prompt", "label_words")


def cast_problems(where: str, spec: dict[str, Any], label_names: list[str] | None) -> list[str]:
    """What is wrong with a dataset definition's cast keys (`where` names it, e.g. datasets.rte).

    `label_names`: the source's class names when known without reading rows (None: unknown).
    Plain Python, so that config checks can call it while Snakemake parses.
    """
    problems = [f"{where}.{key}: only used with cast: text2text" for key in CAST_KEYS
                if key in spec and spec.get("cast") != "text2text"]
    prompt = spec.get("prompt")
    if prompt is not None and "{text}" not in prompt:
        problems.append(f"{where}.prompt: {prompt!r} has no {{text}} placeholder for the source text")
    words = spec.get("label_words")
    if words is not None and label_names is not None and len(words) != len(label_names):
        problems.append(f"{where}.label_words: {len(words)} word(s) for {len(label_names)} label(s) {label_names}")
    return problems


def config_cast_problems(where: str, spec: dict[str, Any]) -> list[str]:
    """`cast_problems` for a config's dataset definition, with label names known before any job:
    a hub definition's, an asset's registry entry's, a local file's `label_names`."""
    if spec.get("source") == "hub" and spec.get("hub") in HUB_DATASETS:
        names = HUB_DATASETS[spec["hub"]].label_names
    elif spec.get("source") == "asset":
        from ..assets import load_registry  # stdlib-only at import

        names = load_registry().get(spec.get("asset"), {}).get("label_names")
    else:
        names = spec.get("label_names")
    return cast_problems(where, spec, list(names) if names else None)
