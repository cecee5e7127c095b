"""Classification metrics in NumPy: accuracy, macro-F1, per-class precision/recall, confusion matrix."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from fer_runtime import LABELS


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = len(LABELS)) -> np.ndarray:
    """Rows are true classes, columns predictions."""
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)


@dataclass
class ClassReport:
    accuracy: float
    macro_f1: float
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion: list[list[int]]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def table(self, labels: tuple[str, ...] = LABELS) -> str:
        rows = [f"{'class':10s} {'precision':>9s} {'recall':>7s} {'f1':>6s} {'support':>8s}"]
        for i, name in enumerate(labels):
            rows.append(
                f"{name:10s} {self.precision[i]:9.3f} {self.recall[i]:7.3f} {self.f1[i]:6.3f} {self.support[i]:8d}"
            )
        rows.append(f"accuracy {self.accuracy:.4f}   macro-F1 {self.macro_f1:.4f}   n={sum(self.support)}")
        return "\n".join(rows)


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = len(LABELS)) -> ClassReport:
    cm = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), num_classes)
    tp = np.diag(cm).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(tp / cm.sum(0))
        recall = np.nan_to_num(tp / cm.sum(1))
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    total = cm.sum()
    return ClassReport(
        accuracy=float(tp.sum() / total) if total else 0.0,
        macro_f1=float(f1.mean()),
        precision=precision.tolist(),
        recall=recall.tolist(),
        f1=f1.tolist(),
        support=cm.sum(1).astype(int).tolist(),
        confusion=cm.astype(int).tolist(),
    )
