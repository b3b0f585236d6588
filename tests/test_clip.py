"""CLIP towers: OpenAI-format loading (TorchScript archive and plain state dict, fp16) against OpenAI's
reference implementation, tokenizer agreement, presets, and bad checkpoint files."""

from __future__ import annotations

import pickle

import pytest
import torch

import regionclip
from _openai_reference import openai_model_module, openai_tokenizer_module
from regionclip.clip.checkpoint import load_clip, save_clip
from regionclip.errors import CheckpointError, RegionCLIPError


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Give every BN non-trivial statistics and every bn3 a non-zero scale (OpenAI init zeroes bn3)."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = 0.5 + 0.5 * torch.rand(n, generator=g)
            module.bias.data = 0.1 * torch.randn(n, generator=g)
            module.running_mean.data = 0.1 * torch.randn(n, generator=g)
            module.running_var.data = 0.5 + torch.rand(n, generator=g)


@pytest.fixture(scope="module")
def openai_rn50(tmp_path_factory):
    """An OpenAI-architecture RN50 with random weights, saved in OpenAI's two released forms."""
    oa = openai_model_module()
    torch.manual_seed(0)
    model = oa.CLIP(1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12).eval()
    _randomize(model, 1)
    oa.convert_weights(model)  # OpenAI's released weights are fp16 for conv/linear/attention
    state = {k: v.clone() for k, v in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("openai")
    plain = folder / "RN50-state.pt"
    torch.save(
        {
            **state,
            "input_resolution": torch.tensor(224),
            "context_length": torch.tensor(77),
            "vocab_size": torch.tensor(49408),
        },
        plain,
    )
    # a TorchScript archive like OpenAI's RN50.pt (traced in fp32, then stored with the same fp16 weights)
    fp32 = oa.build_model({k: v.clone() for k, v in state.items()}).float().eval()
    traced = torch.jit.trace(
        fp32, (torch.randn(1, 3, 224, 224), torch.randint(1, 400, (1, 77))), check_trace=False
    )
    traced.load_state_dict({k: v.float() for k, v in state.items()})
    traced = traced.half()
    archive = folder / "RN50.pt"
    traced.save(str(archive))
    # each form is compared with the reference built from that file's own (fp16-rounded) weights
    ref_plain = oa.build_model({k: v.clone() for k, v in state.items()}).float().eval()
    ref_archive = oa.build_model(dict(torch.jit.load(str(archive)).state_dict())).float().eval()
    return {"plain": (ref_plain, plain), "torchscript": (ref_archive, archive)}


@pytest.mark.parametrize("form", ["plain", "torchscript"])
def test_openai_rn50_matches_the_reference_implementation(openai_rn50, form):
    reference, path = openai_rn50[form]
    model = regionclip.create_model("RN50", pretrained=path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    torch.manual_seed(2)
    images = torch.randn(2, 3, 224, 224)
    tokens = model.tokenize(["a photo of a cat.", "two dogs playing with a red frisbee in the park"])
    with torch.no_grad():
        ours_img, ref_img = model.encode_image(images), reference.encode_image(images)
        ours_txt, ref_txt = model.encode_text(tokens), reference.encode_text(tokens)
    assert ours_img.shape == (2, 1024) and ours_txt.shape == (2, 1024)
    assert (ours_img - ref_img).abs().max().item() <= 1e-4
    assert (ours_txt - ref_txt).abs().max().item() <= 1e-4


def test_tokenizer_matches_openai():
    tok = openai_tokenizer_module().SimpleTokenizer()
    model = regionclip.create_model("RN-micro")
    texts = ["a photo of a fire hydrant.", "Two cats, and a teddy-bear!"]
    ours = model.tokenize(texts)
    for row, text in zip(ours, texts, strict=True):
        expected = [49406, *tok.encode(text), 49407]
        assert row[: len(expected)].tolist() == expected
        assert row[len(expected) :].eq(0).all()


def test_presets_and_dimensions():
    assert {"RN50", "RN50x4", "RN-tiny", "RN-micro"} <= set(regionclip.list_models())
    rn50 = regionclip.clip.get_preset("RN50")
    assert rn50.embed_dim == 1024 and rn50.vision.pooler_resolution == 14 and rn50.vision.heads == 32
    rn50x4 = regionclip.clip.get_preset("RN50x4")
    assert rn50x4.embed_dim == 640 and rn50x4.vision.pooler_resolution == 18 and rn50x4.vision.heads == 40
    with pytest.raises(RegionCLIPError, match="unknown model 'RN51'"):
        regionclip.create_model("RN51")


def test_batchnorm_is_frozen(micro_model):
    from torchvision.ops.misc import FrozenBatchNorm2d

    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in micro_model.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in micro_model.visual.modules())
    x = torch.randn(2, 3, 64, 64)
    micro_model.eval()
    before = micro_model.encode_image(x)
    micro_model.train()
    after = micro_model.encode_image(x)  # train mode changes nothing: statistics are fixed
    micro_model.eval()
    assert torch.equal(before, after)


def test_freeze_stages_stops_stem_and_layer1():
    from regionclip.clip.model import freeze_stages

    model = regionclip.create_model("RN-micro")
    freeze_stages(model.visual, 2)
    assert not model.visual.conv1.weight.requires_grad
    assert not any(p.requires_grad for p in model.visual.layer1.parameters())
    assert all(p.requires_grad for p in model.visual.layer2.parameters())
    assert all(p.requires_grad for p in model.visual.attnpool.parameters())


def test_regionclip_checkpoint_round_trip(tmp_path, micro_model):
    path = save_clip(micro_model, tmp_path / "clip.safetensors")
    loaded = load_clip(path)
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(loaded.encode_image(x), micro_model.encode_image(x))
    again = regionclip.create_model("RN-micro", pretrained=path)
    assert torch.equal(again.encode_image(x), micro_model.encode_image(x))
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temporary file


def test_missing_truncated_and_corrupt_files(tmp_path, micro_model):
    with pytest.raises(CheckpointError, match="not found"):
        regionclip.create_model("RN-micro", pretrained=tmp_path / "nope.pt")
    good = tmp_path / "clip.pt"
    torch.save(micro_model.state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        regionclip.create_model("RN-micro", pretrained=truncated)
    st = save_clip(micro_model, tmp_path / "c.safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(st.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        regionclip.create_model("RN-micro", pretrained=broken)


def test_wrong_architecture_lists_mismatching_keys(tmp_path, micro_model):
    path = tmp_path / "micro.pt"
    torch.save(micro_model.state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        regionclip.create_model("RN-tiny", pretrained=path)
    message = str(info.value)
    assert "micro.pt" in message and "shape mismatches" in message and "visual.conv1.weight" in message


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /tmp/regionclip-pwned",))


def test_pickle_that_executes_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"visual.conv1.weight": _Evil()}, f)
    with pytest.raises(CheckpointError, match="refused|corrupt"):
        regionclip.create_model("RN-micro", pretrained=path)
    import os

    assert not os.path.exists("/tmp/regionclip-pwned")


def test_encode_text_cut_after_the_last_eot_is_exact(micro_model):
    """Causal attention: padding after the batch's last EOT cannot change any EOT feature."""
    tokens = micro_model.tokenize(["a cat.", "a photo of a big red fire hydrant."])
    assert tokens.argmax(-1).max() + 1 < tokens.shape[1]
    with torch.no_grad():
        cut = micro_model.encode_text(tokens)
        x = micro_model.token_embedding(tokens) + micro_model.positional_embedding
        x = micro_model.ln_final(micro_model.transformer(x, attn_mask=micro_model.attn_mask))
        full = x[torch.arange(2), tokens.argmax(-1)] @ micro_model.text_projection
    assert (cut - full).abs().max().item() < 1e-5


def test_clip_training_uses_batch_statistics_and_saves_frozen_bn():
    from torchvision.ops.misc import FrozenBatchNorm2d

    from regionclip.clip.train import CLIPTrainingTask

    model = regionclip.create_model("RN-micro")
    task = CLIPTrainingTask(model).train()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.visual.modules())
    images, tokens = torch.randn(4, 3, 64, 64), model.tokenize(["a cat", "a dog", "a car", "a cup"])
    out = task((images, tokens))
    out.losses["loss_clip"].backward()
    assert model.visual.bn1.running_mean.abs().sum() > 0  # statistics were updated from the batch
    frozen = task.frozen_model()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.visual.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.visual.modules())
    assert torch.equal(frozen.visual.bn1.running_mean, model.visual.bn1.running_mean)
