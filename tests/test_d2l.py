"""The d2l BERT port matches the book's own code and loads its checkpoint layout."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from bertfit.errors import ModelError
from bertfit.models.d2l import D2LBertForSequenceClassification, D2LConfig, D2LTokenizer
from bertfit.models.d2l_checkpoint import (
    is_d2l_checkpoint,
    load_d2l_checkpoint,
    load_d2l_model,
    save_d2l_model,
)

# ---------------------------------------------------------------------------------------------
# Reference: the book's module structure (d2l/torch.py, PyTorch edition, the version with explicit
# layer sizes that the published pretrained.params come from, with the Dec 2020 fix that repeats
# valid_lens per head with repeat_interleave). Kept close to the book on purpose.


def sequence_mask(X, valid_len, value=0):
    maxlen = X.size(1)
    mask = (
        torch.arange((maxlen), dtype=torch.float32, device=X.device)[None, :] < valid_len[:, None]
    )
    X[~mask] = value
    return X


def masked_softmax(X, valid_lens):
    if valid_lens is None:
        return nn.functional.softmax(X, dim=-1)
    shape = X.shape
    if valid_lens.dim() == 1:
        valid_lens = torch.repeat_interleave(valid_lens, shape[1])
    else:
        valid_lens = valid_lens.reshape(-1)
    X = sequence_mask(X.reshape(-1, shape[-1]), valid_lens, value=-1e6)
    return nn.functional.softmax(X.reshape(shape), dim=-1)


class DotProductAttention(nn.Module):
    def __init__(self, dropout):
        super().__init__()
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries, keys, values, valid_lens=None):
        d = queries.shape[-1]
        scores = torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(d)
        self.attention_weights = masked_softmax(scores, valid_lens)
        return torch.bmm(self.dropout(self.attention_weights), values)


def transpose_qkv(X, num_heads):
    X = X.reshape(X.shape[0], X.shape[1], num_heads, -1)
    X = X.permute(0, 2, 1, 3)
    return X.reshape(-1, X.shape[2], X.shape[3])


def transpose_output(X, num_heads):
    X = X.reshape(-1, num_heads, X.shape[1], X.shape[2])
    X = X.permute(0, 2, 1, 3)
    return X.reshape(X.shape[0], X.shape[1], -1)


class MultiHeadAttention(nn.Module):
    def __init__(
        self, key_size, query_size, value_size, num_hiddens, num_heads, dropout, bias=False
    ):
        super().__init__()
        self.num_heads = num_heads
        self.attention = DotProductAttention(dropout)
        self.W_q = nn.Linear(query_size, num_hiddens, bias=bias)
        self.W_k = nn.Linear(key_size, num_hiddens, bias=bias)
        self.W_v = nn.Linear(value_size, num_hiddens, bias=bias)
        self.W_o = nn.Linear(num_hiddens, num_hiddens, bias=bias)

    def forward(self, queries, keys, values, valid_lens):
        queries = transpose_qkv(self.W_q(queries), self.num_heads)
        keys = transpose_qkv(self.W_k(keys), self.num_heads)
        values = transpose_qkv(self.W_v(values), self.num_heads)
        if valid_lens is not None:
            valid_lens = torch.repeat_interleave(valid_lens, repeats=self.num_heads, dim=0)
        output = self.attention(queries, keys, values, valid_lens)
        return self.W_o(transpose_output(output, self.num_heads))


class PositionWiseFFN(nn.Module):
    def __init__(self, ffn_num_input, ffn_num_hiddens, pw_num_outputs):
        super().__init__()
        self.dense1 = nn.Linear(ffn_num_input, ffn_num_hiddens)
        self.relu = nn.ReLU()
        self.dense2 = nn.Linear(ffn_num_hiddens, pw_num_outputs)

    def forward(self, X):
        return self.dense2(self.relu(self.dense1(X)))


class AddNorm(nn.Module):
    def __init__(self, normalized_shape, dropout):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.ln = nn.LayerNorm(normalized_shape)

    def forward(self, X, Y):
        return self.ln(self.dropout(Y) + X)


class EncoderBlock(nn.Module):
    def __init__(
        self,
        key_size,
        query_size,
        value_size,
        num_hiddens,
        norm_shape,
        ffn_num_input,
        ffn_num_hiddens,
        num_heads,
        dropout,
        use_bias=False,
    ):
        super().__init__()
        self.attention = MultiHeadAttention(
            key_size, query_size, value_size, num_hiddens, num_heads, dropout, use_bias
        )
        self.addnorm1 = AddNorm(norm_shape, dropout)
        self.ffn = PositionWiseFFN(ffn_num_input, ffn_num_hiddens, num_hiddens)
        self.addnorm2 = AddNorm(norm_shape, dropout)

    def forward(self, X, valid_lens):
        Y = self.addnorm1(X, self.attention(X, X, X, valid_lens))
        return self.addnorm2(Y, self.ffn(Y))


class BERTEncoder(nn.Module):
    def __init__(
        self,
        vocab_size,
        num_hiddens,
        norm_shape,
        ffn_num_input,
        ffn_num_hiddens,
        num_heads,
        num_layers,
        dropout,
        max_len=1000,
        key_size=768,
        query_size=768,
        value_size=768,
    ):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, num_hiddens)
        self.segment_embedding = nn.Embedding(2, num_hiddens)
        self.blks = nn.Sequential()
        for i in range(num_layers):
            self.blks.add_module(
                f"{i}",
                EncoderBlock(
                    key_size,
                    query_size,
                    value_size,
                    num_hiddens,
                    norm_shape,
                    ffn_num_input,
                    ffn_num_hiddens,
                    num_heads,
                    dropout,
                    True,
                ),
            )
        self.pos_embedding = nn.Parameter(torch.randn(1, max_len, num_hiddens))

    def forward(self, tokens, segments, valid_lens):
        X = self.token_embedding(tokens) + self.segment_embedding(segments)
        X = X + self.pos_embedding.data[:, : X.shape[1], :]
        for blk in self.blks:
            X = blk(X, valid_lens)
        return X


class MaskLM(nn.Module):
    def __init__(self, vocab_size, num_hiddens, num_inputs=768):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(num_inputs, num_hiddens),
            nn.ReLU(),
            nn.LayerNorm(num_hiddens),
            nn.Linear(num_hiddens, vocab_size),
        )


class NextSentencePred(nn.Module):
    def __init__(self, num_inputs):
        super().__init__()
        self.output = nn.Linear(num_inputs, 2)


class BERTModel(nn.Module):
    def __init__(
        self,
        vocab_size,
        num_hiddens,
        norm_shape,
        ffn_num_input,
        ffn_num_hiddens,
        num_heads,
        num_layers,
        dropout,
        max_len=1000,
        key_size=768,
        query_size=768,
        value_size=768,
        hid_in_features=768,
        mlm_in_features=768,
        nsp_in_features=768,
    ):
        super().__init__()
        self.encoder = BERTEncoder(
            vocab_size,
            num_hiddens,
            norm_shape,
            ffn_num_input,
            ffn_num_hiddens,
            num_heads,
            num_layers,
            dropout,
            max_len=max_len,
            key_size=key_size,
            query_size=query_size,
            value_size=value_size,
        )
        self.hidden = nn.Sequential(nn.Linear(hid_in_features, num_hiddens), nn.Tanh())
        self.mlm = MaskLM(vocab_size, num_hiddens, mlm_in_features)
        self.nsp = NextSentencePred(nsp_in_features)


# ---------------------------------------------------------------------------------------------

H, FFN, HEADS, LAYERS, MAX_LEN = 16, 32, 2, 2, 64
WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", ".", ",", "is", "good", "bad"]
VOCAB = ["<unk>", "<pad>", "<mask>", "<cls>", "<sep>"] + WORDS
VOCAB += [f"w{i}" for i in range(30 - len(VOCAB))]


def book_model(hidden: int = H, seed: int = 0) -> BERTModel:
    torch.manual_seed(seed)
    model = BERTModel(
        len(VOCAB),
        hidden,
        norm_shape=[hidden],
        ffn_num_input=hidden,
        ffn_num_hiddens=FFN,
        num_heads=HEADS,
        num_layers=LAYERS,
        dropout=0.2,
        max_len=MAX_LEN,
        key_size=hidden,
        query_size=hidden,
        value_size=hidden,
        hid_in_features=hidden,
        mlm_in_features=hidden,
        nsp_in_features=hidden,
    )
    # Non-trivial LayerNorm parameters, so that a mix-up of ln weights would show.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".ln." in name:
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def write_checkpoint(folder: Path, model: nn.Module, vocab: list[str] = VOCAB) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    torch.save(model.state_dict(), folder / "pretrained.params")
    return folder


def zip_checkpoint(folder: Path, zip_path: Path) -> Path:
    """As the book ships it: the zip holds one folder with the two files."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("vocab.json", "pretrained.params"):
            zf.write(folder / name, f"{folder.name}/{name}")
    return zip_path


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[BERTModel, Path, Path]:
    book = book_model()
    folder = write_checkpoint(tmp_path / "bert.tiny.torch", book)
    return book, folder, zip_checkpoint(folder, tmp_path / "bert.tiny.torch.zip")


def padded_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    lengths = [11, 5, 8, 1]
    steps = 12
    ids = torch.full((len(lengths), steps), 1, dtype=torch.long)  # <pad>
    segs = torch.zeros((len(lengths), steps), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(5, len(VOCAB), (n,))
        ids[row, 0] = 3  # <cls>
        ids[row, n - 1] = 4  # <sep>
        segs[row, n // 2 : n] = 1
    mask = (torch.arange(steps)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids, segs, torch.tensor(lengths), mask


@pytest.mark.parametrize("which", ["folder", "parent", "zip"])
def test_loaded_model_matches_book(checkpoint, which: str) -> None:
    book, folder, zip_path = checkpoint
    source = {"folder": folder, "parent": folder.parent, "zip": zip_path}[which]
    config, state, vocab = load_d2l_checkpoint(source, num_heads=HEADS)
    assert config == D2LConfig(len(VOCAB), H, FFN, HEADS, LAYERS, MAX_LEN)
    assert vocab == VOCAB
    assert any(k.startswith("mlm.") for k in state) and any(k.startswith("nsp.") for k in state)

    model = D2LBertForSequenceClassification(config, num_labels=3)
    model.load_pretrained(state)
    model.eval()
    ids, segs, lens, mask = padded_batch()
    with torch.no_grad():
        expected = book.encoder(ids, segs, lens)
        expected_cls = book.hidden(expected[:, 0, :])
        got, attentions = model.encoder(ids, segs, lens, output_attentions=True)
        got_cls = model.hidden(got[:, 0, :])
        out = model(ids, token_type_ids=segs, attention_mask=mask, output_attentions=True)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got_cls, expected_cls, atol=1e-6)
    assert torch.allclose(out.logits, model.output(got_cls), atol=1e-6)
    assert out.logits.shape == (4, 3)
    assert len(attentions) == LAYERS and attentions[0].shape == (4, HEADS, 12, 12)
    assert float(attentions[0][1, :, :, 5:].abs().max()) < 1e-6  # padded keys get no weight
    assert torch.allclose(out.attentions[1], attentions[1])


def test_state_dict_keys_are_the_books() -> None:
    config = D2LConfig(len(VOCAB), H, FFN, HEADS, LAYERS, MAX_LEN)
    ours = D2LBertForSequenceClassification(config, num_labels=2).state_dict()
    book = book_model().state_dict()
    book_keys = {k for k in book if not k.startswith(("mlm.", "nsp."))}
    assert set(ours) - {"output.weight", "output.bias"} == book_keys
    for key in book_keys:
        assert ours[key].shape == book[key].shape, key
    assert "encoder.blks.1.attention.W_o.bias" in ours
    assert ours["encoder.pos_embedding"].shape == (1, MAX_LEN, H)


def test_defaults_and_classifier_head() -> None:
    config = D2LConfig(len(VOCAB), H, FFN, HEADS, LAYERS, MAX_LEN)
    model = D2LBertForSequenceClassification(config, num_labels=2).eval()
    assert float(model.output.bias.detach().abs().max()) == 0.0
    assert 0.005 < float(model.output.weight.detach().std()) < 0.05
    ids = torch.randint(5, len(VOCAB), (2, 7))
    with torch.no_grad():
        plain = model(ids).logits
        explicit = model(
            ids, token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids)
        ).logits
        no_mask, _ = model.encoder(ids, torch.zeros_like(ids), None)
    assert torch.allclose(plain, explicit, atol=1e-6)
    assert torch.allclose(plain, model.output(model.hidden(no_mask[:, 0])), atol=1e-6)
    with pytest.raises(ModelError, match="max_len"):
        model(torch.zeros((1, MAX_LEN + 1), dtype=torch.long))


def test_training_mode_backpropagates_to_pos_embedding() -> None:
    config = D2LConfig(len(VOCAB), H, FFN, HEADS, LAYERS, MAX_LEN)
    model = D2LBertForSequenceClassification(config, num_labels=2).train()
    ids, segs, _, mask = padded_batch()
    model(ids, token_type_ids=segs, attention_mask=mask).logits.sum().backward()
    assert model.encoder.pos_embedding.grad is not None
    assert model.encoder.blks[0].attention.W_q.weight.grad is not None


def test_default_num_heads_is_hidden_over_64(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", book_model(hidden=128))
    config, _, _ = load_d2l_checkpoint(folder)
    assert (config.num_hiddens, config.num_heads) == (128, 2)
    assert load_d2l_checkpoint(folder, num_heads=4)[0].num_heads == 4
    small_folder = write_checkpoint(tmp_path / "small", book_model())
    assert load_d2l_checkpoint(small_folder)[0].num_heads == 1  # under 64 wide: one head


def test_load_pretrained_reports_problems(checkpoint) -> None:
    _, folder, _ = checkpoint
    config, state, _ = load_d2l_checkpoint(folder, num_heads=HEADS)
    model = D2LBertForSequenceClassification(config, num_labels=2)
    broken = dict(state)
    del broken["encoder.blks.0.ffn.dense1.bias"]
    broken["encoder.blks.1.addnorm2.ln.weight"] = torch.ones(H + 1)
    with pytest.raises(ModelError) as info:
        model.load_pretrained(broken)
    message = str(info.value)
    assert "encoder.blks.0.ffn.dense1.bias" in message
    assert "encoder.blks.1.addnorm2.ln.weight" in message
    smaller = D2LBertForSequenceClassification(
        D2LConfig(len(VOCAB), H, FFN, HEADS, 1, MAX_LEN), num_labels=2
    )
    with pytest.raises(ModelError, match="unexpected: encoder.blks.1"):
        smaller.load_pretrained(state)


def test_tokenizer() -> None:
    tok = D2LTokenizer(VOCAB)
    assert (tok.unk_token_id, tok.pad_token_id, tok.cls_token_id, tok.sep_token_id) == (0, 1, 3, 4)
    assert tok.mask_token_id == 2
    ids = tok.encode_batch(["The  CAT sat\ton the mat .", "A zebra, the dog.", ""])
    assert tok.convert_ids_to_tokens(ids[0]) == ["the", "cat", "sat", "on", "the", "mat", "."]
    assert tok.convert_ids_to_tokens(ids[1]) == ["a", "<unk>", "the", "<unk>"]
    assert ids[2] == []
    assert tok.fingerprint() == D2LTokenizer(list(VOCAB)).fingerprint()
    assert tok.fingerprint() != D2LTokenizer(VOCAB + ["extra"]).fingerprint()
    with pytest.raises(ModelError, match="<cls>"):
        D2LTokenizer(["<unk>", "<pad>", "<sep>", "x"])


def test_tokenizer_save_load(tmp_path: Path) -> None:
    tok = D2LTokenizer(VOCAB + ["café"])
    tok.save(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "vocab.json").read_text(encoding="utf-8"))[-1] == "café"
    again = D2LTokenizer.load(tmp_path / "out")
    assert again.vocab == tok.vocab and again.fingerprint() == tok.fingerprint()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["vocab.json"]


def test_save_load_round_trip(checkpoint, tmp_path: Path) -> None:
    _, folder, _ = checkpoint
    config, state, vocab = load_d2l_checkpoint(folder, num_heads=HEADS)
    model = D2LBertForSequenceClassification(config, num_labels=3)
    model.load_pretrained(state)
    tokenizer = D2LTokenizer(vocab)
    out = tmp_path / "run"
    save_d2l_model(model, tokenizer, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "d2l_config.json",
        "model.safetensors",
        "vocab.json",
    ]
    assert json.loads((out / "d2l_config.json").read_text())["num_labels"] == 3
    loaded, loaded_tok = load_d2l_model(out)
    assert loaded.config == config and loaded.num_labels == 3
    assert loaded_tok.vocab == vocab
    ids, segs, _, mask = padded_batch()
    model.eval()
    loaded.eval()
    with torch.no_grad():
        a = model(ids, token_type_ids=segs, attention_mask=mask).logits
        b = loaded(ids, token_type_ids=segs, attention_mask=mask).logits
    assert torch.equal(a, b)


def test_load_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="d2l_config.json"):
        load_d2l_model(tmp_path)
    config = D2LConfig(len(VOCAB), H, FFN, HEADS, LAYERS, MAX_LEN)
    save_d2l_model(
        D2LBertForSequenceClassification(config, 2), D2LTokenizer(VOCAB), tmp_path / "run"
    )
    (tmp_path / "run" / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="model.safetensors"):
        load_d2l_model(tmp_path / "run")


def test_missing_params_is_model_error(checkpoint, tmp_path: Path) -> None:
    _, folder, _ = checkpoint
    (folder / "pretrained.params").unlink()
    with pytest.raises(ModelError, match="pretrained.params"):
        load_d2l_checkpoint(folder)
    with pytest.raises(ModelError):
        load_d2l_checkpoint(tmp_path / "nowhere")
    only_vocab = tmp_path / "only_vocab.zip"
    with zipfile.ZipFile(only_vocab, "w") as zf:
        zf.writestr("bert.tiny.torch/vocab.json", json.dumps(VOCAB))
    with pytest.raises(ModelError, match="only_vocab.zip"):
        load_d2l_checkpoint(only_vocab)


def test_malformed_checkpoints(checkpoint, tmp_path: Path) -> None:
    book, folder, _ = checkpoint
    bad = write_checkpoint(tmp_path / "bad_vocab", book, vocab=VOCAB[:-1])
    with pytest.raises(ModelError, match="vocab.json has 29 tokens"):
        load_d2l_checkpoint(bad)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "vocab.json").write_text(json.dumps(VOCAB))
    (garbage / "pretrained.params").write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="pretrained.params"):
        load_d2l_checkpoint(garbage)
    unsafe = tmp_path / "unsafe.zip"
    with zipfile.ZipFile(unsafe, "w") as zf:
        zf.write(folder / "vocab.json", "x/vocab.json")
        zf.write(folder / "pretrained.params", "x/pretrained.params")
        zf.writestr("../evil.txt", "boom")
    with pytest.raises(ModelError, match="unsafe"):
        load_d2l_checkpoint(unsafe)
    assert not is_d2l_checkpoint(unsafe)


def test_is_d2l_checkpoint(checkpoint, tmp_path: Path) -> None:
    _, folder, zip_path = checkpoint
    assert is_d2l_checkpoint(folder)
    assert is_d2l_checkpoint(folder.parent)  # the zip's extracted layout: one level down
    assert is_d2l_checkpoint(zip_path)
    assert is_d2l_checkpoint(str(zip_path))
    flat_zip = tmp_path / "flat.zip"
    with zipfile.ZipFile(flat_zip, "w") as zf:
        zf.write(folder / "vocab.json", "vocab.json")
        zf.write(folder / "pretrained.params", "pretrained.params")
    assert is_d2l_checkpoint(flat_zip)
    assert load_d2l_checkpoint(flat_zip, num_heads=HEADS)[2] == VOCAB

    assert not is_d2l_checkpoint(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not is_d2l_checkpoint(empty)
    (empty / "vocab.json").write_text("[]")
    assert not is_d2l_checkpoint(empty)
    not_zip = tmp_path / "model.zip"
    not_zip.write_bytes(b"hello")
    assert not is_d2l_checkpoint(not_zip)
    assert not is_d2l_checkpoint(folder / "vocab.json")
    deep = tmp_path / "deep.zip"
    with zipfile.ZipFile(deep, "w") as zf:
        zf.write(folder / "vocab.json", "a/b/vocab.json")
        zf.write(folder / "pretrained.params", "a/b/pretrained.params")
    assert not is_d2l_checkpoint(deep)
