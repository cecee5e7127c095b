"""Models shipped inside the package, each pinned by sha256 and verified when loaded."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fer_runtime.errors import ModelError, ModelIntegrityError


@dataclass(frozen=True)
class BundledModel:
    name: str
    filename: str
    sha256: str
    description: str


# name -> model; EmotionRecognizer(model=NAME) picks one, no argument picks DEFAULT_MODEL.
BUNDLED_MODELS: dict[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel(
            name="seed",
            filename="seed.onnx",
            sha256="0318ce5aa5216b82cb2d437bf279fda198ecef67315f9ae3422433206170df1e",
            description="the write-up's 16-layer CNN (685k parameters, 54 MFLOP), fp32; PublicTest 60.2%",
        ),
        BundledModel(
            name="seed-int8",
            filename="seed-int8.onnx",
            sha256="4595c7460740456e31ac38a1d106409ef9237afc42b5c7204b00681d059e6846",
            description="seed, static int8 QDQ (first conv and last linear in float)",
        ),
        BundledModel(
            name="seed-fp16",
            filename="seed-fp16.onnx",
            sha256="a54633fcbbc28758a469a4eb3e494961225b2d9739c96591b992a3b8127f1356",
            description="seed, fp16 weights and activations with float32 IO (for GPUs)",
        ),
        BundledModel(
            name="vgg-small",
            filename="vgg-small.onnx",
            sha256="2aa54cd9ca3e3060cf0efa440dd77ac54710319fe089ad188df67a0eda9b1439",
            description="compact VGG-style CNN (292k parameters, 48 MFLOP) distilled from the first vgg, fp32; PublicTest 65.6%",
        ),
        BundledModel(
            name="vgg-small-int8",
            filename="vgg-small-int8.onnx",
            sha256="97fa31a14682a4b15e473a21c4c51c3628124e271d7d5e7f27849b1c4777dcfc",
            description="vgg-small, static int8 QDQ (first conv and last linear in float)",
        ),
        BundledModel(
            name="vgg-small-fp16",
            filename="vgg-small-fp16.onnx",
            sha256="1ef6fd3450dd746946b3fcbc0cce0f65703d4475d91abf955c9445c67268b392",
            description="vgg-small, fp16 with float32 IO (for GPUs)",
        ),
        BundledModel(
            name="vgg-medium",
            filename="vgg-medium.onnx",
            sha256="a28715bedbb78b62bd4d7f64b5036dd7076e89a4b0c324b92f82b24b573ce32b",
            description="VGG-style CNN at 5/8 of vgg's width (456k parameters, 75 MFLOP) distilled from the previous vgg, then weight-averaged (SWA), fp32; PublicTest 67.3% (the fast variant before vgg-taper)",
        ),
        BundledModel(
            name="vgg-medium-int8",
            filename="vgg-medium-int8.onnx",
            sha256="0c207f0ea95b9944dfdd3db1e865da3169c7c5e71af3d6e63657ffb206b74fcb",
            description="vgg-medium, static int8 QDQ (first conv and last linear in float)",
        ),
        BundledModel(
            name="vgg-medium-fp16",
            filename="vgg-medium-fp16.onnx",
            sha256="18b7dda6931d06fb3ea400ecba133113ba52626e76ad6dc51b7db9218ca899cd",
            description="vgg-medium, fp16 with float32 IO (for GPUs)",
        ),
        BundledModel(
            name="vgg-taper",
            filename="vgg-taper.onnx",
            sha256="7e6a6dc5c2d40532d957a54fec7827df0f0558fc6d9ec24ed6d7a730ec8cf92f",
            description="the fast variant: VGG-style CNN tapering from 12 to 192 channels, three convs at 6x6 (956k parameters, 107 MFLOP; int8 as fast as vgg-medium's), distilled from vgg-deep and the previous vgg with weight averaging (SWA), refitted on all Training faces, fp32; PublicTest 68.3%",
        ),
        BundledModel(
            name="vgg-taper-int8",
            filename="vgg-taper-int8.onnx",
            sha256="0b416e09aa299cb475819e4a137b2a67b92256e7d88a8672cadd80604719c8ab",
            description="vgg-taper, static int8 QDQ (first conv and last linear in float)",
        ),
        BundledModel(
            name="vgg-taper-fp16",
            filename="vgg-taper-fp16.onnx",
            sha256="4d6e4fa953c8927a297bd364fd648904ef4a7c97cced845fb60b4cba32012011",
            description="vgg-taper, fp16 with float32 IO (for GPUs)",
        ),
        BundledModel(
            name="vgg",
            filename="vgg.onnx",
            sha256="e645e96c33474a69141ed9508dd59d443bf1781048f8bef1742d38bf01882cc6",
            description="VGG-style CNN (1.17M parameters, 192 MFLOP) distilled from an ensemble of three earlier vggs, then weight-averaged (SWA), fp32; PublicTest 69.3%",
        ),
        BundledModel(
            name="vgg-int8",
            filename="vgg-int8.onnx",
            sha256="71dd3df7f861902e4a9b2f10ea5fe74b2970ffb45be1d1bbe8ff2a26ffbeaa1f",
            description="vgg, static int8 QDQ (first conv and last linear in float)",
        ),
        BundledModel(
            name="vgg-fp16",
            filename="vgg-fp16.onnx",
            sha256="c4bf3855cb9f32f57a167310328bdde94343b651eed71933f4867ba333527225",
            description="vgg, fp16 with float32 IO (for GPUs)",
        ),
        BundledModel(
            name="vgg-deep",
            filename="vgg-deep.onnx",
            sha256="9d8a17c8cd16a921398b1dbe69fdfc0c123750bc3e32403d5cd5f2c3c7cdb119",
            description="VGG-style CNN, three convs in the last stage (1.76M parameters, 235 MFLOP), distilled from two vggs, then weight-averaged (SWA) on all Training faces (the final fit), fp32; PublicTest 70.1%",
        ),
        BundledModel(
            name="vgg-deep-int8",
            filename="vgg-deep-int8.onnx",
            sha256="603869dfc82c35ed29d60feaadda9c47912e8435fd1b7797bc444a44ac324eb8",
            description="vgg-deep, static int8 QDQ (first conv and last linear in float)",
        ),
        BundledModel(
            name="vgg-deep-fp16",
            filename="vgg-deep-fp16.onnx",
            sha256="a8fd6de763d91c141dee7800a36d3b94538d4ed59eb13fd9839bc8acd2d2318a",
            description="vgg-deep, fp16 with float32 IO (for GPUs)",
        ),
    )
}
DEFAULT_MODEL = "vgg-deep"  # the best recipe on validation within the edge budget, refitted on all Training faces (MODEL_CARD.md)


# Third-party face detectors (origin and license: fer_runtime/models/THIRD_PARTY_NOTICES.md).
BUNDLED_DETECTORS: dict[str, BundledModel] = {
    "yunet": BundledModel(
        name="yunet",
        filename="yunet_s_dynamic.onnx",
        sha256="daede24002cc8590f457998cc5e6c9e8b82f45f6bd969506a8913cd4ed10a2d3",
        description="YuNet face detector (libfacedetection.train, Apache-2.0), dynamic input size, five landmarks",
    ),
}
DEFAULT_DETECTOR = "yunet"


def read_bundled(name: str = DEFAULT_MODEL) -> bytes:
    """The bytes of a bundled classifier, after checking them against the recorded sha256."""
    return _verified(name, BUNDLED_MODELS, "model")


def read_bundled_detector(name: str = DEFAULT_DETECTOR) -> bytes:
    """The bytes of a bundled face detector, sha256-checked like the classifiers."""
    return _verified(name, BUNDLED_DETECTORS, "detector")


def _verified(name: str, registry: dict[str, BundledModel], kind: str) -> bytes:
    try:
        entry = registry[name]
    except KeyError:
        raise ModelError(f"no bundled {kind} {name!r}; bundled: {', '.join(sorted(registry))}") from None
    ref = resources.files("fer_runtime") / "models" / entry.filename
    try:
        data = ref.read_bytes()
    except OSError as exc:
        raise ModelError(f"bundled {kind} {name!r} is missing from the installation ({exc}); reinstall fer-edge") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise ModelIntegrityError(
            f"bundled {kind} {name!r} is corrupted: sha256 {digest[:16]}... != recorded {entry.sha256[:16]}...; "
            "reinstall fer-edge"
        )
    return data
