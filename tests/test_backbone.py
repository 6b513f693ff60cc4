"""The backbone against the official outputs, the official key layout, and a from-scratch reference."""
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import sapiens2
from sapiens2.models.arch import ARCHS
from sapiens2.models.rope import apply_rope

from conftest import rel_err, spec_state_dict

TABLE_PARAMS = {  # spec/README.md arch table, in billions
    "sapiens2_0.1b": 0.114, "sapiens2_0.4b": 0.398, "sapiens2_0.8b": 0.818, "sapiens2_1b": 1.462, "sapiens2_5b": 5.071,
}


def _fixture_model(official_dir, case, rope, use_tokenizer=False, hw=None):
    weights = load_file(official_dir / case)
    m = sapiens2.build_backbone("sapiens2_tiny", img_size=hw or (64, 48), use_tokenizer=use_tokenizer, rope_dtype=rope)
    if rope == "fp32":  # the fixture's fp32 run recomputed its periods in float32
        weights["rope_embed.periods"] = m.rope_embed.periods.clone()
    m.load_state_dict(weights, strict=True)
    return m.eval()


@pytest.mark.parametrize("rope", ["bf16", "fp32"])
@pytest.mark.parametrize("case,tok", [("backbone-tiny", False), ("backbone-tiny-4k", True)])
def test_reproduces_official_tokens(official_dir, official_cases, case, tok, rope):
    io = load_file(official_dir / official_cases[case]["io"])
    m = _fixture_model(official_dir, official_cases[case]["weights"], rope, tok, tuple(official_cases[case]["input_hw"]))
    with torch.inference_mode():
        out = m.forward_tokens(io["input"])
    assert out.shape == io[f"tokens_rope_{rope}"].shape
    assert rel_err(out, io[f"tokens_rope_{rope}"]) <= 1e-4


def test_bf16_and_fp32_rope_differ_by_small_expected_amount(official_dir):
    io = load_file(official_dir / "backbone-tiny-io.safetensors")
    official_gap = rel_err(io["tokens_rope_bf16"], io["tokens_rope_fp32"])
    bf = _fixture_model(official_dir, "backbone-tiny.safetensors", "bf16")
    fp = _fixture_model(official_dir, "backbone-tiny.safetensors", "fp32")
    with torch.inference_mode():
        ours_gap = rel_err(bf.forward_tokens(io["input"]), fp.forward_tokens(io["input"]))
    # bf16 rounding of the rotation: clearly non-zero, yet small (around bf16 epsilon 2^-8 or below)
    assert 1e-5 < ours_gap < 1e-2
    assert ours_gap == pytest.approx(official_gap, rel=0.05)


@pytest.mark.parametrize("listing,arch,tok", [
    ("backbone-0.1b-256x192.txt", "sapiens2_0.1b", False),
    ("backbone-0.4b-256x192.txt", "sapiens2_0.4b", False),
    ("backbone-0.1b-4k-tokenizer-512x384.txt", "sapiens2_0.1b", True),
])
def test_state_dict_equals_official_listing(listing, arch, tok):
    m = sapiens2.build_backbone(arch, img_size=(256, 192), use_tokenizer=tok, device="meta")
    ours = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in m.state_dict().items()}
    assert ours == spec_state_dict(listing)


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "sapiens2_tiny" and ARCHS[a].input_size is None])
def test_every_arch_builds_on_meta_with_official_pattern(arch):
    a = ARCHS[arch]
    m = sapiens2.build_backbone(arch, device="meta")
    sd = m.state_dict()
    assert len(sd) == 17 * a.depth + 6
    assert sd["rope_embed.periods"].shape == (a.head_dim // 4,)
    # GQA exactly in the middle: blocks 8 .. depth-9 have heads/2 key/value heads
    for i in range(a.depth):
        kv = a.num_heads // 2 if 8 <= i < a.depth - 8 else a.num_heads
        assert sd[f"blocks.{i}.attn.wk.weight"].shape == (kv * a.head_dim, a.embed_dim)
        assert sd[f"blocks.{i}.attn.wv.bias"].shape == (kv * a.head_dim,)
    assert a.gqa_blocks == tuple(range(8, a.depth - 8))
    n = sum(p.numel() for p in m.parameters())
    if arch == "sapiens2_0.4b":
        # the official 0.4b listing sums to 0.39545 B; the table's 0.398 is a rounded publication figure
        assert n == 395_450_368
    else:
        assert n / 1e9 == pytest.approx(TABLE_PARAMS[arch], rel=0.005)


def test_1b_4k_param_count():
    m = sapiens2.build_backbone("1b", use_tokenizer=True, device="meta")
    assert sum(p.numel() for p in m.parameters()) / 1e9 == pytest.approx(1.607, rel=0.005)
    assert len([k for k in m.state_dict() if k.startswith("tokenizer.blocks.")]) == 4 * 14  # 14 keys per tokenizer block


def test_arch_names_accept_short_forms():
    assert sapiens2.get_arch("0.4b") is ARCHS["sapiens2_0.4b"]
    assert sapiens2.get_arch("sapiens2-1b") is ARCHS["sapiens2_1b"]
    with pytest.raises(ValueError, match="unknown arch"):
        sapiens2.get_arch("2b")


def _reference_block(blk, x, sin, cos, num_prefix):
    """One block computed from its weights with explicit matmuls and softmax (no module code)."""
    def rms(t, w, eps=1e-6):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps) * w

    a = blk.attn
    h, kv, d = a.num_heads, a.num_kv_heads, a.head_dim
    b, n, c = x.shape
    y = rms(x, blk.ln1.weight)
    q = (y @ a.wq.weight.T + a.wq.bias).view(b, n, h, d).permute(0, 2, 1, 3)
    k = (y @ a.wk.weight.T + a.wk.bias).view(b, n, kv, d).permute(0, 2, 1, 3)
    v = (y @ a.wv.weight.T + a.wv.bias).view(b, n, kv, d).permute(0, 2, 1, 3)
    q, k = rms(q, a.q_norm.weight), rms(k, a.k_norm.weight)

    def rot(t):
        p = t[:, :, num_prefix:]
        half = torch.cat((-p[..., d // 2:], p[..., : d // 2]), -1)
        return torch.cat((t[:, :, :num_prefix], p * cos + half * sin), 2)

    q, k = rot(q), rot(k)
    g = h // kv  # key/value head j serves query heads j*g .. j*g+g-1
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    o = (att @ v).permute(0, 2, 1, 3).reshape(b, n, c)
    x = x + (o @ a.proj.weight.T + a.proj.bias) * a.gamma.weight
    y = rms(x, blk.ln2.weight)
    hid = y @ blk.ffn.w12.weight.T + blk.ffn.w12.bias
    u, w = hid.chunk(2, -1)
    return x + (u * torch.sigmoid(u) * w) @ blk.ffn.w3.weight.T + blk.ffn.w3.bias


@pytest.mark.parametrize("index", [0, 8])  # a full multi-head block and a grouped-query block
def test_block_equals_from_scratch_reference(index):
    torch.manual_seed(0)
    m = sapiens2.build_backbone("tiny", img_size=(64, 48), rope_dtype="fp32").double()
    for p in m.parameters():  # non-trivial norms and layer scales
        p.data.normal_(0, 0.3)
    blk = m.blocks[index]
    assert (blk.attn.num_kv_heads < blk.attn.num_heads) == (index == 8)
    x = torch.randn(2, 9 + 12, 64, dtype=torch.float64)
    sin, cos = (t.double() for t in m.rope_embed.sin_cos(4, 3))
    with torch.no_grad():
        ours = blk(x, (sin, cos), 9)
        ref = _reference_block(blk, x, sin, cos, 9)
    assert rel_err(ours, ref) < 1e-12


def test_rope_angles_follow_formula_in_fp32():
    m = sapiens2.build_backbone("tiny", rope_dtype="fp32")
    sin, cos = m.rope_embed.sin_cos(2, 3)
    periods = 100 ** (2 * torch.arange(4) / 8)
    y, x = 1 * 2 / 2 - 0.5, 2 * 2 / 3 + 1 / 3 - 1  # patch (row 1, col 2): centres (1.5/2, 2.5/3) -> [-1, 1]
    expected = torch.cat((2 * math.pi * y / periods, 2 * math.pi * x / periods)).tile(2)
    assert torch.allclose(sin[1 * 3 + 2], torch.sin(expected), atol=1e-6)
    assert torch.allclose(cos[1 * 3 + 2], torch.cos(expected), atol=1e-6)


def test_rope_leaves_prefix_values_but_rounds_them_in_bf16():
    x = torch.randn(1, 2, 9 + 4, 16)
    sin, cos = torch.zeros(4, 16, dtype=torch.bfloat16), torch.ones(4, 16, dtype=torch.bfloat16)
    out = apply_rope(x, sin, cos, 9)
    assert out.dtype == torch.float32
    assert torch.equal(out, x.to(torch.bfloat16).float())  # identity rotation, bf16 round trip only


def test_forward_is_deterministic_and_feature_map_matches_tokens():
    torch.manual_seed(0)
    m = sapiens2.build_backbone("tiny", img_size=(64, 48)).eval()
    x = torch.randn(2, 3, 96, 64)  # not the training size: any multiple of 16 works
    with torch.inference_mode():
        a, b = m.forward_tokens(x), m.forward_tokens(x)
        fmap = m(x)
    assert torch.equal(a, b)
    assert a.shape == (2, 9 + 6 * 4, 64)
    assert fmap.shape == (2, 64, 6, 4)
    assert torch.equal(fmap[:, :, 2, 3], a[:, 9 + 2 * 4 + 3])


def test_batch_items_are_independent():
    torch.manual_seed(0)
    m = sapiens2.build_backbone("tiny").eval()
    x = torch.randn(3, 3, 64, 48)
    with torch.inference_mode():
        together = m.forward_tokens(x)
        alone = m.forward_tokens(x[1:2])
    assert rel_err(together[1:2], alone) < 1e-5


@pytest.mark.parametrize("tok,hw", [(False, (64, 40)), (False, (60, 48)), (True, (128, 96)), (True, (64, 48))])
def test_bad_input_size_raises(tok, hw):
    m = sapiens2.build_backbone("tiny", use_tokenizer=tok)
    with pytest.raises(sapiens2.InputSizeError, match=f"not a multiple of {64 if tok else 16}"):
        m(torch.zeros(1, 3, *hw))


def test_non_image_tensor_raises():
    m = sapiens2.build_backbone("tiny")
    with pytest.raises(sapiens2.InputSizeError, match="expected an image batch"):
        m(torch.zeros(3, 64, 48))


def test_tokenizer_chunking_does_not_change_output():
    torch.manual_seed(0)
    m = sapiens2.build_backbone("tiny", use_tokenizer=True).eval()
    x = torch.randn(2, 3, 128, 192)  # 2 * 2 * 3 = 12 windows
    with torch.inference_mode():
        whole = m.forward_tokens(x)
        m.tokenizer.chunk_size = 5
        chunked = m.forward_tokens(x)
    assert rel_err(chunked, whole) < 1e-6


def test_gradient_checkpointing_gives_same_output_and_grads():
    torch.manual_seed(0)
    m = sapiens2.build_backbone("tiny").train()
    x = torch.randn(1, 3, 64, 48)
    out = m(x)
    out.square().mean().backward()
    grads = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.grad_checkpointing = True
    out2 = m(x)
    out2.square().mean().backward()
    assert torch.equal(out, out2)
    for g, p in zip(grads, m.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-7)


def test_runs_under_bf16_autocast_close_to_float32():
    torch.manual_seed(0)
    m = sapiens2.build_backbone("tiny").eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.inference_mode():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = m(x)
    assert low.dtype in (torch.bfloat16, torch.float32)
    assert rel_err(low.float(), ref) < 5e-2


def test_gqa_without_materialising_equals_explicit_repeat():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 10, 16), torch.randn(2, 2, 10, 16), torch.randn(2, 2, 10, 16)
    fused = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    explicit = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1))
    assert torch.allclose(fused, explicit, atol=1e-6)


def test_keep_all_tokens_equals_full_pass_and_subsets_use_true_positions():
    torch.manual_seed(0)
    m = sapiens2.build_backbone("tiny", rope_dtype="fp32").eval()
    for blk in m.blocks:  # make attention matter, so a wrong position would show
        blk.attn.gamma.weight.data.fill_(1.0)
    x = torch.randn(2, 3, 64, 48)
    with torch.inference_mode():
        full = m.forward_tokens(x)
        everything = m.forward_tokens(x, keep=torch.arange(12).expand(2, -1))
        assert torch.allclose(everything, full, atol=1e-5)
        # a permuted keep list gives the full pass's tokens permuted: RoPE follows the index, not the slot
        perm = torch.stack([torch.randperm(12), torch.randperm(12)])
        permuted = m.forward_tokens(x, keep=perm)
        expected = torch.stack([full[i, 9:][perm[i]] for i in range(2)])
        assert torch.allclose(permuted[:, 9:], expected, atol=1e-5)
        assert torch.allclose(permuted[:, :9], full[:, :9], atol=1e-5)
        subset = m.forward_tokens(x, keep=torch.tensor([[5, 1, 9], [0, 11, 3]]))
        assert subset.shape == (2, 12, 64)


def test_keep_indices_must_match_batch():
    m = sapiens2.build_backbone("tiny")
    with pytest.raises(ValueError, match="keep must be"):
        m.forward_tokens(torch.zeros(2, 3, 64, 48), keep=torch.zeros(3, 4, dtype=torch.long))


def test_ffn_token_chunking_does_not_change_output(monkeypatch):
    from sapiens2.models.block import SwiGLUFFN

    torch.manual_seed(0)
    m = sapiens2.build_backbone("tiny").eval()
    x = torch.randn(2, 3, 256, 192)
    with torch.inference_mode():
        whole = m(x)
        monkeypatch.setattr(SwiGLUFFN, "chunk_bytes", 1 << 16)  # many small chunks (64-row minimum)
        chunked = m(x)
    assert torch.equal(whole, chunked)


@pytest.mark.parametrize("bias", [True, False])
def test_ffn_inference_path_equals_the_plain_formula(monkeypatch, bias):
    from sapiens2.models.block import SwiGLUFFN

    torch.manual_seed(0)
    ffn = SwiGLUFFN(32, 96)
    if not bias:
        ffn.w12.bias = ffn.w3.bias = None
    x = torch.randn(1, 301, 32)  # 301 rows: chunks of 76, 76, 76, 73 at the first budget, one pass at the second
    a, b = F.linear(x, ffn.w12.weight, ffn.w12.bias).chunk(2, dim=-1)
    expected = F.linear(F.silu(a) * b, ffn.w3.weight, ffn.w3.bias)
    for chunk_bytes in (100 * 96 * 4, 1 << 30):
        monkeypatch.setattr(SwiGLUFFN, "chunk_bytes", chunk_bytes)
        with torch.inference_mode():
            got = ffn(x)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
