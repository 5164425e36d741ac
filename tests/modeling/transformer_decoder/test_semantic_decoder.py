"""The AVSS decoder built without a config: output shapes, eq. (6) per query, the N-queries cross-attention."""
import pytest
import torch

from aqformer_d2.modeling.transformer_decoder import AudioQueriedSemanticDecoder, CrossAttentionLayer

B, T, N, K, C, CA = 2, 3, 4, 5, 16, 8


def _decoder(**kw):
    args = dict(hidden_dim=C, audio_dim=CA, num_frames=T, num_stages=1, nheads=2, dim_feedforward=32,
                num_classes=K, num_queries=N)
    args.update(kw)
    torch.manual_seed(0)
    return AudioQueriedSemanticDecoder(**args).double().eval()


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(B * T, C, s, s, generator=g, dtype=torch.float64) for s in (2, 4, 8)]
    mask_features = torch.randn(B * T, C, 16, 16, generator=g, dtype=torch.float64)
    audio = torch.randn(B, T, CA, generator=g, dtype=torch.float64)
    return feats, mask_features, audio


@pytest.mark.parametrize("scope", ["all", "own"])
def test_outputs_and_eq6_per_query(scope):
    dec = _decoder(cross_attn_scope=scope)
    feats, mask_features, audio = _inputs()
    with torch.no_grad():
        out = dec(feats, mask_features, audio)
    assert out["pred_logits"].shape == (B, T, N, K + 1)
    assert out["pred_masks"].shape == (B, T, N, 16, 16)
    assert len(out["aux_outputs"]) == 2 and len(out["queries"]) == 3 and len(out["layer_features"]) == 3
    for layer, q in enumerate(out["queries"]):
        assert q.shape == (B, T, N, C)
        masks = out["aux_outputs"][layer]["pred_masks"] if layer < 2 else out["pred_masks"]
        logits = out["aux_outputs"][layer]["pred_logits"] if layer < 2 else out["pred_logits"]
        embedded = dec.mask_embed(q)  # [B, T, N, C]
        want = torch.einsum("btnc,btchw->btnhw", embedded, mask_features.view(B, T, C, 16, 16))
        torch.testing.assert_close(masks, want, rtol=0, atol=1e-12)  # float64, sums of 16 products
        torch.testing.assert_close(logits, dec.class_head(q), rtol=0, atol=0)


def test_own_scope_with_n_queries_is_one_attention_batch_per_frame():
    layer = CrossAttentionLayer(C, 2, scope="own").double()
    layer_all = CrossAttentionLayer(C, 2, scope="all").double()
    layer_all.load_state_dict(layer.state_dict())
    g = torch.Generator().manual_seed(1)
    queries = torch.randn(B, T * N, C, generator=g, dtype=torch.float64)
    memory = torch.randn(B * T, 9, C, generator=g, dtype=torch.float64)
    pos = torch.randn(1, 9, C, generator=g, dtype=torch.float64)
    got = layer(queries, memory, pos, queries_per_frame=N)
    # each frame alone: a "clip" of one frame whose N queries attend to that frame's pixels
    want = layer_all(queries.reshape(B * T, N, C), memory, pos, queries_per_frame=N).reshape(B, T * N, C)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not a multiple"):
        layer(queries[:, :-1], memory, pos, queries_per_frame=N)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="QUERY_CONDITIONING"):
        _decoder(query_conditioning="concat")
    with pytest.raises(ValueError, match="NUM_QUERIES"):
        _decoder(num_queries=0)
    with pytest.raises(ValueError, match="QUERY_TYPE must stay 'audio'"):
        _decoder(query_type="vanilla")
