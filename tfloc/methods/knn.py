"""k-nearest-neighbour fingerprinting baseline (scikit-learn)."""
from __future__ import annotations

import numpy as np
from sklearn.neighbors import KNeighborsRegressor

from tfloc.metrics import position_errors_m


def fit_knn(x_train, y_train, x_val, y_val, neighbors=(1, 2, 3, 5, 10)):
    """Fits kNN on flattened features, choosing k and the weighting on validation.

    Returns (fitted regressor, {"k": .., "weights": .., "val_mean_m": ..}).
    """
    xt = np.asarray(x_train).reshape(len(x_train), -1)
    xv = np.asarray(x_val).reshape(len(x_val), -1)
    best = None
    for k in neighbors:
        if k > len(xt):
            continue
        for weights in ("uniform", "distance"):
            reg = KNeighborsRegressor(n_neighbors=k, weights=weights).fit(xt, y_train)
            err = float(position_errors_m(reg.predict(xv), y_val).mean())
            if best is None or err < best[0]:
                best = (err, reg, {"k": int(k), "weights": weights, "val_mean_m": err})
    if best is None:
        raise ValueError("kNN: no candidate k is <= the number of training samples")
    return best[1], best[2]


def predict_knn(reg, x):
    return reg.predict(np.asarray(x).reshape(len(x), -1))
