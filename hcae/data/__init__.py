"""Datasets: the data folder, its manifest and checksums, and one loader per dataset.

The data folder is laid out as ``stsb/``, ``scifact/``, ``nli/``, ``sentences/``, ``sick/`` and
``mrpc/``. ``hcae/data_manifest.json`` lists every file the loaders read with its sha256, size
and row count. Before a file is parsed it is compared with the manifest, and every row is
validated while parsing, so a missing, changed, truncated or malformed file stops the run with a
:class:`~hcae.errors.DataError` that names the file (and the line, for a bad row).

Return types: the training sets come as ``datasets.Dataset`` whose columns are in the order that
the sentence-transformers losses read them (for example anchor, positive, negative). SciFact's
retrieval data comes as plain dicts keyed by id, because evaluation and the dev split look
queries and documents up by id.

Model selection never reads a test split: the dev sets are STS Benchmark validation and a seeded
slice of the SciFact train queries (:func:`split_scifact_train_queries`), which
:func:`load_scifact_train_pairs` leaves out of training.
"""

from hcae.data.files import (
    CACHE_DIR_ENV,
    DATA_DIR_ENV,
    DEFAULT_DATA_DIR,
    DOWNLOAD_RECORD_NAME,
    MANIFEST_PATH,
    STSB_SPLITS,
    DatasetSpec,
    FileSpec,
    data_fingerprint,
    file_sha256,
    load_manifest,
    resolve_data_dir,
    verify_data_dir,
    verify_dataset,
    verify_file,
    write_text_atomic,
)
from hcae.data.loaders import (
    NLI_LABELS,
    SCIFACT_DEV_QUERIES,
    SCIFACT_DEV_SEED,
    SciFactData,
    SciFactDocument,
    SciFactTrainSplit,
    document_text,
    load_mrpc,
    load_scifact,
    load_scifact_train_pairs,
    load_sick,
    load_snli_pairs,
    load_snli_triplets,
    load_stsb,
    load_unlabelled_sentences,
    scifact_train_split,
    split_scifact_train_queries,
)

__all__ = [
    "CACHE_DIR_ENV",
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "DOWNLOAD_RECORD_NAME",
    "MANIFEST_PATH",
    "NLI_LABELS",
    "SCIFACT_DEV_QUERIES",
    "SCIFACT_DEV_SEED",
    "STSB_SPLITS",
    "DatasetSpec",
    "FileSpec",
    "SciFactData",
    "SciFactDocument",
    "SciFactTrainSplit",
    "data_fingerprint",
    "document_text",
    "file_sha256",
    "load_manifest",
    "load_mrpc",
    "load_scifact",
    "load_scifact_train_pairs",
    "load_sick",
    "load_snli_pairs",
    "load_snli_triplets",
    "load_stsb",
    "load_unlabelled_sentences",
    "resolve_data_dir",
    "scifact_train_split",
    "split_scifact_train_queries",
    "verify_data_dir",
    "verify_dataset",
    "verify_file",
    "write_text_atomic",
]
