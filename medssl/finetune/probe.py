"""Probes on frozen features, fitted to convergence: L2 logistic regression and cosine kNN.

Both take precomputed features (float32 (N, D)) of a labeled TRAIN subset and the VAL set, choose
their one hyperparameter per label on val (regularisation strength C for the logistic probe, k for
kNN), and never see the test split. Multi-label: each label is fitted on the train rows whose mask
is 1 for it (U-Ignore / blank-ignore entries drop out of that label only).

Why not SGD on a linear head: a handful of epochs of AdamW at lr 1e-3 is a few dozen optimizer steps
at 100 labels, far from the optimum, and its "best epoch" is noise. A logistic regression on a few
hundred to a few thousand feature vectors is a small convex problem that L-BFGS solves exactly in
milliseconds, so the probe measures the features, not the optimizer.

Selection per label: the grid value with the highest val ROC-AUC, ties broken by the lower val
log-loss, then by the stronger regularisation (smaller C, larger k). A label with one class in val
is selected on val log-loss alone; a label with one class in train gets a constant prediction (its
train prevalence).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from medssl.finetune.data import LabeledSet

#: Inverse L2 strengths tried for the logistic probe, on standardised features (half-decades).
DEFAULT_CS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)
#: Neighbour counts tried for the kNN probe (values above the number of train rows are dropped).
DEFAULT_KS = (1, 3, 5, 10, 20, 50, 100, 200)
#: Softmax temperature of the similarity-weighted vote (Wu et al. 2018; DINO's kNN evaluation).
KNN_TEMPERATURE = 0.07
EPS = 1e-6


def _logit(p: float) -> float:
    p = float(np.clip(p, EPS, 1 - EPS))
    return float(np.log(p / (1 - p)))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities p for labels y in {0, 1} (clipped at 1e-6)."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if y.size else float("nan")


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if y.size == 0 or y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, p))


def _rows(labeled: LabeledSet, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of label j that count (mask 1) and their 0/1 targets."""
    keep = labeled.mask[:, j] > 0
    return np.flatnonzero(keep), labeled.targets[keep, j].astype(np.int64)


def _select(candidates: list[dict]) -> int:
    """Index of the best candidate: max val AUC (NaN ranks last), then min val loss, then grid order."""
    def key(i):
        c = candidates[i]
        auc = c["val_auc"] if np.isfinite(c["val_auc"]) else -np.inf
        loss = c["val_loss"] if np.isfinite(c["val_loss"]) else np.inf
        return (-auc, loss, i)
    return min(range(len(candidates)), key=key)


def standardizer(train_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (float32 (D,)) of the labeled train features; constant features get std ~1e-6*scale."""
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0) + 1e-6 * (np.abs(mean) + 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


@dataclass
class ProbeFit:
    """A fitted probe: `predict(features) -> (N, C) float64 probabilities`, what it chose, and why.

    kind: "linear" or "knn"; selected: per label the chosen hyperparameter ({"C": ..} or {"k": ..});
    history: per label, one dict per grid value with val_auc, val_loss (and n_iter, converged);
    val_score: mean val AUC over the tasks at the selected values (or -val loss, see val_selection_score).
    """

    kind: str
    labels: list
    selected: list
    history: list
    val_score: float = float("nan")
    score_name: str = ""
    state: dict = field(default_factory=dict)   # what `predict` needs; saved in best.pt

    def predict(self, feats: np.ndarray) -> np.ndarray:
        if self.kind == "linear":
            z = (np.asarray(feats, np.float64) - self.state["mean"]) / self.state["std"]
            return 1.0 / (1.0 + np.exp(-(z @ self.state["weight"].T + self.state["bias"])))
        return knn_scores(self.state["train_features"], self.state["train_targets"], self.state["train_mask"],
                          feats, self.state["mean"], np.asarray(self.state["k"]), self.state["temperature"])

    def head(self):
        """The linear probe as a `StandardizedLinear` torch module (linear.weight/bias, mean/std buffers)."""
        import torch

        from medssl.finetune.features import StandardizedLinear

        if self.kind != "linear":
            raise ValueError("only the linear probe has a linear head")
        h = StandardizedLinear(self.state["mean"], self.state["std"], len(self.labels))
        with torch.no_grad():
            h.linear.weight.copy_(torch.as_tensor(self.state["weight"], dtype=torch.float32))
            h.linear.bias.copy_(torch.as_tensor(self.state["bias"], dtype=torch.float32))
        return h.eval()


# ----------------------------------------------------------------------------- logistic regression
def logistic_estimator(*, class_weight=None, max_iter: int = 5000, tol: float = 1e-8):
    """The L2 logistic regression (L-BFGS, warm-started along a C path) both probe and tests use."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, solver="lbfgs", max_iter=max_iter, tol=tol, class_weight=class_weight,
                              warm_start=True)


def fit_at(clf, x: np.ndarray, y: np.ndarray, C: float):
    """Refit `clf` at C, starting from its current solution; ConvergenceWarning is recorded, not raised."""
    clf.set_params(C=C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(x, y)
    return clf


def fit_linear_probe(train_x: np.ndarray, train: LabeledSet, val_x: np.ndarray, val: LabeledSet,
                     labels: Sequence[str], *, tasks: Sequence[str] | None = None, Cs: Sequence[float] = DEFAULT_CS,
                     class_weights: bool = False, max_iter: int = 5000) -> ProbeFit:
    """Per label, L2 logistic regression on train features standardised with train statistics; C on val.

    The C path is fitted from the strongest regularisation up, each fit warm-started from the
    previous one (the solutions move smoothly with C). `class_weights` uses sklearn's "balanced".
    """
    mean, std = standardizer(train_x)
    # float64: L-BFGS on float32 features stops early on rounding noise (measured: a cold start and a
    # warm start then disagree on the val loss in the 4th decimal)
    zt = (np.asarray(train_x, np.float64) - mean) / std
    zv = (np.asarray(val_x, np.float64) - mean) / std
    n_labels, dim = len(labels), train_x.shape[1]
    weight = np.zeros((n_labels, dim))
    bias = np.zeros(n_labels)
    selected, history = [], []
    cw = "balanced" if class_weights else None
    Cs = sorted(float(c) for c in Cs)
    for j in range(n_labels):
        tr, ty = _rows(train, j)
        va, vy = _rows(val, j)
        if ty.size == 0 or ty.min() == ty.max():   # one class in train: nothing to fit
            bias[j] = _logit(ty.mean() if ty.size else 0.5)
            selected.append({"C": None, "reason": "one class in train: constant prevalence"})
            history.append([])
            continue
        cands, clf = [], logistic_estimator(class_weight=cw, max_iter=max_iter)
        for C in Cs:
            fit_at(clf, zt[tr], ty, C)
            pv = clf.predict_proba(zv[va])[:, 1] if va.size else np.zeros(0)
            n_iter = int(np.max(clf.n_iter_))
            cands.append({"C": C, "val_auc": _auc(vy, pv), "val_loss": log_loss(vy, pv), "n_iter": n_iter,
                          "converged": n_iter < max_iter, "coef": clf.coef_[0].copy(),
                          "intercept": float(clf.intercept_[0])})
        best = _select(cands)
        weight[j], bias[j] = cands[best]["coef"], cands[best]["intercept"]
        selected.append({"C": cands[best]["C"]})
        history.append([{k: v for k, v in c.items() if k not in ("coef", "intercept")} for c in cands])
    fit = ProbeFit("linear", list(labels), selected, history,
                   state={"mean": mean, "std": std, "weight": weight, "bias": bias})
    _score(fit, val_x, val, labels, tasks)
    return fit


# ----------------------------------------------------------------------------- kNN
def _unit(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    z = np.asarray(x, np.float64) - mean
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def knn_scores(train_x, train_targets, train_mask, query_x, mean, k, temperature: float = KNN_TEMPERATURE,
               chunk: int = 2048) -> np.ndarray:
    """Similarity-weighted kNN vote: (Q, C) float64 scores in [0, 1].

    Features are centred with the train mean and L2-normalised (cosine similarity). For label j the
    neighbours are the k[j] most similar train rows with mask 1 for j, weighted by exp(sim / T);
    the score is their weighted mean target. k: int or (C,) ints.
    """
    t = _unit(train_x, mean)
    n_labels = train_targets.shape[1]
    k = np.broadcast_to(np.asarray(k, dtype=np.int64), (n_labels,))
    out = np.zeros((len(query_x), n_labels))
    for s in range(0, len(query_x), chunk):
        sim = _unit(query_x[s:s + chunk], mean) @ t.T                     # (q, N)
        for j in range(n_labels):
            ok = np.flatnonzero(train_mask[:, j] > 0)
            if ok.size == 0:
                out[s:s + chunk, j] = 0.5
                continue
            kk = int(min(k[j], ok.size))
            sj = sim[:, ok]
            nn = np.argpartition(-sj, kk - 1, axis=1)[:, :kk]
            w = np.exp((np.take_along_axis(sj, nn, 1) - 1.0) / temperature)   # shift by the max cosine (1)
            out[s:s + chunk, j] = (w * train_targets[ok][nn, j]).sum(1) / np.maximum(w.sum(1), 1e-300)
    return out


def fit_knn_probe(train_x: np.ndarray, train: LabeledSet, val_x: np.ndarray, val: LabeledSet,
                  labels: Sequence[str], *, tasks: Sequence[str] | None = None, ks: Sequence[int] = DEFAULT_KS,
                  temperature: float = KNN_TEMPERATURE) -> ProbeFit:
    """Cosine kNN on the labeled train features; k per label chosen on val (grid `ks`)."""
    mean = train_x.mean(axis=0).astype(np.float32)
    n_train = len(train_x)
    grid = sorted({int(k) for k in ks if int(k) <= n_train}) or [max(1, n_train)]
    n_labels = len(labels)
    per_k = {k: knn_scores(train_x, train.targets, train.mask, val_x, mean, k, temperature) for k in grid}
    chosen, selected, history = [], [], []
    for j in range(n_labels):
        va, vy = _rows(val, j)
        cands = [{"k": k, "val_auc": _auc(vy, per_k[k][va, j]), "val_loss": log_loss(vy, per_k[k][va, j])}
                 for k in grid]
        # ties prefer the larger k (the smoother vote): search the grid from the top
        order = list(reversed(range(len(grid))))
        best = order[_select([cands[i] for i in order])]
        chosen.append(grid[best])
        selected.append({"k": grid[best]})
        history.append(cands)
    fit = ProbeFit("knn", list(labels), selected, history,
                   state={"mean": mean, "k": np.asarray(chosen, dtype=np.int64), "temperature": float(temperature),
                          "train_features": np.asarray(train_x, np.float32), "train_targets": train.targets,
                          "train_mask": train.mask})
    _score(fit, val_x, val, labels, tasks)
    return fit


def _score(fit: ProbeFit, val_x, val: LabeledSet, labels, tasks) -> None:
    from medssl.finetune.data import val_selection_score

    probs = fit.predict(val_x)
    losses = [log_loss(*(lambda r, y: (y, probs[r, j]))(*_rows(val, j))) for j in range(len(labels))]
    finite = [x for x in losses if np.isfinite(x)]
    fit.val_score, fit.score_name = val_selection_score(val, probs, labels, tasks,
                                                        float(np.mean(finite)) if finite else float("nan"))
