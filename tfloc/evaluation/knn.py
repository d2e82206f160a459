"""k-nearest-neighbour fingerprinting baseline (scikit-learn)."""
from __future__ import annotations

import numpy as np
from sklearn.neighbors import KNeighborsRegressor

from tfloc.metrics import position_errors_m


class SectorKNN:
    """kNN regression on flattened features, one neighbour search per sector.

    Features of any shape are flattened per sample (several links: all BSs'
    features side by side); positions may have any number of axes. With
    ``sector=None`` it is plain kNN over all samples. Searching only the
    fingerprints of the same sector gives kNN the information the network gets.
    """

    def __init__(self, n_neighbors: int, weights: str):
        self.n_neighbors, self.weights = n_neighbors, weights

    def fit(self, x, y, sector=None):
        x = np.asarray(x).reshape(len(x), -1)
        sector = np.zeros(len(x), int) if sector is None else np.asarray(sector)
        self.dims_ = int(np.asarray(y).shape[-1])
        self.models_ = {}
        for s in np.unique(sector):
            m = sector == s
            k = min(self.n_neighbors, int(m.sum()))
            self.models_[s] = KNeighborsRegressor(n_neighbors=k, weights=self.weights).fit(x[m], y[m])
        return self

    def predict(self, x, sector=None):
        x = np.asarray(x).reshape(len(x), -1)
        sector = np.zeros(len(x), int) if sector is None else np.asarray(sector)
        out = np.zeros((len(x), self.dims_))
        for s in np.unique(sector):
            if s not in self.models_:
                raise ValueError(f"kNN: sector {s} has no training fingerprints")
            m = sector == s
            out[m] = self.models_[s].predict(x[m])
        return out


def fit_knn(train, val, neighbors=(1, 2, 3, 5, 10)):
    """Fits kNN, choosing k and the weighting by mean error on validation.

    ``train``/``val`` are (features, positions, sector-or-None) triples.
    Returns (fitted SectorKNN, {"k": .., "weights": .., "val_mean_m": ..}).
    """
    (xt, yt, st), (xv, yv, sv) = train, val
    best = None
    for k in neighbors:
        if k > len(xt):
            continue
        for weights in ("uniform", "distance"):
            reg = SectorKNN(k, weights).fit(xt, yt, st)
            err = float(position_errors_m(reg.predict(xv, sv), yv).mean())
            if best is None or err < best[0]:
                best = (err, reg, {"k": int(k), "weights": weights, "val_mean_m": err,
                                   "per_sector": st is not None})
    if best is None:
        raise ValueError("kNN: no candidate k is <= the number of training samples")
    return best[1], best[2]
