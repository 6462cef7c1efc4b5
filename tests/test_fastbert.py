import pytest
import torch

from bertfit.models.classifier import build_classifier
from bertfit.models.dropout import FastDropout, use_fast_dropout
from bertfit.models.encoders import resolve_encoder
from bertfit.models.fastbert import lean_logits, supports_lean_forward, training_forward


def padded_batch():
    torch.manual_seed(0)
    ids = torch.randint(5, 40, (4, 9))
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def test_lean_forward_matches_transformers(tiny_bert):
    model = build_classifier(resolve_encoder(str(tiny_bert)), ["a", "b", "c"]).eval()
    assert supports_lean_forward(model)
    batch = padded_batch()
    with torch.no_grad():
        expected = model(**batch).logits
        got = lean_logits(model, **batch)
    assert torch.allclose(got, expected, atol=1e-5)


def test_lean_forward_trains_with_dropout_and_gradients(tiny_bert):
    model = build_classifier(resolve_encoder(str(tiny_bert)), ["a", "b"], dropout=0.5)
    use_fast_dropout(model)
    assert isinstance(model.bert.encoder.layer[0].attention.self.dropout, FastDropout)
    model.train()
    forward = training_forward(model)
    batch = padded_batch()
    first, second = forward(**batch), forward(**batch)
    assert not torch.allclose(first, second)  # dropout is active in training
    first.sum().backward()
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad is not None


def test_other_models_use_their_own_forward():
    from bertfit.models.d2l import D2LBertForSequenceClassification, D2LConfig

    model = D2LBertForSequenceClassification(
        D2LConfig(
            vocab_size=20, num_hiddens=8, ffn_num_hiddens=16, num_heads=2, num_layers=1, max_len=16
        ),
        2,
    )
    assert not supports_lean_forward(model)
    ids = torch.randint(0, 20, (2, 5))
    logits = training_forward(model)(
        input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids)
    )
    assert logits.shape == (2, 2)


def test_cpu_dropout_attention_path_is_exact_when_nothing_is_dropped(tiny_bert, monkeypatch):
    """The spelled-out CPU attention (used with dropout) equals SDPA up to the 1/(1-p) scale."""
    model = build_classifier(resolve_encoder(str(tiny_bert)), ["a", "b"], dropout=0.2)
    use_fast_dropout(model)
    batch = padded_batch()
    model.eval()
    with torch.no_grad():
        expected = lean_logits(model, **batch)
    model.train()
    # drop nothing anywhere; then only the rescaling by 1/(1-p) remains, so set p's effect to 1
    monkeypatch.setattr(
        FastDropout, "drop_mask", lambda self, x: torch.zeros_like(x, dtype=torch.bool)
    )
    monkeypatch.setattr(FastDropout, "forward", lambda self, x: x)
    import bertfit.models.fastbert as fb

    calls = []
    real = fb._attention

    def spy(layer, x, mask, heads):
        out = real(layer, x, mask, heads)
        calls.append(1)
        return out * (1 - 0.2)  # undo the probability rescale of the dropout path

    monkeypatch.setattr(fb, "_attention", spy)
    with torch.no_grad():
        got = lean_logits(model, **batch)
    assert calls and torch.allclose(got, expected, atol=1e-5)


def test_lean_hidden_matches_bert_model(tiny_bert):
    from transformers import BertModel

    from bertfit.models.fastbert import lean_hidden, supports_lean_encoder

    bert = BertModel.from_pretrained(tiny_bert, add_pooling_layer=False).eval()
    assert supports_lean_encoder(bert)
    batch = padded_batch()
    with torch.no_grad():
        expected = bert(**batch).last_hidden_state
        got = lean_hidden(bert, **batch)
    real = batch["attention_mask"].bool()  # padded positions may differ; they are never used
    assert torch.allclose(got[real], expected[real], atol=1e-5)


def grads_after_one_step(model, batch, seed: int = 3):
    torch.manual_seed(seed)  # the same dropout masks for both models
    training_forward(model)(**batch).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_activation_checkpointing_gives_the_same_gradients_with_dropout(tiny_bert):
    from bertfit.models.fastbert import use_activation_checkpointing

    def model():
        torch.manual_seed(0)
        m = build_classifier(resolve_encoder(str(tiny_bert)), ["a", "b"], dropout=0.3)
        use_fast_dropout(m)
        return m.train()

    plain, recomputing = model(), model()
    assert use_activation_checkpointing(recomputing.bert)
    expected = grads_after_one_step(plain, padded_batch())
    got = grads_after_one_step(recomputing, padded_batch())
    assert expected.keys() == got.keys()
    for name, grad in expected.items():
        assert torch.allclose(got[name], grad, atol=1e-6), name


def test_activation_checkpointing_on_other_models(tiny_bert):
    from transformers import BertConfig, BertForSequenceClassification

    from bertfit.errors import ConfigError
    from bertfit.models.d2l import D2LBertForSequenceClassification, D2LConfig
    from bertfit.models.fastbert import use_activation_checkpointing
    from bertfit.training.objectives import recompute_activations

    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16,
                        position_embedding_type="relative_key")  # fmt: skip
    other = BertForSequenceClassification(config)
    assert not supports_lean_forward(other)
    recompute_activations(other, True, "relative-bert")  # transformers' own checkpointing
    assert other.bert.is_activation_checkpointing
    d2l = D2LBertForSequenceClassification(
        D2LConfig(vocab_size=20, num_hiddens=8, ffn_num_hiddens=16, num_heads=2, num_layers=1,
                  max_len=16),
        2,
    )  # fmt: skip
    recompute_activations(d2l, False, "d2l")  # off: nothing asked, nothing refused
    with pytest.raises(ConfigError, match="--activation-checkpointing"):
        recompute_activations(d2l, True, "d2l-bert-small")
    assert not use_activation_checkpointing(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_training_with_activation_checkpointing_takes_the_same_steps(tiny_bert, tmp_path):
    from bertfit.cli.main import main
    from tests.conftest import marker_rows, step_losses, train_argv, write_rows

    train = write_rows(tmp_path / "train.csv", marker_rows(32, seed=5))
    quick = ["--epochs", "1", "--batch-size", "8", "--max-length", "32", "--threads", "1"]
    quick += ["--no-progress", "--seed", "2", "--dropout", "0.2"]
    for name, extra in (("plain", []), ("recomputed", ["--activation-checkpointing"])):
        assert main([*train_argv(train, tiny_bert, tmp_path / name), *quick, *extra]) == 0
    assert step_losses(tmp_path / "recomputed") == pytest.approx(
        step_losses(tmp_path / "plain"), abs=1e-6
    )
