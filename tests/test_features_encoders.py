"""Encoders: the built-in features, and loading Phikon / H0-mini / timm weights from the
on-disk layouts a user has (HF cache snapshot, model folder, plain state_dict).

Every network here is a tiny randomly initialised variant of the real architecture; loading
it back through the registry must reproduce the original model's outputs exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from histocurate.config import FeaturesConfig
from histocurate.errors import UserInputError
from histocurate.features import WeightsError, get_encoder
from histocurate.features.base import H_OPTIMUS_MEAN, H_OPTIMUS_STD, IMAGENET_MEAN, resize_tile
from histocurate.features.builtin import DIM, FEATURE_NAMES, builtin_features
from histocurate.features.h0mini import create_h0mini_model

RNG = np.random.default_rng(7)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network, and no developer cache: the HF caches point at an empty folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty_xdg"))


def _tiles(n: int, px: int) -> list[np.ndarray]:
    return [RNG.integers(0, 256, (px, px, 3), dtype=np.uint8) for _ in range(n)]


def _reference(forward: Callable[..., Any], tiles: list[np.ndarray], size: int, mean, std):
    """The model's output computed by hand: resize, scale, normalise, forward."""
    x = torch.stack(
        [torch.from_numpy(resize_tile(t, size).transpose(2, 0, 1).copy()) for t in tiles]
    )
    x = x.float() / 255
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return forward(x)


# --- builtin -----------------------------------------------------------------------------


def test_builtin_is_finite_fixed_size_and_deterministic(shared_data: Path) -> None:
    real = np.asarray(Image.open(shared_data / "he_tcia_500x300.jpg").convert("RGB"))
    tiles = [
        np.ascontiguousarray(real[:224, :224]),
        np.full((448, 448, 3), 255, np.uint8),  # glass
        np.zeros((224, 224, 3), np.uint8),  # black
        *_tiles(1, 448),
        np.full((300, 300, 3), (120, 40, 150), np.uint8),  # odd size, flat stain
    ]
    encoder = get_encoder("builtin")
    out = encoder.embed_tiles(tiles)
    assert out.shape == (len(tiles), DIM) == (len(tiles), len(FEATURE_NAMES))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert np.array_equal(out[0], builtin_features(tiles[0]))
    assert encoder.identity()["name"] == "builtin" and "version" in encoder.identity()
    # Real tissue has nuclei, glass has none.
    count = FEATURE_NAMES.index("nuc_count_log")
    assert out[0, count] > 2 and out[1, count] == 0


def test_builtin_separates_nuclear_density() -> None:
    """More dark round blobs on pink -> higher nuclear count and fraction."""
    base = np.zeros((224, 224, 3), np.uint8)
    base[:] = (235, 170, 210)  # eosin-pink stroma

    def with_nuclei(n: int) -> np.ndarray:
        tile = base.copy()
        yy, xx = np.mgrid[:224, :224]
        for cy, cx in RNG.integers(10, 214, (n, 2)):
            tile[(yy - cy) ** 2 + (xx - cx) ** 2 < 25] = (70, 40, 130)  # haematoxylin
        return tile

    sparse, dense = builtin_features(with_nuclei(5)), builtin_features(with_nuclei(60))
    for name in ("nuc_count_log", "nuc_fraction", "h_mean"):
        i = FEATURE_NAMES.index(name)
        assert dense[i] > sparse[i], name


# --- phikon ------------------------------------------------------------------------------


def _tiny_vit(tmp_path: Path, *, hidden: int = 32) -> tuple[torch.nn.Module, Path]:
    """A tiny ViTModel saved as the HF cache holds owkin/phikon; returns (model, cache)."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=16,
    )
    model = ViTModel(config, add_pooling_layer=False).eval()
    cache = tmp_path / "hf_cache"
    repo = cache / "models--owkin--phikon"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    model.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123456789abcdef")
    return model, cache


def test_phikon_from_hf_cache_reproduces_the_model(tmp_path: Path) -> None:
    model, cache = _tiny_vit(tmp_path)
    encoder = get_encoder("phikon", config=FeaturesConfig(hf_cache=cache, device="cpu"))
    assert (encoder.name, encoder.dim, encoder.input_px) == ("phikon", 32, 32)
    tiles = _tiles(3, 64)
    expected = _reference(model, tiles, 32, IMAGENET_MEAN, (0.229, 0.224, 0.225))
    expected = expected.last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(encoder.embed_tiles(tiles), expected, rtol=1e-5, atol=1e-5)
    assert encoder.identity()["sha256"] != "none"


def test_phikon_from_environment_cache_and_from_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cache = _tiny_vit(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    tiles = _tiles(2, 32)
    by_env = get_encoder("phikon", config=FeaturesConfig(device="cpu")).embed_tiles(tiles)
    folder = next((cache / "models--owkin--phikon" / "snapshots").iterdir())
    by_folder = get_encoder("phikon", weights=folder, device="cpu").embed_tiles(tiles)
    np.testing.assert_array_equal(by_env, by_folder)


def test_phikon_missing_weights_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as err:
        get_encoder("phikon", config=FeaturesConfig(hf_cache=tmp_path / "nothing"))
    text = str(err.value)
    assert "models--owkin--phikon" in text and "phikon_weights" in text and "Looked in" in text


def test_phikon_wrong_architecture_lists_keys(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    _, cache = _tiny_vit(tmp_path)
    folder = next((cache / "models--owkin--phikon" / "snapshots").iterdir())
    state = load_file(str(folder / "model.safetensors"))
    state = {k: v for k, v in state.items() if "layer.1." not in k}
    state["decoder.weight"] = torch.zeros(3)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(WeightsError) as err:
        get_encoder("phikon", weights=folder)
    text = str(err.value)
    assert "missing keys" in text and "unexpected keys" in text and "decoder.weight" in text


# --- h0-mini -----------------------------------------------------------------------------

TINY_H0 = {"embed_dim": 64, "depth": 2, "num_heads": 1, "img_size": 28, "mlp_ratio": 3.0}


def test_h0mini_plain_state_dict_reproduces_the_model(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = create_h0mini_model(**TINY_H0).eval()
    for p in model.parameters():  # LayerScale starts at 1e-5: make the blocks matter
        p.data.normal_(0, 0.05)
    assert model.num_prefix_tokens == 5  # CLS + 4 registers
    tiles = _tiles(3, 56)
    tokens = _reference(model.forward_features, tiles, 28, H_OPTIMUS_MEAN, H_OPTIMUS_STD)
    from safetensors.torch import save_file

    pth, st = tmp_path / "h0_mini.pth", tmp_path / "h0_mini.safetensors"
    torch.save(model.state_dict(), pth)
    save_file(model.state_dict(), str(st))
    for path in (pth, st):
        encoder = get_encoder("h0-mini", weights=path, device="cpu")
        assert (encoder.dim, encoder.input_px) == (64, 28)
        np.testing.assert_allclose(encoder.embed_tiles(tiles), tokens[:, 0].numpy(), atol=1e-5)
    both = get_encoder(
        "h0-mini", config=FeaturesConfig(h0_mini_weights=pth, h0_mini_pooling="cls+mean")
    )
    expected = torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], dim=-1).numpy()
    assert both.dim == 128
    np.testing.assert_allclose(both.embed_tiles(tiles), expected, atol=1e-5)


def test_h0mini_hub_layout_reads_config_json(tmp_path: Path) -> None:
    """timm's hub layout: config.json gives the architecture (2 heads here, not inferable)."""
    args = {**TINY_H0, "num_heads": 2}
    torch.manual_seed(2)
    model = create_h0mini_model(**args).eval()
    repo = tmp_path / "cache" / "models--bioptimus--H0-mini"
    snapshot = repo / "snapshots" / "feedbeef"
    snapshot.mkdir(parents=True)
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(snapshot / "model.safetensors"))
    hub = {
        "architecture": "vit_base_patch14_reg4_dinov2",
        "model_args": {**args, "mlp_layer": "swiglu_packed", "act_layer": "silu"},
        "pretrained_cfg": {"mean": list(H_OPTIMUS_MEAN), "std": list(H_OPTIMUS_STD)},
    }
    (snapshot / "config.json").write_text(json.dumps(hub))
    encoder = get_encoder("h0-mini", config=FeaturesConfig(hf_cache=tmp_path / "cache"))
    tiles = _tiles(2, 28)
    expected = _reference(model.forward_features, tiles, 28, H_OPTIMUS_MEAN, H_OPTIMUS_STD)
    np.testing.assert_allclose(encoder.embed_tiles(tiles), expected[:, 0].numpy(), atol=1e-5)


def test_h0mini_given_another_models_weights_lists_keys(tmp_path: Path) -> None:
    import timm

    other = timm.create_model("test_vit", pretrained=False)
    path = tmp_path / "not_h0.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(WeightsError) as err:
        get_encoder("h0-mini", weights=path)
    text = str(err.value)
    assert "not a H0-mini" in text and "missing keys: blocks.0.ls1.gamma" in text
    assert "unexpected keys: head.bias" in text and "shape mismatches" in text


def test_h0mini_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="h0_mini_weights"):
        get_encoder("h0-mini", weights=tmp_path / "nowhere.safetensors")


# --- timm:<name> -------------------------------------------------------------------------


def test_timm_model_with_local_state_dict(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(3)
    full = timm.create_model("test_vit", pretrained=False, num_classes=5).eval()
    path = tmp_path / "test_vit.pth"
    torch.save({"state_dict": full.state_dict()}, path)  # head kept: ignored on load
    encoder = get_encoder("timm:test_vit", weights=path, device="cpu")
    assert encoder.name == "timm:test_vit" and encoder.dim == full.num_features
    tiles = _tiles(2, encoder.input_px)
    cfg = full.pretrained_cfg
    expected = _reference(full.forward_features, tiles, encoder.input_px, cfg["mean"], cfg["std"])
    expected = full.forward_head(expected, pre_logits=True).numpy()
    np.testing.assert_allclose(encoder.embed_tiles(tiles), expected, atol=1e-5)


def test_timm_from_hf_cache(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("test_vit", pretrained=False, num_classes=0)
    snap = tmp_path / "hub" / "models--timm--test_vit.r160_in1k" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    save_file(model.state_dict(), str(snap / "model.safetensors"))
    encoder = get_encoder("timm:test_vit", config=FeaturesConfig(hf_cache=tmp_path))
    assert encoder.identity()["weights_path"].endswith("model.safetensors")


def test_bad_encoder_names() -> None:
    with pytest.raises(UserInputError, match="unknown encoder 'resnet'"):
        get_encoder("resnet")
    with pytest.raises(UserInputError, match="timm has no model"):
        get_encoder("timm:no_such_model_xyz", weights=Path("x.pth"))


def test_random_weights_are_recorded(tmp_path: Path) -> None:
    encoder = get_encoder("timm:test_vit", random_weights=True, device="cpu")
    assert encoder.identity()["weights"] == "random"


def test_h0mini_from_a_truncated_state_dict_is_a_weights_error(tmp_path: Path) -> None:
    import torch

    from histocurate.features.h0mini import build_h0mini, create_h0mini_model
    from histocurate.features.weights import WeightsError

    model = create_h0mini_model(depth=1, embed_dim=64, num_heads=1, img_size=56, mlp_ratio=4.0)
    state = model.state_dict()
    del state["blocks.0.mlp.fc1.weight"]  # the MLP width can no longer be read
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=r"w\.pt: the tensors do not describe an H0-mini"):
        build_h0mini(weights=tmp_path / "w.pt", hf_cache=None, device="cpu", precision="fp32")


def test_weights_field_comes_from_the_registry() -> None:
    from histocurate.features import weights_field
    from histocurate.features.registry import ENCODERS

    for spec in ENCODERS:
        name = "timm:vit_tiny" if spec.name.startswith("timm:") else spec.name
        if spec.weights_setting is None:
            with pytest.raises(UserInputError, match="takes no weights"):
                weights_field(name)
        else:
            assert weights_field(name) == spec.weights_setting
            assert spec.weights_setting in FeaturesConfig.model_fields
    with pytest.raises(UserInputError, match="unknown encoder 'vgg'"):
        weights_field("vgg")
