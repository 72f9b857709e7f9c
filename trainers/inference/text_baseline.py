"""A bag-of-words baseline on the prompt's text: how much the titles alone rank, with no LLM and no ids.

It reads the text fields every bundled template shows — the candidate's ``title`` and the user's
``history_titles`` — as TF-IDF vectors (word uni- and bigrams of the title, words of the last ``max_history``
history titles; either field alone with ``fields``) and fits a logistic regression on train rows. Beside an LLM run it answers two questions: how far
a text-only stage could get at a given train budget, and (blended with a CF model's score) whether the text
carries signal the CF model lacks.
"""

import numpy as np
import scipy.sparse as sp
from datasets import Dataset
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

FIELDS = ("title", "history")


class TextBaselineScorer:
    """TF-IDF + logistic regression over ``title`` and ``history_titles``, fitted on (a subsample of) train.

    Args:
        train: train rows (schema of ``data_scripts.schema``).
        fields: the text read, a non-empty subset of ``("title", "history")``.
        max_rows: fit on this many random train rows (the budget of an LLM stage); None = all.
        seed: seed of the subsample.
        max_history: history titles read per row (the most recent ones, as the processor does).
        regularization: inverse L2 strength ``C`` of the logistic regression.
    """

    def __init__(
        self,
        train: Dataset,
        fields: tuple[str, ...] = FIELDS,
        max_rows: int | None = None,
        seed: int = 0,
        max_history: int = 10,
        regularization: float = 1.0,
    ):
        if not fields or set(fields) - set(FIELDS):
            raise ValueError(f"fields must be a non-empty subset of {FIELDS}, got {fields}")
        if max_rows is not None and max_rows < 2:
            raise ValueError(f"max_rows must be >= 2 or None, got {max_rows}")
        if len(train) < 2:
            raise ValueError(f"need at least 2 train rows, got {len(train)}")
        if max_rows is not None and max_rows < len(train):
            train = train.select(np.random.default_rng(seed).permutation(len(train))[:max_rows].tolist())
        labels = np.asarray(train["label"])
        if len(np.unique(labels)) < 2:
            raise ValueError("the train rows hold one label only; a classifier needs both")
        self.max_history = max_history
        self.num_train_rows = len(train)
        vectorizers = {"title": TfidfVectorizer(ngram_range=(1, 2)), "history": TfidfVectorizer()}
        self.vectorizers = {field: vectorizers[field] for field in FIELDS if field in fields}
        texts = self._texts(train)
        features = sp.hstack([vectorizer.fit_transform(texts[field]) for field, vectorizer in self.vectorizers.items()])
        self.classifier = LogisticRegression(C=regularization, max_iter=2000).fit(features.tocsr(), labels)

    def _texts(self, dataset: Dataset) -> dict[str, list[str]]:
        texts = {}
        if "title" in self.vectorizers:
            texts["title"] = dataset["title"]
        if "history" in self.vectorizers:
            texts["history"] = [" ".join(titles[-self.max_history :]) for titles in dataset["history_titles"]]
        return texts

    def score(self, dataset: Dataset) -> np.ndarray:
        """Logits ``[N]`` (float64) of "liked" for ``dataset`` rows, row order kept."""
        texts = self._texts(dataset)
        features = sp.hstack([vectorizer.transform(texts[field]) for field, vectorizer in self.vectorizers.items()])
        return self.classifier.decision_function(features.tocsr()).astype(np.float64)
