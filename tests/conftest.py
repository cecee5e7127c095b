from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "fer2013" / "fer2013_train_publictest.csv.gz"


def real_data_path() -> Path:
    path = Path(os.environ.get("FER2013_PATH", SHARED_DATA))
    if path.is_dir():
        from fer_train.data import resolve_csv

        path = resolve_csv(path)
    if not path.exists():
        pytest.fail(f"FER2013 not found at {path}: put it at ../shared/data/fer2013/ or set FER2013_PATH")
    return path


@pytest.fixture(scope="session")
def fer_path() -> Path:
    return real_data_path()


@pytest.fixture(scope="session")
def fer_data(fer_path: Path, tmp_path_factory: pytest.TempPathFactory):
    from fer_train.data import load_fer2013

    return load_fer2013(fer_path)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


SEED_CHECKPOINT = REPO / "models" / "seed" / "best.pt"


@pytest.fixture(scope="session")
def exported_seed(fer_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped seed checkpoint exported once (fp32 + int8 + fp16) for the whole session."""
    from fer_export import export_onnx

    out = tmp_path_factory.mktemp("export") / "seed.onnx"
    report = export_onnx(SEED_CHECKPOINT, out, data=fer_path, int8=True, fp16=True)
    return {"fp32": out, "int8": out.with_name("seed.int8.onnx"), "fp16": out.with_name("seed.fp16.onnx"),
            "report": report}  # type: ignore[dict-item]
