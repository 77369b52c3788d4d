"""The inference service refuses the same unsafe archives as validation does,
before loading them: a pointer changed outside the dashboard cannot make it
unpickle a file or run a file operator."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from inference.errors import StartupFailure
from inference.loader import load_module
from tests.inference.models import Affine

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_a_pt2_that_asks_for_pickle_is_refused_before_loading(tmp_path: Path) -> None:
    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(Affine().eval(), (torch.zeros(1, 4),)), str(good))
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pt2"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(hostile, "w") as target:
        config_name = next(n for n in source.namelist() if n.endswith("_weights_config.json"))
        config = json.loads(source.read(config_name))
        entry = next(iter(config["config"].values()))
        entry["use_pickle"] = True
        for info in source.infolist():
            data = source.read(info)
            if info.filename == config_name:
                data = json.dumps(config).encode()
            elif info.filename.endswith("/data/weights/" + entry["path_name"]):
                data = pickle.dumps(_Payload(marker), protocol=2)
            target.writestr(info, data)

    assert load_module(good, "torch.export") is not None
    with pytest.raises(StartupFailure) as refused:
        load_module(hostile, "torch.export")

    assert refused.value.cause == "unsafe_artifact"
    assert "asks for pickle" in refused.value.message
    assert not marker.exists()  # nothing was unpickled


def test_a_torchscript_file_operator_is_refused_before_running(tmp_path: Path) -> None:
    source = tmp_path / "reader.py"
    source.write_text(
        "import torch\n\n"
        "class Reader(torch.nn.Module):\n"
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
        "        t = torch.from_file('/etc/hostname', shared=False, size=1, dtype=torch.uint8)\n"
        "        return x + t.sum()\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(source.read_text(), str(source), "exec"), namespace)
    path = tmp_path / "reader.pt"
    torch.jit.save(torch.jit.script(namespace["Reader"]()), str(path))

    with pytest.raises(StartupFailure) as refused:
        load_module(path, "torchscript")

    assert refused.value.cause == "unsafe_artifact"
    assert refused.value.message == (
        "the torchscript artifact is refused: the model touched the file system: "
        "it calls aten::from_file"
    )


def test_quantized_models_with_packed_weights_still_load(tmp_path: Path) -> None:
    # Their packed weights are torchbind objects (torch.classes.quantized.*),
    # which the policy allows; other bound classes (dist_c10d stores) it refuses.
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    path = tmp_path / "quantized.pt"
    torch.jit.save(torch.jit.script(quantized), str(path))

    module = load_module(path, "torchscript")

    assert tuple(module(torch.zeros(1, 4)).shape) == (1, 3)


def test_a_pt2_declared_as_torchscript_says_what_it_is(tmp_path: Path) -> None:
    # Found by QA: the loader's own "PytorchStreamReader failed locating file
    # constants.pkl" reached the user; the reverse mistake was already clear.
    from inference.artifact_safety import NotAnArchive, check_torchscript

    exported = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(Affine().eval(), (torch.zeros(1, 4),)), str(exported))
    with pytest.raises(NotAnArchive, match=r"it is a torch\.export archive \(\.pt2\)"):
        check_torchscript(str(exported))
    scripted = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(Affine().eval()), str(scripted))
    check_torchscript(str(scripted))  # a real TorchScript archive passes
