"""The data folder: its manifest, checksums, verification, hub download and row readers.

Every file the loaders read is listed in ``hcae/data_manifest.json`` with its sha256, size and
row count. Files are compared with it before they are parsed, and rows are validated while they
are parsed. Every problem raises a :class:`~hcae.errors.DataError` that names the file, and the
line for a bad row.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from datasets import Dataset

from hcae.errors import DataError, RunConfigError

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "HCAE_DATA_DIR"
DEFAULT_DATA_DIR = Path("data")
CACHE_DIR_ENV = "HCAE_CACHE_DIR"
MANIFEST_PATH = Path(__file__).parents[1] / "data_manifest.json"
# written next to the files of a dataset folder that hcae downloaded from the hub
DOWNLOAD_RECORD_NAME = "SOURCE.json"
STSB_SPLITS = ("train", "validation", "test")

FIX_HINT = (
    "Restore the file from the data release (hcae/data_manifest.json lists its sha256), or point "
    f"--data-dir or {DATA_DIR_ENV} at an intact data folder."
)


# ---------------------------------------------------------------------------------------------
# data folder and manifest


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """Return the data folder: ``data_dir`` if given, else ``$HCAE_DATA_DIR``, else ``./data``."""
    if data_dir is not None:
        return Path(data_dir)
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured) if configured else DEFAULT_DATA_DIR


@dataclass(frozen=True)
class FileSpec:
    """One manifest entry: a file path relative to the data folder and its expected content."""

    path: str
    sha256: str
    bytes: int
    rows: int
    header_lines: int


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset folder of the manifest; ``hub_id`` is set where hcae can download it."""

    name: str
    description: str
    files: dict[str, FileSpec]
    hub_id: str | None = None
    hub_revision: str | None = None


@cache
def load_manifest() -> dict[str, DatasetSpec]:
    """Read ``hcae/data_manifest.json`` into one :class:`DatasetSpec` per dataset folder."""
    raw = json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))
    specs = {}
    for name, entry in raw["datasets"].items():
        files = {path: FileSpec(path=path, **fields) for path, fields in entry["files"].items()}
        specs[name] = DatasetSpec(
            name=name,
            description=entry["description"],
            files=files,
            hub_id=entry.get("hub_id"),
            hub_revision=entry.get("hub_revision"),
        )
    return specs


def _dataset_spec(name: str) -> DatasetSpec:
    specs = load_manifest()
    if name not in specs:
        raise RunConfigError(f"Unknown dataset {name!r}: valid names are {', '.join(specs)}.")
    return specs[name]


# ---------------------------------------------------------------------------------------------
# checksums, cached by file identity


def _cache_dir() -> Path:
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "hcae"


_checksum_memory: dict[str, dict[str, Any]] = {}


def _load_checksum_cache(cache_file: Path) -> dict[str, dict[str, Any]]:
    if not _checksum_memory and cache_file.is_file():
        try:
            _checksum_memory.update(json.loads(cache_file.read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            logger.debug("ignoring unreadable checksum cache %s: %s", cache_file, error)
    return _checksum_memory


def _save_checksum_cache(cache_file: Path, entries: dict[str, dict[str, Any]]) -> None:
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache_file, json.dumps(entries, indent=1))
    except OSError as error:
        logger.debug("could not write checksum cache %s: %s", cache_file, error)


def file_sha256(path: Path) -> str:
    """Return the sha256 of a file, reusing a cached digest while the file is unchanged.

    A cached digest is reused only while the file's size, mtime, ctime, inode and device all
    equal the values recorded with it. Any write to the file changes its ctime, which no tool
    can set back, so a changed file is always hashed again. The cache lives in
    ``$HCAE_CACHE_DIR`` (default ``~/.cache/hcae``); without write access it stays in memory.
    """
    stat = path.stat()
    signature = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]
    key = str(path.resolve())
    cache_file = _cache_dir() / "checksums.json"
    entries = _load_checksum_cache(cache_file)
    entry = entries.get(key)
    if entry is not None and entry.get("signature") == signature:
        return str(entry["sha256"])

    sha256 = _hash_file(path)
    entries[key] = {"signature": signature, "sha256": sha256}
    _save_checksum_cache(cache_file, entries)
    return sha256


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# verification and download


def _offline() -> bool:
    return any(
        os.environ.get(variable, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _expected_digests(folder: Path, spec: DatasetSpec) -> dict[str, str]:
    """Return the sha256 each file must have: from the manifest, or from the download record."""
    record_path = folder / DOWNLOAD_RECORD_NAME
    if not record_path.is_file():
        return {path: file.sha256 for path, file in spec.files.items()}
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        return {path: str(record["files"][path]) for path in spec.files}
    except (OSError, ValueError, KeyError) as error:
        raise DataError(
            f"Download record {record_path} is unreadable or incomplete ({error}). Delete the "
            f"folder {folder} to download it again, or replace it with the folder from the data release."
        ) from error


def verify_file(data_dir: Path, spec: FileSpec, expected_sha256: str, downloaded: bool) -> Path:
    """Raise DataError unless the file exists and has the expected size and sha256; return its path."""
    path = data_dir / spec.path
    if not path.is_file():
        raise DataError(
            f"Data file {path} is missing. The data folder {data_dir} must contain {spec.path} "
            f"({spec.bytes} bytes, {spec.rows} rows). {FIX_HINT}"
        )
    size = path.stat().st_size
    # a downloaded file is written by hcae and has no fixed size in the manifest
    if not downloaded and size != spec.bytes:
        raise DataError(
            f"Data file {path} has {size} bytes, expected {spec.bytes}: the file is truncated or "
            f"was changed. {FIX_HINT}"
        )
    found = file_sha256(path)
    if found != expected_sha256:
        raise DataError(
            f"Data file {path} has sha256 {found}, expected {expected_sha256}: the file was changed "
            f"or damaged. {FIX_HINT}"
        )
    return path


def verify_dataset(name: str, data_dir: str | Path | None = None) -> Path:
    """Check every file of one dataset against the manifest; download the folder if it is absent.

    Returns the data folder. A folder that hcae downloaded is checked against the sha256 values
    recorded at download time, and its row counts against the manifest when it is parsed.
    """
    root = resolve_data_dir(data_dir)
    spec = _dataset_spec(name)
    folder = root / name
    if not folder.is_dir():
        _download_dataset(spec, root)
    expected = _expected_digests(folder, spec)
    downloaded = (folder / DOWNLOAD_RECORD_NAME).is_file()
    for path, file_spec in spec.files.items():
        verify_file(root, file_spec, expected[path], downloaded)
    return root


def verify_data_dir(data_dir: str | Path | None = None) -> Path:
    """Check every file of every dataset in the manifest; return the data folder."""
    root = resolve_data_dir(data_dir)
    for name in load_manifest():
        verify_dataset(name, root)
    return root


def data_fingerprint(relative_paths: list[str], data_dir: str | Path | None = None) -> str:
    """Return a short digest of the current content of data files (paths relative to the data folder).

    Evaluation stores it as the dataset revision in mteb's result files, so results computed on
    changed data never look like results on the release.
    """
    root = resolve_data_dir(data_dir)
    digest = hashlib.sha256()
    for path in sorted(relative_paths):
        digest.update(f"{path}\0{file_sha256(root / path)}\n".encode())
    return digest.hexdigest()[:16]


def _download_dataset(spec: DatasetSpec, root: Path) -> None:
    folder = root / spec.name
    provide = (
        f"Provide the folder: copy {spec.name}/ from the data release into {root}, or point "
        f"--data-dir or {DATA_DIR_ENV} at a data folder that contains it."
    )
    if spec.hub_id is None:
        raise DataError(f"Dataset folder {folder} not found, and hcae has no hub source for it. {provide}")
    if _offline():
        raise DataError(
            f"Dataset folder {folder} not found, and downloading {spec.hub_id} from the Hugging Face "
            f"hub is disabled because HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set. {provide}"
        )
    logger.info("dataset folder %s not found: downloading %s@%s", folder, spec.hub_id, spec.hub_revision)
    partial = root / f".{spec.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _write_hub_dataset(spec, partial)
    except Exception as error:  # the hub client raises many unrelated types for network failures
        shutil.rmtree(partial, ignore_errors=True)
        raise DataError(f"Downloading {spec.hub_id} into {folder} failed ({error}). {provide}") from error
    record = {
        "hub_id": spec.hub_id,
        "hub_revision": spec.hub_revision,
        "files": {path: file_sha256(partial / Path(path).relative_to(spec.name)) for path in spec.files},
    }
    write_text_atomic(partial / DOWNLOAD_RECORD_NAME, json.dumps(record, indent=2))
    partial.rename(folder)


def _write_hub_dataset(spec: DatasetSpec, folder: Path) -> None:
    # NOTE: untested, because the tests run offline. The config names (default, corpus, queries)
    # follow mteb's retrieval loader, and the columns were not checked against the hub copies.
    from datasets import load_dataset

    def fetch(config: str, split: str) -> Dataset:
        splits = load_dataset(spec.hub_id, config, revision=spec.hub_revision)
        # a corpus or queries config has one split, whatever its name
        return splits[split] if split in splits else next(iter(splits.values()))

    def write_jsonl(path: Path, rows: Iterator[dict[str, Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "wt", encoding="utf-8") as stream:
            for row in rows:
                stream.write(json.dumps(row, ensure_ascii=False) + "\n")

    if spec.name == "stsb":
        for split in STSB_SPLITS:
            rows = fetch("default", split)
            pairs = ({"sentence1": r["sentence1"], "sentence2": r["sentence2"], "score": float(r["score"])} for r in rows)
            write_jsonl(folder / f"{split}.jsonl", pairs)
    elif spec.name == "scifact":
        corpus = fetch("corpus", "corpus")
        documents = ({"_id": str(r["_id"]), "title": r["title"], "text": r["text"], "metadata": {}} for r in corpus)
        write_jsonl(folder / "corpus.jsonl.gz", documents)
        queries = fetch("queries", "queries")
        write_jsonl(folder / "queries.jsonl", ({"_id": str(r["_id"]), "text": r["text"], "metadata": {}} for r in queries))
        (folder / "qrels").mkdir(parents=True, exist_ok=True)
        for split in ("train", "test"):
            qrels = fetch("default", split)
            lines = ["query-id\tcorpus-id\tscore"] + [f"{r['query-id']}\t{r['corpus-id']}\t{int(r['score'])}" for r in qrels]
            (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        raise DataError(f"hcae has no downloader for dataset {spec.name!r}.")


# ---------------------------------------------------------------------------------------------
# row readers


def open_dataset_file(data_dir: str | Path | None, path: str, verify: bool) -> tuple[Path, FileSpec]:
    dataset = path.split("/", 1)[0]
    spec = _dataset_spec(dataset)
    root = verify_dataset(dataset, data_dir) if verify else resolve_data_dir(data_dir)
    full_path = root / path
    if not full_path.is_file():
        raise DataError(f"Data file {full_path} is missing. {FIX_HINT}")
    return full_path, spec.files[path]


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) pairs of a text or .gz file, raising DataError on a bad stream."""
    opener = gzip.open if path.suffix == ".gz" else open
    line_number = 0
    try:
        with opener(path, "rt", encoding="utf-8") as stream:
            for line_number, line in enumerate(stream, start=1):
                yield line_number, line.rstrip("\n")
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DataError(
            f"Data file {path} is not a complete gzip stream (reading stopped after line "
            f"{line_number}: {error}): the file is truncated or damaged. {FIX_HINT}"
        ) from error
    except UnicodeDecodeError as error:
        raise DataError(f"Data file {path}, line {line_number + 1}: invalid UTF-8 ({error}). {FIX_HINT}") from error


def row_error(path: Path, line_number: int, problem: str) -> DataError:
    return DataError(f"Data file {path}, line {line_number}: {problem}. {FIX_HINT}")


def read_jsonl(path: Path, spec: FileSpec, verify: bool, fields: dict[str, Callable[[Any], bool]]) -> list[dict[str, Any]]:
    """Parse a JSONL file whose rows are objects with the given fields; each check returns validity."""
    rows = []
    for line_number, line in read_lines(path):
        try:
            row = json.loads(line)
        except ValueError as error:
            raise row_error(path, line_number, f"expected one JSON object, found {line[:80]!r} ({error})") from error
        if not isinstance(row, dict):
            raise row_error(path, line_number, f"expected a JSON object, found {line[:80]!r}")
        for field, is_valid in fields.items():
            if field not in row:
                raise row_error(path, line_number, f"field {field!r} is missing (expected fields: {', '.join(fields)})")
            if not is_valid(row[field]):
                raise row_error(path, line_number, f"field {field!r} has the invalid value {row[field]!r:.80}")
        rows.append(row)
    check_row_count(path, spec, len(rows), verify)
    return rows


def check_row_count(path: Path, spec: FileSpec, found: int, verify: bool) -> None:
    if found == 0:
        raise DataError(f"Data file {path} contains no rows, expected {spec.rows}. {FIX_HINT}")
    if verify and found != spec.rows:
        raise DataError(f"Data file {path} has {found} rows, expected {spec.rows}. {FIX_HINT}")


def is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def is_id(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and value == value.strip()


def score_in(low: float, high: float) -> Callable[[Any], bool]:
    def is_valid(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high

    return is_valid


def one_of(*allowed: Any) -> Callable[[Any], bool]:
    def is_valid(value: Any) -> bool:
        return value in allowed and type(value) is type(allowed[0])

    return is_valid
