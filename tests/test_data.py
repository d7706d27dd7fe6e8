"""Tests of the data folder, manifest, checksums, loaders and the SciFact dev split.

Broken data is built in tmp_path from links to (or truncated copies of) the real files.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import pytest

from hcae import data as hcae_data
from hcae.data import files as data_files
from hcae.errors import DataError, RunConfigError


@pytest.fixture(autouse=True)
def checksum_cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the checksum cache out of the home folder and start every test with an empty memory."""
    cache_dir = tmp_path_factory.mktemp("hcae-cache")
    monkeypatch.setenv(hcae_data.CACHE_DIR_ENV, str(cache_dir))
    monkeypatch.setattr(data_files, "_checksum_memory", {})
    return cache_dir


def link_datasets(source: Path, target: Path, names: list[str]) -> Path:
    """Build a data folder in ``target`` whose files are symlinks to the manifest files of ``source``."""
    for name in names:
        for relative in hcae_data.load_manifest()[name].files:
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.symlink_to(source / relative)
    return target


def replace_with_bytes(data_root: Path, relative: str, content: bytes) -> Path:
    path = data_root / relative
    path.unlink()
    path.write_bytes(content)
    return path


# ---------------------------------------------------------------------------------------------
# data folder and manifest


def test_resolve_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(hcae_data.DATA_DIR_ENV, raising=False)
    assert hcae_data.resolve_data_dir() == Path("data")
    monkeypatch.setenv(hcae_data.DATA_DIR_ENV, str(tmp_path / "from-env"))
    assert hcae_data.resolve_data_dir() == tmp_path / "from-env"
    assert hcae_data.resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_manifest_matches_real_files(data_dir: Path) -> None:
    for spec in hcae_data.load_manifest().values():
        for relative, file_spec in spec.files.items():
            content = (data_dir / relative).read_bytes()
            assert len(content) == file_spec.bytes, relative
            assert hashlib.sha256(content).hexdigest() == file_spec.sha256, relative
            text = gzip.decompress(content) if relative.endswith(".gz") else content
            assert text.count(b"\n") - file_spec.header_lines == file_spec.rows, relative


def test_verify_data_dir_accepts_release(data_dir: Path) -> None:
    assert hcae_data.verify_data_dir(data_dir) == data_dir


# ---------------------------------------------------------------------------------------------
# checksum cache


def test_checksum_cache_skips_unchanged_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "file.txt"
    path.write_bytes(b"first content\n")
    hashed: list[Path] = []
    original = data_files._hash_file
    monkeypatch.setattr(data_files, "_hash_file", lambda p: hashed.append(p) or original(p))

    expected = hashlib.sha256(b"first content\n").hexdigest()
    assert hcae_data.file_sha256(path) == expected
    assert hcae_data.file_sha256(path) == expected
    assert len(hashed) == 1

    # a new process starts with an empty memory and reads the cache file
    monkeypatch.setattr(data_files, "_checksum_memory", {})
    assert hcae_data.file_sha256(path) == expected
    assert len(hashed) == 1


def test_checksum_cache_sees_same_size_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "file.txt"
    path.write_bytes(b"aaaa\n")
    before = path.stat()
    assert hcae_data.file_sha256(path) == hashlib.sha256(b"aaaa\n").hexdigest()

    # same size, and the modification time set back to the old value
    path.write_bytes(b"bbbb\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert hcae_data.file_sha256(path) == hashlib.sha256(b"bbbb\n").hexdigest()


# ---------------------------------------------------------------------------------------------
# broken files


def test_missing_file_names_it(data_dir: Path, tmp_path: Path) -> None:
    root = link_datasets(data_dir, tmp_path, ["stsb"])
    (root / "stsb" / "test.jsonl").unlink()
    with pytest.raises(DataError) as caught:
        hcae_data.load_stsb("validation", root)
    message = str(caught.value)
    assert str(root / "stsb" / "test.jsonl") in message
    assert "missing" in message
    assert "1379 rows" in message


def test_changed_file_reports_both_checksums(data_dir: Path, tmp_path: Path) -> None:
    root = link_datasets(data_dir, tmp_path, ["stsb"])
    content = bytearray((data_dir / "stsb" / "test.jsonl").read_bytes())
    content[100] = ord("X") if content[100] != ord("X") else ord("Y")
    replace_with_bytes(root, "stsb/test.jsonl", bytes(content))
    with pytest.raises(DataError) as caught:
        hcae_data.load_stsb("test", root)
    message = str(caught.value)
    assert "stsb/test.jsonl" in message
    assert hcae_data.load_manifest()["stsb"].files["stsb/test.jsonl"].sha256 in message
    assert hashlib.sha256(bytes(content)).hexdigest() in message


def test_truncated_file_reports_size(data_dir: Path, tmp_path: Path) -> None:
    root = link_datasets(data_dir, tmp_path, ["scifact"])
    content = (data_dir / "scifact" / "corpus.jsonl.gz").read_bytes()
    replace_with_bytes(root, "scifact/corpus.jsonl.gz", content[: len(content) // 2])
    with pytest.raises(DataError) as caught:
        hcae_data.load_scifact(root)
    message = str(caught.value)
    assert "scifact/corpus.jsonl.gz" in message
    assert f"{len(content) // 2} bytes, expected {len(content)}" in message


def test_truncated_gzip_without_verify(data_dir: Path, tmp_path: Path) -> None:
    root = link_datasets(data_dir, tmp_path, ["scifact"])
    content = (data_dir / "scifact" / "corpus.jsonl.gz").read_bytes()
    replace_with_bytes(root, "scifact/corpus.jsonl.gz", content[: len(content) // 2])
    with pytest.raises(DataError) as caught:
        hcae_data.load_scifact(root, verify=False)
    message = str(caught.value)
    assert "corpus.jsonl.gz is not a complete gzip stream" in message


def test_empty_file_without_verify(data_dir: Path, tmp_path: Path) -> None:
    root = link_datasets(data_dir, tmp_path, ["stsb"])
    replace_with_bytes(root, "stsb/test.jsonl", b"")
    with pytest.raises(DataError, match=r"test\.jsonl contains no rows, expected 1379"):
        hcae_data.load_stsb("test", root, verify=False)


def test_cut_last_line_names_line(data_dir: Path, tmp_path: Path) -> None:
    root = link_datasets(data_dir, tmp_path, ["stsb"])
    content = (data_dir / "stsb" / "test.jsonl").read_bytes()
    replace_with_bytes(root, "stsb/test.jsonl", content[:-40])
    with pytest.raises(DataError) as caught:
        hcae_data.load_stsb("test", root, verify=False)
    message = str(caught.value)
    assert "test.jsonl, line 1379: expected one JSON object" in message


def test_invalid_field_names_line_and_field(data_dir: Path, tmp_path: Path) -> None:
    root = link_datasets(data_dir, tmp_path, ["stsb"])
    lines = (data_dir / "stsb" / "test.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    lines[4] = lines[4].replace('"score": ', '"score": 1', 1)  # 2.5 becomes 12.5, outside 0-5
    replace_with_bytes(root, "stsb/test.jsonl", "".join(lines).encode())
    with pytest.raises(DataError) as caught:
        hcae_data.load_stsb("test", root, verify=False)
    message = str(caught.value)
    assert "line 5" in message
    assert "'score'" in message


def test_qrels_unknown_document(data_dir: Path, tmp_path: Path) -> None:
    root = link_datasets(data_dir, tmp_path, ["scifact"])
    content = (data_dir / "scifact" / "qrels" / "test.tsv").read_bytes()
    replace_with_bytes(root, "scifact/qrels/test.tsv", content + b"1\t999999999\t1\r\n")
    with pytest.raises(DataError) as caught:
        hcae_data.load_scifact(root, verify=False)
    message = str(caught.value)
    assert "qrels/test.tsv, line 341" in message
    assert "'999999999' is not in scifact/corpus.jsonl.gz" in message


def test_missing_folder_offline_names_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as caught:
        hcae_data.load_stsb("test", tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "stsb") in message
    assert "HF_HUB_OFFLINE" in message
    assert "mteb/stsbenchmark-sts" in message


def test_missing_folder_without_hub_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no hub source"):
        hcae_data.load_mrpc(tmp_path)


# ---------------------------------------------------------------------------------------------
# loaders on the real data


def test_loaders_return_manifest_row_counts(data_dir: Path) -> None:
    files = {path: spec for dataset in hcae_data.load_manifest().values() for path, spec in dataset.files.items()}
    for split in hcae_data.STSB_SPLITS:
        assert len(hcae_data.load_stsb(split, data_dir)) == files[f"stsb/{split}.jsonl"].rows
    assert len(hcae_data.load_sick("train", data_dir)) == files["sick/train.jsonl"].rows
    assert len(hcae_data.load_sick("validation", data_dir)) == files["sick/validation.jsonl"].rows
    assert len(hcae_data.load_mrpc(data_dir)) == files["mrpc/train.jsonl"].rows
    assert len(hcae_data.load_snli_pairs(data_dir)) == files["nli/snli_pairs.jsonl.gz"].rows
    assert len(hcae_data.load_snli_triplets(data_dir)) == files["nli/snli_triplets.jsonl.gz"].rows


def test_stsb_columns_and_scaling(data_dir: Path) -> None:
    raw = hcae_data.load_stsb("validation", data_dir)
    scaled = hcae_data.load_stsb("validation", data_dir, normalize_scores=True)
    assert raw.column_names == ["sentence1", "sentence2", "score"]
    assert max(raw["score"]) == 5.0
    assert max(scaled["score"]) == 1.0
    assert scaled["score"][0] == pytest.approx(raw["score"][0] / 5)


def test_stsb_unknown_split_raises() -> None:
    with pytest.raises(RunConfigError, match="validation"):
        hcae_data.load_stsb("dev")


def test_snli_triplets_have_loss_columns(data_dir: Path) -> None:
    triplets = hcae_data.load_snli_triplets(data_dir)
    assert triplets.column_names == ["anchor", "positive", "negative"]


def test_unlabelled_sentences_scifact_flag(data_dir: Path) -> None:
    general = hcae_data.load_unlabelled_sentences(data_dir)
    combined = hcae_data.load_unlabelled_sentences(data_dir, include_scifact_corpus=True)
    assert len(general) == 181862
    assert len(combined) == 181862 + 45952
    assert "scifact_corpus" not in set(general["source"])
    assert combined["source"][-1] == "scifact_corpus"


def test_scifact_counts(data_dir: Path) -> None:
    scifact = hcae_data.load_scifact(data_dir)
    assert len(scifact.corpus) == 5183
    assert len(scifact.queries) == 1109
    assert len(scifact.qrels["train"]) == 809
    assert len(scifact.qrels["test"]) == 300
    assert sum(len(docs) for docs in scifact.qrels["test"].values()) == 339


def test_document_text_matches_mteb() -> None:
    from datasets import Dataset
    from mteb._create_dataloaders import _retrieval_texts
    from mteb.types import PromptType

    rows = {"id": ["1", "2", "3"], "title": ["A title", "", "Title"], "text": ["Body text.", "  Only body. ", "x "]}
    expected = _retrieval_texts(Dataset.from_dict(rows), PromptType.document)
    ours = [hcae_data.document_text(title, text) for title, text in zip(rows["title"], rows["text"], strict=True)]
    assert ours == expected


# ---------------------------------------------------------------------------------------------
# SciFact dev split


def test_dev_split_partitions_train_queries(data_dir: Path) -> None:
    scifact = hcae_data.load_scifact(data_dir)
    split = hcae_data.scifact_train_split(scifact)
    dev, train, duplicates = set(split.dev_query_ids), set(split.train_query_ids), set(split.duplicate_query_ids)
    assert len(dev) == hcae_data.SCIFACT_DEV_QUERIES
    assert len(train) + len(duplicates) == 809 - hcae_data.SCIFACT_DEV_QUERIES
    assert not dev & train
    assert not dev & duplicates
    assert dev | train | duplicates == set(scifact.qrels["train"])
    assert not dev & set(scifact.qrels["test"])


def test_dev_claims_never_in_training(data_dir: Path) -> None:
    scifact = hcae_data.load_scifact(data_dir)
    split = hcae_data.scifact_train_split(scifact)
    dev_texts = {scifact.queries[query_id] for query_id in split.dev_query_ids}
    assert not dev_texts & {scifact.queries[query_id] for query_id in split.train_query_ids}
    for query_id in split.duplicate_query_ids:
        assert scifact.queries[query_id] in dev_texts


def test_dev_split_moves_duplicate_claims() -> None:
    ids = [str(number) for number in range(20)]
    texts = {query_id: f"claim {query_id}" for query_id in ids}
    plain = hcae_data.split_scifact_train_queries(ids, dev_size=5, seed=1)
    twin_of_dev = next(query_id for query_id in ids if query_id not in plain.dev_query_ids)
    texts[twin_of_dev] = texts[plain.dev_query_ids[0]]
    with_texts = hcae_data.split_scifact_train_queries(ids, dev_size=5, seed=1, query_texts=texts)
    assert with_texts.dev_query_ids == plain.dev_query_ids
    assert with_texts.duplicate_query_ids == (twin_of_dev,)
    assert twin_of_dev not in with_texts.train_query_ids


def test_dev_split_is_deterministic() -> None:
    ids = [str(number) for number in range(0, 1000, 3)]
    first = hcae_data.split_scifact_train_queries(ids, dev_size=50, seed=7)
    shuffled = hcae_data.split_scifact_train_queries(list(reversed(ids)), dev_size=50, seed=7)
    other_seed = hcae_data.split_scifact_train_queries(ids, dev_size=50, seed=8)
    assert first == shuffled
    assert first.dev_query_ids != other_seed.dev_query_ids
    assert list(first.dev_query_ids) == sorted(first.dev_query_ids, key=int)


def test_dev_split_rejects_bad_size() -> None:
    with pytest.raises(RunConfigError):
        hcae_data.split_scifact_train_queries(["1", "2", "3"], dev_size=3)
    with pytest.raises(RunConfigError):
        hcae_data.split_scifact_train_queries(["1", "2", "3"], dev_size=0)


def test_train_pairs_leave_out_dev_queries(data_dir: Path) -> None:
    scifact = hcae_data.load_scifact(data_dir)
    split = hcae_data.scifact_train_split(scifact)
    pairs = hcae_data.load_scifact_train_pairs(data_dir)
    assert pairs.column_names == ["query", "document"]
    pair_queries = set(pairs["query"])
    assert pair_queries == {scifact.queries[query_id] for query_id in split.train_query_ids}
    assert not pair_queries & {scifact.queries[query_id] for query_id in split.dev_query_ids}
    expected_rows = sum(len(scifact.qrels["train"][query_id]) for query_id in split.train_query_ids)
    assert len(pairs) == expected_rows
