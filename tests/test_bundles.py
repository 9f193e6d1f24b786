"""Model bundles: rebuilt from config.json + safetensors alone; anything else is refused."""
import json
import pickle

import pytest
import torch

from bridge.errors import BridgeError, ModelLoadError
from bridge.generators.base import list_bundles, load_model, save_bundle
from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig


def tiny(**kw):
    torch.manual_seed(0)
    return Pix2Pix(Pix2PixConfig(size=32, ngf=4, input="bands", **kw)).eval()


@pytest.fixture
def bundle(tmp_path):
    model = tiny()
    return model, save_bundle(model, tmp_path / "tiny", training={"epochs": 0}, card="# tiny\n")


def test_round_trip_rebuilds_from_config_alone(bundle):
    model, path = bundle
    config = json.loads((path / "config.json").read_text())
    assert config["family"] == "pix2pix"
    assert config["config"]["ngf"] == 4 and config["config"]["input"] == "bands"
    assert len(config["weights"]["sha256"]) == 64
    loaded = load_model(path)
    assert not loaded.training
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))


def test_fp16_weights_load_back_into_fp32(tmp_path):
    model = tiny()
    path = save_bundle(model, tmp_path / "half", weights_dtype=torch.float16)
    loaded = load_model(path)
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        assert (model(x) - loaded(x)).abs().max() < 1e-2


class Boom:
    def __reduce__(self):
        return (exec, ("open('/tmp/vjbridge_pwned', 'w').write('x')",))


def test_pickle_payload_is_refused_and_not_run(bundle, tmp_path):
    _, path = bundle
    marker = tmp_path / "ran"
    payload = pickle.dumps({"w": Boom()}).replace(b"/tmp/vjbridge_pwned", str(marker).encode())
    weights = path / "weights.safetensors"
    weights.write_bytes(payload)
    config = json.loads((path / "config.json").read_text())
    # Even with a matching checksum a pickle is not safetensors: refused, nothing executed.
    import hashlib
    config["weights"]["sha256"] = hashlib.sha256(payload).hexdigest()
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="not a readable safetensors"):
        load_model(path)
    assert not marker.exists()


def test_truncated_weights_fail_the_checksum(bundle):
    _, path = bundle
    weights = path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        load_model(path)


def test_sha_mismatch_is_refused(bundle):
    _, path = bundle
    weights = path / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        load_model(path)


def test_wrong_shapes_are_refused(bundle, tmp_path):
    _, path = bundle
    other = save_bundle(Pix2Pix(Pix2PixConfig(size=32, ngf=8)), tmp_path / "wide")
    (path / "weights.safetensors").write_bytes((other / "weights.safetensors").read_bytes())
    config = json.loads((path / "config.json").read_text())
    config["weights"]["sha256"] = json.loads((other / "config.json").read_text())["weights"]["sha256"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="has shape"):
        load_model(path)


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.update(family="nope"), "unknown model family 'nope'"),
    (lambda c: c["config"].update(evil=1), "unknown arguments: evil"),
    (lambda c: c["config"].update(size=100), "size must be a power of two"),
    (lambda c: c.update(bundle_version=99), "newer than this vjbridge"),
])
def test_bad_configs_are_refused_with_a_reason(bundle, mutate, message):
    _, path = bundle
    config = json.loads((path / "config.json").read_text())
    mutate(config)
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=message):
        load_model(path)


def test_config_that_is_not_json(bundle):
    _, path = bundle
    (path / "config.json").write_bytes(b"\x80\x04not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model(path)


def test_missing_model_names_the_ones_available(tmp_path, monkeypatch):
    monkeypatch.setenv("VJBRIDGE_MODELS", str(tmp_path))
    save_bundle(tiny(), tmp_path / "mine")
    with pytest.raises(ModelLoadError, match="available: .*mine"):
        load_model("no-such-model")
    # ModelLoadError is also a RuntimeError and a BridgeError
    assert issubclass(ModelLoadError, RuntimeError) and issubclass(ModelLoadError, BridgeError)


def test_user_models_directory_is_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("VJBRIDGE_MODELS", str(tmp_path))
    save_bundle(tiny(), tmp_path / "mine")
    assert any(p.name == "mine" for p in list_bundles())
    assert load_model("mine").family == "pix2pix"


def test_bundled_default_model_loads():
    model = load_model("pix2pix-pulse")
    assert model.family == "pix2pix" and model.inputs == frozenset({"audio"})
