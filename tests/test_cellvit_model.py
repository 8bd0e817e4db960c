"""CellViT model and checkpoints: the HistoPLUS key/shape layout, strict loading, outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from histocurate.cellvit import checkpoint as ckpt
from histocurate.cellvit.model import (
    TINY_ARCH,
    CellViTConfig,
    build_model,
    count_parameters,
    freeze_encoder,
    parameter_groups,
    unfreeze_encoder,
)
from histocurate.errors import UserInputError

TINY = CellViTConfig(n_types=3, tile_size=112, arch=TINY_ARCH, decoder_divisor=16)


def reference_table(
    *,
    dim: int = 768,
    depth: int = 12,
    reg: int = 4,
    grid: int = 32,
    patch: int = 14,
    hidden: int = 2048,
    n_out: int = 15,
    w: tuple[int, ...] = (512, 512, 256, 256, 128, 64, 32, 64),
) -> dict[str, tuple[int, ...]]:
    """The released HistoPLUS state dict (on-disk keys -> shapes), written from the field
    note's table, independently of the model code."""
    bott, s1, s2, st3, st2, st1, n0a, n0b = w
    t: dict[str, tuple[int, ...]] = {}
    e = "backbone.feature_extractor."
    t[e + "cls_token"] = (1, 1, dim)
    t[e + "reg_token"] = (1, reg, dim)
    t[e + "pos_embed"] = (1, grid * grid, dim)
    t[e + "patch_embed.proj.weight"] = (dim, 3, patch, patch)
    t[e + "patch_embed.proj.bias"] = (dim,)
    for i in range(depth):
        b = f"{e}blocks.{i}."
        for name, shape in {
            "norm1.weight": (dim,), "norm1.bias": (dim,),
            "attn.qkv.weight": (3 * dim, dim), "attn.qkv.bias": (3 * dim,),
            "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,),
            "ls1.gamma": (dim,), "norm2.weight": (dim,), "norm2.bias": (dim,),
            "mlp.w12.weight": (2 * hidden, dim), "mlp.w12.bias": (2 * hidden,),
            "mlp.w3.weight": (dim, hidden), "mlp.w3.bias": (dim,), "ls2.gamma": (dim,),
        }.items():  # fmt: skip
            t[b + name] = shape

    def conv(p: str, cin: int, cout: int, k: int = 3) -> None:
        t[p + "weight"], t[p + "bias"] = (cout, cin, k, k), (cout,)

    def convt(p: str, cin: int, cout: int) -> None:
        t[p + "weight"], t[p + "bias"] = (cin, cout, 2, 2), (cout,)

    def bn(p: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            t[p + name] = (c,)
        t[p + "num_batches_tracked"] = ()

    def cb(p: str, cin: int, cout: int) -> None:
        conv(p + "block.0.", cin, cout)
        bn(p + "block.1.", cout)

    def db(p: str, cin: int, cout: int) -> None:
        convt(p + "block.0.", cin, cout)
        conv(p + "block.1.", cout, cout)
        bn(p + "block.2.", cout)

    cb("neck.necks.0.0.", 3, n0a)
    cb("neck.necks.0.1.", n0a, n0b)
    for j, (cin, cout) in enumerate([(dim, s1), (s1, s2), (s2, st2)]):
        db(f"neck.necks.1.{j}.", cin, cout)
    db("neck.necks.2.0.", dim, s1)
    db("neck.necks.2.1.", s1, st3)
    db("neck.necks.3.0.", dim, bott)
    for x, c in (("np_branch", 2), ("hv_branch", 2), ("tp_branch", n_out)):
        convt(f"{x}.bottleneck_upsampler.", dim, bott)
        cb(f"{x}.decoder3_upsampler.0.", 2 * bott, bott)
        cb(f"{x}.decoder3_upsampler.1.", bott, bott)
        cb(f"{x}.decoder3_upsampler.2.", bott, bott)
        convt(f"{x}.decoder3_upsampler.3.", bott, st3)
        cb(f"{x}.decoder2_upsampler.0.", 2 * st3, st3)
        cb(f"{x}.decoder2_upsampler.1.", st3, st3)
        convt(f"{x}.decoder2_upsampler.2.", st3, st2)
        cb(f"{x}.decoder1_upsampler.0.", 2 * st2, st2)
        cb(f"{x}.decoder1_upsampler.1.", st2, st2)
        convt(f"{x}.decoder1_upsampler.2.", st2, st1)
        cb(f"{x}.decoder0_header.0.", n0b + st1, st1)
        cb(f"{x}.decoder0_header.1.", st1, st1)
        conv(f"{x}.decoder0_header.2.", st1, c, 1)
    return t


TINY_TABLE = {"dim": 64, "depth": 4, "grid": 8, "hidden": 176, "n_out": 4,
              "w": (19, 16, 8, 16, 8, 4, 2, 4)}  # fmt: skip


def random_state(table: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        k: torch.tensor(7, dtype=torch.int64) if not s else torch.randn(s, generator=gen)
        for k, s in table.items()
    }


def test_full_size_model_has_the_histoplus_keys_and_shapes() -> None:
    with torch.device("meta"):
        model = build_model(CellViTConfig(n_types=14, tile_size=448))
    ours = {k: tuple(v.shape) for k, v in ckpt.to_disk_keys(model.state_dict()).items()}
    assert ours == reference_table()
    assert len(ours) == 460
    assert count_parameters(model) == 142_747_155
    assert model.backbone.out_indices == (3, 5, 7, 11)


def test_bare_histoplus_state_dict_loads_strictly(tmp_path: Path) -> None:
    state = random_state(reference_table(**TINY_TABLE))  # type: ignore[arg-type]
    state["backbone.feature_extractor.norm.weight"] = torch.ones(64)  # on disk, dropped
    path = tmp_path / "histoplus.pt"
    torch.save(state, path)
    model, info = ckpt.load_checkpoint(path)
    assert info.source == "histoplus" and info.tile_size == 112 and info.mpp is None
    assert info.classes == ("type_1", "type_2", "type_3")
    loaded = ckpt.to_disk_keys(model.state_dict())
    key = "backbone.feature_extractor.blocks.3.mlp.w12.weight"
    assert torch.equal(loaded[key], state[key])
    assert int(loaded["tp_branch.decoder0_header.1.block.1.num_batches_tracked"]) == 7
    out = model(torch.zeros(1, 3, 112, 112))
    assert tuple(out["tp"].shape) == (1, 4, 112, 112)


def test_corrupted_state_dict_names_the_keys(tmp_path: Path) -> None:
    state = random_state(reference_table(**TINY_TABLE))  # type: ignore[arg-type]
    del state["hv_branch.decoder2_upsampler.1.block.0.bias"]
    state["np_branch.extra.weight"] = torch.zeros(3)
    state["neck.necks.3.0.block.1.weight"] = torch.zeros(19, 19, 1, 1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_checkpoint(path)
    text = str(err.value)
    assert "missing keys: hv_branch.decoder2_upsampler.1.block.0.bias" in text
    assert "unexpected keys: np_branch.extra.weight" in text
    assert "neck.necks.3.0.block.1.weight (19, 19, 1, 1) in the file vs (19, 19, 3, 3)" in text
    assert isinstance(err.value, UserInputError)


def test_not_a_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    path.write_text("hello\nworld\n")
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_checkpoint(path)
    text = str(err.value)  # one short line, not torch's advice about weights_only
    assert text.startswith(f"{path}: not a PyTorch checkpoint file (it is text, starting 'hello')")
    assert "runs/<name>/best.pt" in text and "weights_only" not in text and "\n" not in text
    assert isinstance(err.value, UserInputError)
    path.write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError, match=r"not a PyTorch checkpoint file \(it is empty"):
        ckpt.load_checkpoint(path)
    path.write_bytes(bytes(range(1, 40)))
    with pytest.raises(ckpt.CheckpointError, match=r"file \(it starts with the bytes b'\\x01"):
        ckpt.load_checkpoint(path)
    # torch.save's formats, but truncated or holding more than tensors: torch's reason, short
    torch.save({"a": torch.zeros(4)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_checkpoint(path)
    text = str(err.value)
    assert "not a readable PyTorch checkpoint (RuntimeError: PytorchStreamReader" in text
    assert "truncated or corrupt" in text and "\n" not in text
    torch.save({"when": Path("x")}, path)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_checkpoint(path)
    text = str(err.value)
    assert "(UnpicklingError: Unsupported global: GLOBAL pathlib" in text and "\n" not in text
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(ckpt.CheckpointError, match=r"no backbone\.feature_extractor\.model\.cls"):
        ckpt.load_checkpoint(path)


def test_our_checkpoint_round_trip_and_histoplus_export(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        want = model(x)
    classes = ("cancer_cell", "lymphocyte", "fibroblast")
    path = ckpt.save_checkpoint(tmp_path / "m.pt", model, classes=classes, mpp=0.5,
                                train_config={"lr": 1e-5})  # fmt: skip
    loaded, info = ckpt.load_checkpoint(path)
    assert info.classes == classes and info.mpp == 0.5 and info.tile_size == 112
    assert info.train_config == {"lr": 1e-5} and info.config == TINY
    assert len(info.colours) == 3
    raw = torch.load(path, weights_only=True)
    assert "backbone.feature_extractor.blocks.0.mlp.w3.weight" in raw["state_dict"]
    with torch.no_grad():
        got = loaded(x)
    for key in ("np", "hv", "tp"):
        torch.testing.assert_close(got[key], want[key])
    bare = ckpt.export_histoplus(model, tmp_path / "bare.pt")
    again, info2 = ckpt.load_checkpoint(bare)
    assert info2.source == "histoplus" and info2.tile_size == 112
    with torch.no_grad():  # bare files do not record heads: 64 // 64 = 1 instead of 2
        assert again(x)["np"].shape == want["np"].shape


def test_any_multiple_of_the_patch_runs_and_channels_last_agrees() -> None:
    torch.manual_seed(1)
    model = build_model(TINY).eval()
    x = torch.randn(1, 3, 140, 140)
    with torch.no_grad():
        plain = model(x)
        assert tuple(plain["hv"].shape) == (1, 2, 140, 140)
        model.to(memory_format=torch.channels_last)
        fast = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(fast["tp"], plain["tp"], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="multiple of 14"):
        model(torch.zeros(1, 3, 120, 120))


def test_freeze_and_parameter_groups() -> None:
    model = build_model(TINY)
    freeze_encoder(model)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.np_branch.parameters())
    unfreeze_encoder(model)
    assert all(p.requires_grad for p in model.backbone.parameters())
    groups = parameter_groups(model, lr=1e-3, encoder_lr=1e-4, weight_decay=0.1,
                              decay_norms_and_biases=False)  # fmt: skip
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    by_name = {g["name"]: g for g in groups}
    assert by_name["encoder"]["lr"] == 1e-4 and by_name["decoder"]["lr"] == 1e-3
    assert by_name["decoder_no_decay"]["weight_decay"] == 0.0
    pos = model.backbone.vit.pos_embed
    assert any(p is pos for p in by_name["encoder_no_decay"]["params"])


def test_bad_configs_are_user_errors() -> None:
    with pytest.raises(UserInputError, match="unknown CellViT encoder"):
        build_model(CellViTConfig(encoder="resnet50", tile_size=112))
    with pytest.raises(UserInputError, match="not a multiple of the patch 14"):
        build_model(CellViTConfig(tile_size=100, arch=TINY_ARCH))
    with pytest.raises(UserInputError, match="out_indices"):
        build_model(CellViTConfig(tile_size=112, arch=TINY_ARCH, out_indices=(0, 2, 1, 3)))
    with pytest.raises(UserInputError, match="unknown fields extra"):
        CellViTConfig.from_dict({"extra": 1})
