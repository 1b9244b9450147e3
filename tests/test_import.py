import subprocess
import sys

import pytest


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_import_is_lean_and_fast():
    out = _run(
        "import sys, time; t = time.perf_counter(); import fastunlearn as fu; "
        "dt = time.perf_counter() - t; "
        "print(dt, 'torch' in sys.modules, 'timm' in sys.modules, len(fu.__all__))"
    )
    dt, has_torch, has_timm, n = out.split()
    assert float(dt) < 0.5, f"import fastunlearn took {dt} s"
    assert has_torch == "False" and has_timm == "False"
    assert int(n) > 10


def test_using_the_package_never_initialises_cuda():
    out = _run(
        "import torch, fastunlearn as fu; "
        "d = fu.load_dataset('synthetic'); m = fu.create_model('small_cnn', d); "
        "fu.train(m, d.train, fu.TrainConfig(epochs=1, device='cpu', progress=False)); "
        "fu.list_methods(); print(torch.cuda.is_initialized())"
    )
    assert out.splitlines()[-1] == "False"


def test_public_functions_are_not_shadowed_by_submodules():
    import fastunlearn as fu
    import fastunlearn.evaluate.core  # noqa: F401  (loading submodules must not shadow)
    import fastunlearn.train  # noqa: F401
    import fastunlearn.unlearn._registry  # noqa: F401

    assert callable(fu.train) and callable(fu.evaluate) and callable(fu.unlearn)
    with pytest.raises(AttributeError):
        fu.does_not_exist  # noqa: B018


def test_version_matches_the_package_metadata():
    from importlib.metadata import version

    import fastunlearn

    assert version("fastunlearn") == fastunlearn.__version__
