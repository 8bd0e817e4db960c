"""CellViT encoders: weights through the features loaders, converted, same activations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from histocurate.cellvit.encoder import EncoderSpec, build_encoder, resample_grid
from histocurate.cellvit.model import TINY_ARCH, CellViTConfig, build_model
from histocurate.features.h0mini import create_h0mini_model
from histocurate.features.weights import WeightsError


def test_h0mini_weights_from_a_file_give_the_same_block_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = create_h0mini_model(
        img_size=112, embed_dim=64, depth=4, num_heads=2, mlp_ratio=5.5
    ).eval()
    file = tmp_path / "h0.pth"
    torch.save(ref.state_dict(), file)
    config = CellViTConfig(n_types=2, tile_size=112, arch={"num_heads": 2}, decoder_divisor=16)
    model = build_model(config, pretrained=True, weights=file).eval()
    assert model.config is not None and model.config.arch["swiglu_hidden"] == 176
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        want = ref.forward_intermediates(x, indices=[0, 1, 2, 3], intermediates_only=True)
        got = model.backbone(x)
    for a, b in zip(got.skips, want, strict=True):
        torch.testing.assert_close(a, b)
    assert got.final is got.skips[3]


def test_h0mini_positional_embedding_resampled_for_larger_tiles(tmp_path: Path) -> None:
    ref = create_h0mini_model(img_size=112, embed_dim=64, depth=4, num_heads=2, mlp_ratio=5.5)
    file = tmp_path / "h0.pth"
    torch.save(ref.state_dict(), file)
    config = CellViTConfig(n_types=2, tile_size=224, arch={"num_heads": 2}, decoder_divisor=16)
    model = build_model(config, pretrained=True, weights=file)
    pos = model.backbone.vit.pos_embed.detach()
    assert tuple(pos.shape) == (1, 256, 64)
    torch.testing.assert_close(pos, resample_grid(ref.pos_embed.detach(), 16))


def test_resample_grid_keeps_a_constant_and_the_class_slot() -> None:
    pos = torch.cat([torch.full((1, 1, 3), 9.0), torch.full((1, 16, 3), 2.0)], dim=1)
    out = resample_grid(pos, 6, prefix=1)
    assert tuple(out.shape) == (1, 37, 3)
    assert torch.all(out[:, 0] == 9.0)
    torch.testing.assert_close(out[:, 1:], torch.full((1, 36, 3), 2.0))


def test_phikon_folder_converted_to_timm_matches_transformers(tmp_path: Path) -> None:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    conf = ViTConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
                     intermediate_size=128, image_size=112, patch_size=16)  # fmt: skip
    hf = ViTModel(conf, add_pooling_layer=False).eval()
    hf.save_pretrained(tmp_path / "phikon")
    config = CellViTConfig(encoder="phikon", n_types=2, tile_size=112, decoder_divisor=16)
    model = build_model(config, pretrained=True, weights=tmp_path / "phikon").eval()
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        hidden = hf(pixel_values=x, output_hidden_states=True).hidden_states
        got = model.backbone(x)
    assert model.backbone.out_indices == (0, 1, 2, 3)
    for i, feat in enumerate(got.skips):
        want = hidden[i + 1][:, 1:].reshape(1, 7, 7, 64).permute(0, 3, 1, 2)
        torch.testing.assert_close(feat, want, atol=1e-5, rtol=1e-5)
    assert tuple(model(x)["np"].shape) == (1, 2, 112, 112)


def test_timm_vit_weights_load(tmp_path: Path) -> None:
    from histocurate.features.timm_encoder import create_timm_model

    arch = {"depth": 4, "embed_dim": 64, "num_heads": 2}
    ref = create_timm_model("vit_tiny_patch16_224", **arch).eval()
    file = tmp_path / "vit.pth"
    torch.save(ref.state_dict(), file)
    config = CellViTConfig(encoder="timm:vit_tiny_patch16_224", n_types=1, tile_size=224,
                           arch=arch, decoder_divisor=16)  # fmt: skip
    model = build_model(config, pretrained=True, weights=file).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        want = ref.forward_intermediates(x, indices=[3], intermediates_only=True)[0]
        torch.testing.assert_close(model.backbone(x).skips[3], want)


def test_wrong_or_missing_weights_are_named(tmp_path: Path) -> None:
    partial = {"cls_token": torch.zeros(1, 1, 64), "blocks.0.mlp.fc1.weight": torch.zeros(352, 64)}
    torch.save(partial, tmp_path / "w.pth")
    config = CellViTConfig(n_types=2, tile_size=112, arch=TINY_ARCH, decoder_divisor=16)
    with pytest.raises(WeightsError, match="missing keys"):
        build_model(config, pretrained=True, weights=tmp_path / "w.pth")
    with pytest.raises(WeightsError, match="nothing is downloaded"):
        build_model(config, pretrained=True, weights=tmp_path / "nowhere")


def test_default_skips_for_large_vits() -> None:
    spec = EncoderSpec(name="timm:vit_large_patch16_224")
    with torch.device("meta"):
        assert build_encoder(spec, tile_size=224).out_indices == (5, 11, 17, 23)


def test_a_timm_model_that_is_not_a_vit_is_named() -> None:
    from histocurate.errors import UserInputError

    with pytest.raises(UserInputError, match=r"timm:resnet18.*not a ViT"):
        build_encoder(EncoderSpec(name="timm:resnet18"), tile_size=224)
    with pytest.raises(UserInputError, match="timm has no model"):
        build_encoder(EncoderSpec(name="timm:no_such_model"), tile_size=224)
