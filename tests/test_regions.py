"""Region encoder: the full-image box equals encode_image, RoIAlign sampling by hand, the mean-token
attention pool equals OpenAI's, chunking, the global box."""

from __future__ import annotations

import pytest
import torch
from open_clip.modified_resnet import AttentionPool2d

import regionclip
from regionclip.regions import RegionEncoder, attention_pool, global_boxes, roi_pool


@pytest.mark.parametrize("name,size", [("RN50", 224), ("RN50x4", 288), ("RN-micro", 64), ("RN-tiny", 96)])
def test_full_image_box_equals_encode_image(name, size):
    """Why this holds exactly: at CLIP's input size S the trunk gives an (S/16)x(S/16) res4 map. The box
    [0, 0, S, S] maps to [-0.5, -0.5, S/16 - 0.5, S/16 - 0.5] on it (aligned=True subtracts half a cell),
    and RoIAlign with output S/16 and sampling_ratio=0 takes ceil(1) = 1 sample per bin at the bin centre,
    i.e. exactly at each cell centre (integer coordinates), where bilinear interpolation returns the cell
    value. So the RoI features ARE the res4 map, and layer4 + attention pool then compute encode_image."""
    torch.manual_seed(0)
    model = regionclip.create_model(name)
    assert model.preset.vision.pooler_resolution == size // 16
    images = torch.randn(2, 3, size, size)
    box = torch.tensor([[0.0, 0.0, size, size]])
    with torch.no_grad():
        regions = model.encode_regions(images, [box, box])
        whole = model.encode_image(images)
    assert regions.shape == (2, model.embed_dim)
    assert (regions - whole).abs().max().item() <= 1e-4


def test_roi_align_samples_by_hand():
    # res4 with value = column index in channel 0 and row index in channel 1
    h, w = 4, 6
    cols = torch.arange(w, dtype=torch.float32).expand(h, w)
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    res4 = torch.stack([cols, rows])[None]  # [1, 2, 4, 6]
    # box of 2x2 cells starting at cell (1, 2) in input pixels (stride 16): x 32..64, y 16..48
    box = torch.tensor([[32.0, 16.0, 64.0, 48.0]])
    out = roi_pool(res4, [box], resolution=2)  # one sample per bin, at the cell centres 2,3 / 1,2
    assert torch.allclose(out[0, 0], torch.tensor([[2.0, 3.0], [2.0, 3.0]]))
    assert torch.allclose(out[0, 1], torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    # a 1-cell box pooled to 2x2: bins of half a cell, samples at +-0.25 around the centre of cell (2, 1)
    small = torch.tensor([[32.0, 16.0, 48.0, 32.0]])
    out = roi_pool(res4, [small], resolution=2)
    assert torch.allclose(out[0, 0], torch.tensor([[1.75, 2.25], [1.75, 2.25]]))


def test_mean_token_attention_pool_equals_openai():
    torch.manual_seed(0)
    pool = AttentionPool2d(3, 64, 4, 32).eval()
    x = torch.randn(5, 64, 3, 3)
    with torch.no_grad():
        assert (attention_pool(pool, x) - pool(x)).abs().max().item() < 1e-5


def test_chunking_and_batching_give_the_same_embeddings(micro_model):
    torch.manual_seed(1)
    images = torch.randn(2, 3, 96, 128)
    boxes = [torch.tensor([[0.0, 0, 50, 40], [10, 20, 90, 96]]), torch.tensor([[5.0, 5, 120, 60]])]
    encoder = RegionEncoder(micro_model.visual, chunk_size=1)
    with torch.no_grad():
        chunked = encoder(images, boxes)
        whole = RegionEncoder(micro_model.visual, chunk_size=1000)(images, boxes)
        single = encoder(images[1:], boxes[1:])
    assert chunked.shape == (3, micro_model.embed_dim)
    assert torch.allclose(chunked, whole, atol=1e-6)
    assert torch.allclose(chunked[2:], single, atol=1e-6)


def test_no_boxes_gives_an_empty_result(micro_model):
    with torch.no_grad():
        out = micro_model.encode_regions(torch.randn(1, 3, 64, 64), [torch.zeros(0, 4)])
    assert out.shape == (0, micro_model.embed_dim)


def test_global_box_spans_the_padded_batch(micro_model):
    images = torch.randn(2, 3, 80, 112)
    boxes = global_boxes(images)
    assert [b.tolist() for b in boxes] == [[[0.0, 0.0, 112.0, 80.0]]] * 2
    encoder = RegionEncoder(micro_model.visual)
    with torch.no_grad():
        assert torch.allclose(encoder.encode_global(images), encoder(images, boxes))


def test_gradients_reach_layer4_and_attnpool(micro_model):
    encoder = RegionEncoder(micro_model.visual)
    out = encoder(torch.randn(1, 3, 64, 64), [torch.tensor([[0.0, 0, 40, 40]])])
    out.sum().backward()
    assert micro_model.visual.layer4[0].conv1.weight.grad is not None
    assert micro_model.visual.attnpool.q_proj.weight.grad is not None
    micro_model.zero_grad(set_to_none=True)


def test_embed_chunks_roi_align_and_head_with_the_same_result():
    torch.manual_seed(0)
    enc = RegionEncoder(regionclip.create_model("RN-micro").visual, chunk_size=4).eval()
    images = torch.randn(2, 3, 64, 80)
    boxes = [torch.tensor([[0, 0, 30, 30.0], [10, 5, 60, 40], [3, 3, 20, 50]]),
             torch.tensor([[5, 5, 40, 40.0], [0, 0, 79, 63], [1, 2, 3, 4], [20, 20, 60, 60]])]  # fmt: skip
    with torch.no_grad():
        res4 = enc.trunk(images)
        chunked, whole = enc.embed(res4, boxes), enc.head(enc.pool(res4, boxes))
    assert chunked.shape == (7, enc.embed_dim)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


def test_res5_and_embedding_head_accessors_compose_to_head():
    torch.manual_seed(0)
    enc = RegionEncoder(regionclip.create_model("RN-micro").visual, chunk_size=3)
    res4 = enc.trunk(torch.randn(1, 3, 64, 80))
    boxes = [torch.tensor([[0.0, 0.0, 40.0, 30.0], [10.0, 5.0, 70.0, 60.0], [2.0, 2.0, 20.0, 20.0]] * 2)]
    roi = enc.pool(res4, boxes)
    with torch.no_grad():
        res5 = enc.res5(roi)
        assert res5.shape[:2] == (6, enc.res5_channels)
        torch.testing.assert_close(enc.embed_res5(res5), enc.head(roi))  # chunked head: same embeddings
        assert enc.embed_res5(res5).shape == (6, enc.embed_dim)


def test_nothing_outside_regions_and_clip_reaches_into_the_visual_tower():
    from pathlib import Path

    root = Path(regionclip.__file__).parent
    files = [*root.glob("detect/*.py"), *root.glob("pretrain/*.py"), *root.glob("tasks/*.py"),
             *root.glob("demo/*.py"), root / "export.py", root / "region_index.py"]  # fmt: skip
    bad = [
        f"{path.relative_to(root)}:{n}"
        for path in files
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if ".visual.layer4" in line or ".visual.attnpool" in line
    ]
    assert not bad, "use RegionEncoder.res5 / embed_res5 / res5_channels: " + ", ".join(bad)
