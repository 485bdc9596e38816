"""GPT sample indexing: token coverage, packing, determinism, caching, splits and dataset building."""

import os

import numpy as np
import pytest

from megatron_lite.config.schema import DataConfig
from megatron_lite.config.validators import parse_split
from megatron_lite.data import gpt_dataset as gd
from megatron_lite.data.blendable_dataset import weights_by_num_documents
from megatron_lite.data.data_utils import (
    build_train_valid_test_datasets,
    train_valid_test_num_samples,
)
from megatron_lite.data.gpt_dataset import GPT2Dataset, train_iters_from_epochs
from megatron_lite.data.indexed_dataset import MMapIndexedDataset, MMapIndexedDatasetBuilder
from megatron_lite.data.splits import split_boundaries

SEQ = 16


def write_dataset(prefix, docs, dtype=np.int32):
    """Write ``docs`` (lists of token ids) as ``prefix``.bin/.idx, one item per document."""
    builder = MMapIndexedDatasetBuilder(str(prefix) + ".bin", dtype=dtype)
    for doc in docs:
        builder.add_item(np.asarray(doc, dtype=dtype))
        builder.end_document()
    builder.finalize(str(prefix) + ".idx")
    return str(prefix)


def unique_token_docs(n_docs, seed=0, max_len=40):
    """Documents whose tokens are all distinct (token = its global position), lengths 1..max_len."""
    lengths = np.random.RandomState(seed).randint(1, max_len, size=n_docs)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return [list(range(s, s + n)) for s, n in zip(starts, lengths)]


@pytest.fixture
def corpus(tmp_path):
    docs = unique_token_docs(60)
    prefix = write_dataset(tmp_path / "corpus_text_document", docs)
    return prefix, docs, MMapIndexedDataset(prefix)


def make(prefix, data, num_samples, documents=None, seq=SEQ, seed=1234, **kw):
    documents = np.arange(len(data.sizes)) if documents is None else documents
    return GPT2Dataset("train", prefix, documents, data, num_samples, seq, seed, **kw)


def gpt_neox_sample_idx(sizes, doc_idx, seq_length, num_epochs, tokens_per_epoch):
    """GPT-NeoX's reference loop (helpers.cpp / _build_sample_idx), to check the vectorised one."""
    num_samples = (num_epochs * tokens_per_epoch - 1) // seq_length
    out = np.zeros([num_samples + 1, 2], dtype=np.int64)
    doc_i, offset = 0, 0
    for k in range(1, num_samples + 1):
        remaining = seq_length + 1
        while remaining != 0:
            length = sizes[doc_idx[doc_i]] - offset
            remaining -= length
            if remaining <= 0:
                offset += remaining + length - 1
                remaining = 0
            else:
                doc_i, offset = doc_i + 1, 0
        out[k] = (doc_i, offset)
    return out


def test_vectorised_index_matches_gpt_neox_loop():
    rs = np.random.RandomState(0)
    for trial in range(200):
        n = rs.randint(1, 25)
        sizes = rs.randint(0, 20, size=n).astype(np.int32)  # empty documents included
        sizes[rs.randint(n)] += 1
        docs = np.arange(n)
        seq, wanted = rs.randint(1, 25), rs.randint(0, 60)
        tokens = gd.num_tokens(docs, sizes)
        epochs = gd.num_epochs_needed(tokens, seq, wanted)
        # The closed form is GPT-NeoX's "add epochs until enough samples" loop.
        assert (epochs * tokens - 1) // seq >= wanted
        assert epochs == 1 or ((epochs - 1) * tokens - 1) // seq < wanted
        doc_idx = gd.build_doc_idx(docs, epochs, np.random.RandomState(trial))
        got = gd.build_sample_idx(sizes, doc_idx, seq, epochs, tokens)
        assert np.array_equal(got, gpt_neox_sample_idx(sizes, doc_idx, seq, epochs, tokens))


@pytest.mark.parametrize("num_samples", [10, 150])  # 1 epoch, then several
def test_every_token_used_once_per_epoch(corpus, num_samples):
    prefix, docs, data = corpus
    ds = make(prefix, data, num_samples)
    assert len(ds) >= num_samples
    total = sum(len(d) for d in docs)
    inputs = np.concatenate([ds[i]["text"][:-1] for i in range(len(ds))])
    counts = np.bincount(inputs, minlength=total)
    epochs = ds.num_epochs
    assert (num_samples == 10) == (epochs == 1)
    # Every token is an input `epochs` times, except the < seq_length tail of the last epoch
    # that no full sample reaches.
    assert set(np.unique(counts)) <= {epochs, epochs - 1}
    assert np.sum(counts == epochs - 1) == epochs * total - len(ds) * SEQ < SEQ + 1


def test_samples_are_packed_across_documents(corpus):
    prefix, docs, data = corpus
    ds = make(prefix, data, 40)
    stream = np.concatenate([docs[d] for d in ds.doc_idx])  # documents in the dataset's order
    crossing = 0
    for i in range(len(ds)):
        k = int(ds.shuffle_idx[i])
        text = ds[i]["text"]
        assert text.dtype == np.int64 and text.shape == (SEQ + 1,)
        assert np.array_equal(text, stream[k * SEQ: k * SEQ + SEQ + 1])
        crossing += int(ds.sample_idx[k][0] != ds.sample_idx[k + 1][0])
    assert crossing > len(ds) // 2  # most samples span a document boundary
    assert sorted(np.asarray(ds.shuffle_idx).tolist()) == list(range(len(ds)))


def test_deterministic_across_runs_and_seed_dependent(corpus, tmp_path):
    prefix, _, data = corpus
    os.makedirs(tmp_path / "a")
    os.makedirs(tmp_path / "b")
    a = make(prefix, data, 50, cache_dir=str(tmp_path / "a"), seed=7)
    b = make(prefix, data, 50, cache_dir=str(tmp_path / "b"), seed=7)
    assert a.built_index and b.built_index
    for name in ("doc_idx", "sample_idx", "shuffle_idx"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert all(np.array_equal(a[i]["text"], b[i]["text"]) for i in range(len(a)))
    c = make(prefix, data, 50, seed=8)
    assert not np.array_equal(a.shuffle_idx, c.shuffle_idx)


def test_same_arrays_as_gpt_neox_for_the_seed(corpus):
    prefix, _, data = corpus
    ds = make(prefix, data, 50, seed=99)
    # GPT-NeoX: one RandomState(seed); mgrid-tiled documents shuffled, then arange(n) shuffled.
    rng = np.random.RandomState(seed=99)
    doc_idx = np.mgrid[0:ds.num_epochs, 0:len(data.sizes)][1].reshape(-1).astype(np.int32)
    rng.shuffle(doc_idx)
    shuffle_idx = np.arange(len(ds), dtype=np.uint32)
    rng.shuffle(shuffle_idx)
    assert np.array_equal(ds.doc_idx, doc_idx)
    assert np.array_equal(ds.shuffle_idx, shuffle_idx)


def test_cache_is_reused_and_invalidated(corpus, monkeypatch):
    prefix, _, data = corpus
    first = make(prefix, data, 30)
    assert first.built_index
    paths = list(first.cache_paths.values())
    assert all(os.path.dirname(p) == os.path.dirname(prefix) for p in paths)  # next to the data
    mtimes = [os.stat(p).st_mtime_ns for p in paths]
    # A second dataset with the same parameters must load, not build: building would now fail.
    real_build = gd.build_index_arrays

    def no_build(*args, **kwargs):
        raise AssertionError("index rebuilt although it is cached")

    monkeypatch.setattr(gd, "build_index_arrays", no_build)
    again = make(prefix, data, 30)
    assert not again.built_index
    assert [os.stat(p).st_mtime_ns for p in paths] == mtimes
    assert np.array_equal(again.shuffle_idx, first.shuffle_idx)
    monkeypatch.setattr(gd, "build_index_arrays", real_build)
    # Anything the arrays depend on gives new files.
    for changed in (dict(num_samples=200), dict(seq=SEQ + 1), dict(seed=1)):
        kwargs = {"num_samples": 30, **changed}
        ds = make(prefix, data, **kwargs)
        assert ds.built_index and set(ds.cache_paths.values()).isdisjoint(paths)
    half = make(prefix, data, 30, documents=np.arange(30))
    assert half.built_index and set(half.cache_paths.values()).isdisjoint(paths)
    # No temporary files are left behind by the atomic writes.
    assert not [f for f in os.listdir(os.path.dirname(prefix)) if f.startswith(".tmp_")]


def test_cache_changes_when_the_data_changes(tmp_path):
    p1 = write_dataset(tmp_path / "one", [[1, 2, 3, 4, 5]] * 10)
    a = make(p1, MMapIndexedDataset(p1), 5, seq=4)
    write_dataset(tmp_path / "one", [[1, 2, 3]] * 10)  # re-preprocessed under the same prefix
    b = make(p1, MMapIndexedDataset(p1), 5, seq=4)
    assert b.built_index and b.cache_paths != a.cache_paths


def test_train_epochs_one_epoch_and_iterations(corpus):
    prefix, docs, data = corpus
    ds = make(prefix, data, None, num_epochs=1)
    total = sum(len(d) for d in docs)
    assert ds.num_epochs == 1 and len(ds) == (total - 1) // SEQ
    assert train_iters_from_epochs(len(ds), 3, 8) == (len(ds) * 3) // 8
    with pytest.raises(ValueError, match="less than one global batch"):
        train_iters_from_epochs(5, 1, 8)


def test_label_dataset_is_served_in_sync(tmp_path):
    docs = unique_token_docs(20, seed=1)
    labels = [[t if t % 3 else -100 for t in d] for d in docs]
    prefix = write_dataset(tmp_path / "sft_text_document", docs)
    label_prefix = write_dataset(tmp_path / "sft_label_document", labels)
    data, label_data = MMapIndexedDataset(prefix), MMapIndexedDataset(label_prefix)
    ds = make(prefix, data, 10, label_dataset=label_data)
    for i in range(len(ds)):
        text, label = ds[i]["text"], ds[i]["label"]
        assert np.array_equal(np.where(text % 3 == 0, -100, text), label)
    other = MMapIndexedDataset(write_dataset(tmp_path / "bad", [[1]] * 20))
    with pytest.raises(ValueError, match="label dataset"):
        make(prefix, data, 10, label_dataset=other)


# ---- splits and build_train_valid_test_datasets ---------------------------------------------


def gpt_neox_split(split, size):
    """GPT-NeoX's get_train_valid_test_split_, to compare boundaries with."""
    splits = [float(s) for s in split.replace("/", ",").split(",")]
    splits = (splits + [0.0, 0.0])[:3]
    splits = [s / sum(splits) for s in splits]
    index = [0]
    for s in splits:
        index.append(index[-1] + int(round(s * float(size))))
    diff = index[-1] - size
    return [index[0]] + [i - diff for i in index[1:]]


@pytest.mark.parametrize("split", ["969,30,1", "8,1,1", "1/1/1", "100", "98,2", "0.7,0.2,0.1", "1,0,0"])
@pytest.mark.parametrize("size", [1, 7, 10, 1000, 12345])
def test_split_boundaries_match_gpt_neox(split, size):
    bounds = split_boundaries(split, size)
    assert bounds == gpt_neox_split(split, size)
    assert bounds[0] == 0 and bounds[-1] == size and bounds == sorted(bounds)


@pytest.mark.parametrize("bad", ["", "a,b,c", "1,2,3,4", "0,0,0", "-1,2,3", "1;2;3", "1,,2"])
def test_bad_split_strings_are_named(bad):
    with pytest.raises(ValueError, match="split"):
        parse_split(bad)


def test_num_samples_as_gpt_neox():
    assert train_valid_test_num_samples(100, 10, 5, 8) == (800, 440, 40)
    assert train_valid_test_num_samples(1000, 1000, 100, 4) == (4000, 800, 400)


def _cfg(**kw):
    return DataConfig(**kw)  # the typed data config the trainer passes


def test_data_path_split_gives_disjoint_document_ranges(corpus):
    prefix, docs, _ = corpus
    train, valid, test = build_train_valid_test_datasets(_cfg(data_path=prefix, split="8,1,1"), SEQ, 1, (40, 8, 8))
    assert len(train) >= 40 and len(valid) >= 8 and len(test) >= 8
    owner = np.concatenate([np.full(len(d), i) for i, d in enumerate(docs)])  # token -> document
    seen = {}
    for name, ds in (("train", train), ("valid", valid), ("test", test)):
        tokens = np.concatenate([ds[i]["text"] for i in range(len(ds))])
        seen[name] = set(owner[tokens].tolist())
    assert max(seen["train"]) < min(seen["valid"]) and max(seen["valid"]) < min(seen["test"])
    assert seen["train"] == set(range(48)) and seen["test"] == set(range(54, 60))
    # A split with no documents is None.
    _, _, no_test = build_train_valid_test_datasets(_cfg(data_path=prefix, split="9,1,0"), SEQ, 1, (4, 4, 4))
    assert no_test is None


def test_separate_paths_blend_by_weight_and_by_documents(tmp_path):
    a = write_dataset(tmp_path / "a", [[1] * 50] * 40)  # every token says which dataset it is from
    b = write_dataset(tmp_path / "b", [[2] * 50] * 10)
    n = 2000
    cfg = _cfg(train_data_paths=[a, b], train_data_weights=[3, 1], valid_data_paths=[b])
    train, valid, test = build_train_valid_test_datasets(cfg, 8, 1, (n, 10, 10))
    assert test is None and len(valid) >= 10
    share_a = np.mean([train[i]["text"][0] == 1 for i in range(n)])
    assert abs(share_a - 0.75) < 0.01
    by_docs = _cfg(train_data_paths=[a, b], weight_by_num_documents=True, weighted_sampler_alpha=0.3)
    train, _, _ = build_train_valid_test_datasets(by_docs, 8, 1, (n, 0, 0))
    share_a = np.mean([train[i]["text"][0] == 1 for i in range(n)])
    assert abs(share_a - weights_by_num_documents([40, 10], 0.3)[0]) < 0.01


def test_label_paths_and_config_errors(tmp_path, corpus):
    prefix, _, _ = corpus
    with pytest.raises(FileNotFoundError, match="nowhere/corpus"):
        build_train_valid_test_datasets(_cfg(data_path=str(tmp_path / "nowhere/corpus")), SEQ, 1, (1, 1, 1))
    with pytest.raises(FileNotFoundError, match="train_data_paths.*missing_prefix"):
        build_train_valid_test_datasets(_cfg(train_data_paths=[str(tmp_path / "missing_prefix")]), SEQ, 1, (1, 0, 0))
    with pytest.raises(ValueError, match="train_data_weights has 1 entries but train_data_paths has 2"):
        build_train_valid_test_datasets(_cfg(train_data_paths=[prefix, prefix], train_data_weights=[1]), SEQ, 1, (1, 0, 0))
    with pytest.raises(ValueError, match="bad split"):
        build_train_valid_test_datasets(_cfg(data_path=prefix, split="90-10"), SEQ, 1, (1, 1, 1))
    with pytest.raises(ValueError, match="no training data"):
        build_train_valid_test_datasets(_cfg(), SEQ, 1, (1, 1, 1))
    train, _, _ = build_train_valid_test_datasets(
        _cfg(train_data_paths=[prefix], train_label_data_paths=[prefix]), SEQ, 1, (5, 0, 0))
    assert np.array_equal(train[0]["text"], train[0]["label"])
    # train_epochs: None samples means exactly one epoch of each split.
    one_epoch, _, _ = build_train_valid_test_datasets(_cfg(data_path=prefix, split="1"), SEQ, 1, (None, None, None))
    assert one_epoch.num_epochs == 1


def test_read_only_data_directory_names_the_key_and_data_cache_dir_is_used(tmp_path, corpus, monkeypatch):
    """A data directory the run cannot write to (made so from outside: mkstemp refused there)
    is one error naming data_cache_dir; with data_cache_dir set, the caches go there."""
    import tempfile

    prefix, _, _ = corpus
    real_mkstemp = tempfile.mkstemp

    def read_only_data_dir(*args, dir=None, **kwargs):
        if os.path.abspath(dir) == os.path.dirname(os.path.abspath(prefix)):
            raise PermissionError(13, "Permission denied")
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only_data_dir)
    with pytest.raises(ValueError, match="cannot write the sample index cache in .*Permission denied.*set data_cache_dir"):
        build_train_valid_test_datasets(_cfg(data_path=prefix, split="8,1,1"), SEQ, 1, (10, 2, 2))
    cache = tmp_path / "caches"
    train, _, _ = build_train_valid_test_datasets(
        _cfg(data_path=prefix, split="8,1,1", data_cache_dir=str(cache)), SEQ, 1, (10, 2, 2))
    assert len(train) >= 10 and any(cache.glob("*_shuffle_idx.npy"))


def test_a_token_id_beyond_the_vocabulary_is_refused_when_the_dataset_opens(tmp_path):
    prefix = write_dataset(tmp_path / "c", [[1, 2, 3], [4, 5], [6, 700, 8]])
    with pytest.raises(ValueError, match=r"data_path: .*c\.bin holds token id 700 \(sequence 2\), but the "
                                         r"model's vocabulary has 512 rows"):
        build_train_valid_test_datasets(_cfg(data_path=prefix, split="1"), SEQ, 1, (4, 0, 0), vocab_size=512)
    train, _, _ = build_train_valid_test_datasets(_cfg(data_path=prefix, split="1"), SEQ, 1, (4, 0, 0),
                                                  vocab_size=701)
    assert train is not None
