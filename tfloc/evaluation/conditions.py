"""The propagation-condition evaluator: accuracy, per-class recall, confusion matrix."""
from __future__ import annotations

import numpy as np

from tfloc.evaluation.base import EvalContext, EvalResult, pyplot, register_evaluator


def _figure_confusion(matrix, names, title):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(names), 1.2 + 1.1 * len(names)), dpi=120)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{matrix[i, j]}\n{100 * share[i, j]:.0f} %", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


@register_evaluator("condition", outputs=("condition_probs",))
def condition(ctx: EvalContext) -> EvalResult:
    """Propagation-condition accuracy, per-class recall and the confusion matrix (PNG)."""
    if "condition_probs" not in ctx.outputs or not ctx.class_names:
        raise ValueError("evaluator 'condition' needs a model with a condition head "
                         "(output 'condition_probs')")
    true = np.asarray(ctx.to_class(ctx.y["condition"]))
    pred = np.argmax(ctx.outputs["condition_probs"], axis=-1)
    C = len(ctx.class_names)
    matrix = np.zeros((C, C), np.int64)
    np.add.at(matrix, (true, pred), 1)
    recall = {n: (float(matrix[i, i] / matrix[i].sum()) if matrix[i].sum() else None)
              for i, n in enumerate(ctx.class_names)}
    acc = float((true == pred).mean())
    report = {"condition": {"accuracy": acc, "classes": list(ctx.class_names),
                            "recall": recall, "confusion": matrix.tolist(),
                            "support": {n: int(matrix[i].sum()) for i, n in enumerate(ctx.class_names)}}}
    fig = _figure_confusion(matrix, ctx.class_names,
                            f"{ctx.model_name}: condition accuracy {100 * acc:.1f} % (n={len(true)})")
    return EvalResult(report=report, figures={"confusion.png": fig})
