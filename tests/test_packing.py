import numpy as np
import pytest

from bertfit.data.packing import (
    Packed,
    collate,
    length_grouped_batches,
    pack,
    pack_cached,
    pack_texts,
    sorted_batches,
    truncate_pair,
)


def seed_loop(a, b, budget):
    """The d2l seed's truncation, literally: pop from the longer until it fits."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        if len(a) > len(b):
            a.pop()
        else:
            b.pop()
    return a, b


@pytest.mark.parametrize(
    "la,lb,max_len",
    [(10, 3, 8), (3, 10, 8), (6, 6, 9), (7, 6, 10), (50, 49, 20), (1, 30, 6), (4, 4, 20)],
)
def test_longest_first_matches_seed_loop(la, lb, max_len):
    a, b = list(range(100, 100 + la)), list(range(200, 200 + lb))
    assert truncate_pair(a, b, max_len, "longest-first") == seed_loop(a, b, max_len - 3)


def test_longest_first_exact_tokens():
    a, b = [1, 2, 3, 4, 5, 6], [7, 8, 9]
    assert truncate_pair(a, b, 9, "longest-first") == ([1, 2, 3], [7, 8, 9])
    assert truncate_pair(a, b, 8, "longest-first") == ([1, 2, 3], [7, 8])


def test_proportional_keeps_the_ratio():
    a, b = list(range(30)), list(range(100, 110))
    ta, tb = truncate_pair(a, b, 23, "proportional")  # budget 20, ratio 3:1
    assert (ta, tb) == (a[:15], b[:5])


def test_single_text_truncation_and_head_tail():
    tokens = list(range(1000))
    assert truncate_pair(tokens, None, 12, "longest-first") == (tokens[:10], None)
    kept, _ = truncate_pair(tokens, None, 512, "head-tail")
    assert kept == tokens[:128] + tokens[-382:]
    kept, _ = truncate_pair(tokens, None, 257, "head-tail")  # scaled: 255 = 64 head + 191 tail
    assert kept == tokens[:64] + tokens[-191:]
    short = list(range(5))
    assert truncate_pair(short, None, 128, "head-tail") == (short, None)


def test_pack_segments():
    ids, types = pack([5, 6], [7], cls_id=2, sep_id=3)
    assert ids == [2, 5, 6, 3, 7, 3]
    assert types == [0, 0, 0, 0, 1, 1]
    ids, types = pack([5], None, cls_id=2, sep_id=3)
    assert (ids, types) == ([2, 5, 3], [0, 0, 0])


def make_packed(lengths):
    ids, types, offsets = [], [], [0]
    for n in lengths:
        ids += list(range(1, n + 1))
        types += [0] * n
        offsets.append(len(ids))
    return Packed(np.array(ids, np.int32), np.array(types, np.int8), np.array(offsets))


def test_collate_pads_to_batch_max_only():
    packed = make_packed([3, 7, 5, 40])
    batch = collate(packed, np.array([0, 1, 2]), pad_id=0, labels=np.array([1, 0, 1, 0]))
    assert batch["input_ids"].shape == (3, 7)
    assert batch["attention_mask"].sum(1).tolist() == [3, 7, 5]
    assert batch["input_ids"][0].tolist() == [1, 2, 3, 0, 0, 0, 0]
    assert batch["labels"].tolist() == [1, 0, 1]


def test_length_grouped_batches_group_lengths_and_cover_everything():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 120, size=2000)
    batches = length_grouped_batches(lengths, batch_size=16, seed=1)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(2000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_padded = sum(
        len(b) * lengths[b].max() for b in np.array_split(rng.permutation(2000), len(batches))
    )
    assert padded < 0.75 * random_padded  # far less padding than random batches
    assert [b.tolist() for b in length_grouped_batches(lengths, 16, seed=1)] == [
        b.tolist() for b in batches
    ]
    assert [b.tolist() for b in length_grouped_batches(lengths, 16, seed=2)] != [
        b.tolist() for b in batches
    ]


def test_sorted_batches_cover_all():
    lengths = np.array([5, 1, 9, 3])
    assert [b.tolist() for b in sorted_batches(lengths, 3)] == [[2, 0, 3], [1]]


class WordTokenizer:
    cls_token_id, sep_token_id, pad_token_id = 1, 2, 0

    def __init__(self):
        self.calls = 0

    def encode_batch(self, texts):
        self.calls += 1
        return [[10 + len(w) for w in t.split()] for t in texts]

    def fingerprint(self):
        return "words"


def test_pack_texts_respects_max_length_and_cache(tmp_path):
    tok = WordTokenizer()
    texts = ["a bb ccc dddd eeeee ffffff", "x"]
    pairs = ["gg hh", "y yy yyy"]
    packed = pack_texts(tok, texts, pairs, max_length=8, truncation="longest-first")
    assert packed.lengths.max() <= 8
    ids, types = packed.example(0)
    assert ids.tolist() == [1, 11, 12, 13, 2, 12, 12, 2]
    assert types.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    first = pack_cached(tok, texts, pairs, 8, "longest-first", tmp_path)
    calls = tok.calls
    again = pack_cached(tok, texts, pairs, 8, "longest-first", tmp_path)
    assert tok.calls == calls  # served from the cache
    assert again.ids.tolist() == first.ids.tolist() == packed.ids.tolist()
    pack_cached(tok, texts, pairs, 7, "longest-first", tmp_path)
    assert tok.calls > calls  # another max length is another cache entry


def test_fast_dropout_matches_dropout_statistics():
    import torch

    from bertfit.models.dropout import FastDropout

    torch.manual_seed(0)
    layer = FastDropout(0.1).train()
    x = torch.ones(200, 1000)
    y = layer(x)
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.9) < 0.005
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.9))
    assert abs(y.mean().item() - 1.0) < 0.01
    assert torch.equal(layer.eval()(x), x)
    odd = torch.ones(3, 5, 7)  # sizes not divisible by four
    assert layer.train()(odd).shape == odd.shape
