"""`llmcls train-linear`: TF-IDF + one-vs-rest linear classifier, the floor every model must beat.

    llmcls train-linear --train aapd-train --validation aapd-validation --test aapd-test --output_dir runs/linear

Word uni+bigram TF-IDF with sublinear tf (English stop words and n-grams seen in one training document dropped:
on 600 AAPD training rows that is worth about +0.03 micro-F1 on held-out rows); one linear SVM (or logistic
regression) per label; the decision values are kept as scores (so ranking metrics exist) and cut by thresholds
tuned on --validation with `metrics.py`: one global threshold (or one per label), and `--min_labels` as "always
predict at least the top N labels". When `--c` or `--min_labels` list several values, the combination with the best
validation micro-F1 is kept. Nothing is tuned on --test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from llmcls.config import DataArguments, build_parser, number_list, parse, to_dict
from llmcls.corpus import Corpus, load_corpus, text_field_names
from llmcls.errors import LlmclsError
from llmcls.metrics import Thresholds, apply_thresholds, tune_best_thresholds
from llmcls.progress import console, status
from llmcls.runs import Predictions, RunDir, primary_split, split_summary


@dataclass
class LinearArguments:
    output_dir: str = field(default="runs/linear", metadata={"help": "Run directory to write."})
    classifier: str = field(default="svm", metadata={"help": "Linear model per label.",
                                                     "choices": ["svm", "logreg"]})
    c: str = field(default="1.0,2.0,4.0,8.0", metadata={
        "help": "Inverse regularisation strength; a comma-separated list is searched on --validation."})
    ngram_max: int = field(default=2, metadata={"help": "Largest word n-gram."})
    min_df: int = field(default=2, metadata={
        "help": "Ignore n-grams in fewer training documents than this (singleton bigrams are mostly noise)."})
    stop_words: str = field(default="english", metadata={"help": "Stop-word list to drop, or 'none'.",
                                                          "choices": ["english", "none"]})
    max_features: int | None = field(default=None, metadata={"help": "Keep only the most frequent n-grams."})
    per_label_thresholds: bool = field(default=False, metadata={
        "help": "Tune one threshold per label (needs a large validation split) instead of one global."})
    min_labels: str = field(default="0,1,2", metadata={
        "help": "Always predict at least this many top-scored labels; a list is searched on --validation."})
    text_fields: str = field(default="title,abstract", metadata={"help": "Fields joined into the input text."})


def make_parser():
    return build_parser([DataArguments, LinearArguments], prog="llmcls train-linear",
                        description="Train the TF-IDF + linear one-vs-rest baseline and write a run directory.")


def main(argv: list[str] | None = None) -> int:
    data_args, args = parse(make_parser(), argv)
    check_arguments(args)
    RunDir(args.output_dir).check_overwrite("train-linear")
    corpus = load_corpus(data_args, required=("train",))
    started = time.perf_counter()
    model = fit_best(corpus, args)
    train_s = time.perf_counter() - started
    write_run(corpus, model, args, data_args, train_s)
    return 0


def check_values(parsed: tuple) -> None:
    """What `llmcls benchmark` checks of a train-linear system before the first system runs."""
    check_arguments(parsed[1])


def check_arguments(args: LinearArguments) -> None:
    """Option values that would otherwise fail deep in scikit-learn, after the data is read."""
    number_list(args.c, "c", float, minimum=1e-12)
    number_list(args.min_labels, "min_labels", int, minimum=0)
    for option in ("ngram_max", "min_df", "max_features"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise LlmclsError(f"--{option} must be at least 1, got {value}")


def texts_of(ds, fields: str) -> list[str]:
    columns = [ds[name] for name in text_field_names(ds, fields)]
    return [" ".join(part for part in parts if part) for parts in zip(*columns, strict=True)]


ONE_CLASS = 1.0e6  # |score| of a label with one class in train: beyond any decision value, finite for the metrics


@dataclass
class LinearModel:
    vectorizer: object
    classifiers: list  # one fitted estimator per label, or a float constant for labels with one class in train
    c: float
    thresholds: Thresholds | None  # None only while fitting

    def scores(self, texts: list[str]) -> np.ndarray:
        features = self.vectorizer.transform(texts)
        columns = [np.full(features.shape[0], clf, dtype=float) if isinstance(clf, float)
                   else clf.decision_function(features) for clf in self.classifiers]
        return np.column_stack(columns)

    def predict(self, scores: np.ndarray) -> np.ndarray:
        return apply_thresholds(scores, self.thresholds)


def fit_best(corpus: Corpus, args: LinearArguments) -> LinearModel:
    """Fit for each C; keep the best on validation (thresholds and min_labels tuned there too)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    space, train, validation = corpus.label_space, corpus.get("train"), corpus.get("validation")
    vectorizer = TfidfVectorizer(ngram_range=(1, args.ngram_max), sublinear_tf=True, min_df=args.min_df,
                                 max_features=args.max_features, strip_accents="unicode", dtype=np.float32,
                                 stop_words=None if args.stop_words == "none" else args.stop_words)
    with status("Fitting TF-IDF"):
        try:
            x_train = vectorizer.fit_transform(texts_of(train, args.text_fields))
        except ValueError as err:  # scikit-learn: no term left (empty texts, or --min_df above every count)
            raise LlmclsError(f"--text_fields {args.text_fields}: no n-gram of the training texts is kept "
                              f"({str(err).splitlines()[0]}); are the fields empty, or --min_df too high?") from None
    y_train = space.to_multi_hot(train["labels"])
    untrained = [lab for lab, n in zip(space.labels, y_train.sum(axis=0), strict=True) if n == 0]
    if untrained:
        console.print(f"note: {len(untrained)} labels have no training example ({', '.join(untrained[:5])}"
                      f"{', ...' if len(untrained) > 5 else ''}): ranked last, never predicted")
    c_values = number_list(args.c, "c", float, minimum=1e-12)
    min_labels = number_list(args.min_labels, "min_labels", int, minimum=0)
    if validation is None:
        if len(c_values) > 1 or len(min_labels) > 1:
            console.print(f"note: no validation split to choose on: C={c_values[0]:g} and min_labels={min_labels[0]} "
                          "(the first values of --c and --min_labels) are used, the others not searched")
        c_values, min_labels = c_values[:1], min_labels[:1]
    y_val = space.to_multi_hot(validation["labels"]) if validation is not None else None
    val_texts = texts_of(validation, args.text_fields) if validation is not None else None
    best: LinearModel | None = None
    for c in c_values:
        with status(f"Fitting {len(space)} {args.classifier} classifiers (C={c})"):
            model = LinearModel(vectorizer, _fit_classifiers(x_train, y_train, args.classifier, c), c, None)
        if validation is None:  # the classifiers' own cut (score > 0), with the --min_labels rule still applied
            cut = np.full(len(space), np.nextafter(0.0, 1.0))
            return LinearModel(vectorizer, model.classifiers, c, Thresholds(cut, min_labels=min_labels[0]))
        thresholds = tune_best_thresholds(
            y_val, model.scores(val_texts), min_labels=min_labels, per_label=args.per_label_thresholds,
            report=lambda tuned, c=c: console.print(f"  C={c:g} min_labels={tuned.min_labels}: validation micro-F1 "
                                                    f"{tuned.validation_micro_f1:.4f}"))
        if best is None or thresholds.validation_micro_f1 > best.thresholds.validation_micro_f1:
            best = LinearModel(vectorizer, model.classifiers, c, thresholds)
    return best


def _fit_classifiers(x, y: np.ndarray, kind: str, c: float) -> list:
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    classifiers = []
    for j in range(y.shape[1]):
        target = y[:, j]
        if target.all() or not target.any():  # one class only: a constant beyond every classifier's scores, so
            classifiers.append(ONE_CLASS if target.all() else -ONE_CLASS)  # it never outranks a trained label
            continue
        clf = LinearSVC(C=c) if kind == "svm" else LogisticRegression(C=c, max_iter=2000)
        classifiers.append(clf.fit(x, target))
    return classifiers


def write_run(corpus: Corpus, model: LinearModel, args: LinearArguments, data_args: DataArguments,
              train_s: float) -> None:
    space = corpus.label_space
    run = RunDir(args.output_dir).create()
    run.clear_results()
    config = to_dict(data_args, args) | {"selected_c": model.c, "data_sizes": corpus.sizes(), "notes": corpus.notes}
    run.write_config(config)
    run.write_labels(space)
    if corpus.get("validation") is not None:  # tuned there
        run.write_json("thresholds.json", model.thresholds.to_dict())
    evaluated = [s for s in ("validation", "test") if corpus.get(s) is not None]
    primary = primary_split(evaluated)
    for split in evaluated:
        ds = corpus.get(split)
        started = time.perf_counter()
        scores = model.scores(texts_of(ds, args.text_fields))
        predicted = model.predict(scores)
        wall = time.perf_counter() - started
        gold = space.to_multi_hot(ds["labels"])
        timing = {"wall_s": round(wall, 3), "examples_per_s": round(len(ds) / max(wall, 1e-9), 1),
                  "device": "cpu", "train_s": round(train_s, 3)}
        metrics = run.write_split(Predictions(list(ds["id"]), gold, predicted, scores), space, split, primary,
                                  system="linear", model=f"tfidf+{args.classifier}", timing=timing,
                                  extra={"params_trained": _n_params(model)})
        console.print(split_summary(split, metrics, len(ds)))
    console.print(f"Run written to {run.path}")


def _n_params(model: LinearModel) -> int:
    return int(sum(clf.coef_.size + clf.intercept_.size for clf in model.classifiers if not isinstance(clf, float)))


if __name__ == "__main__":
    raise SystemExit(main())
