from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Fuzz tests (tests/test_fuzz_*.py): a bounded, repeatable run in CI; HYPOTHESIS_PROFILE=long for the
# long runs reported in RELIABILITY.md. No deadline: a test never asserts a duration.
_RELAXED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True, suppress_health_check=_RELAXED,
                          print_blob=True)
settings.register_profile("long", max_examples=5000, deadline=None, suppress_health_check=_RELAXED, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _hang_guard(request: pytest.FixtureRequest):
    """A fuzz test stuck in native code (a decoder that never returns) ends the run with every thread's
    traceback instead of hanging CI; the bound is far above any test's run time, never a timing check."""
    if request.node.get_closest_marker("fuzz") is None:
        yield
        return
    import faulthandler

    faulthandler.dump_traceback_later(1800 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 600, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()

@pytest.fixture(autouse=True, scope="session")
def _precision_cache(tmp_path_factory: pytest.TempPathFactory):
    """The tests' own precision-choice cache (fer_runtime.precision), shared with the commands they
    start (they inherit the variable): never the user's, and one answer per key for the whole run."""
    os.environ["FER_PRECISION_CACHE"] = str(tmp_path_factory.mktemp("precision") / "precision.json")
    yield


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


DATA_FIXTURES = {"fer_path", "fer_data", "exported_seed"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that use FER2013 are marked ``data`` by their fixtures, so the fast tier
    (``-m "not slow and not data"``) never needs the data, with or without the marker written out."""
    for item in items:
        if DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)
