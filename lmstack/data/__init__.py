"""Post-training datasets: read files, normalize formats, apply chat templates with label masks,
pack or pad batches, and inspect a dataset as the model sees it.

Formats and templating import nothing heavy; packing (torch) and inspection (numpy, matplotlib)
load on first use of their names, so `lmstack data convert` starts fast.
"""

from lmstack.data.formats import (
    CHAT_FORMATS,
    FORMATS,
    Dataset,
    convert,
    convert_file,
    detect_format,
    load_dataset,
    normalize_record,
)
from lmstack.data.io import (
    SourceRecords,
    content_hash,
    dataset_path,
    dataset_reference,
    read_records,
    read_source,
    write_jsonl,
)
from lmstack.data.templating import (
    IGNORE_INDEX,
    TokenizedSample,
    tokenize_conversation,
    tokenize_preference,
    tokenize_text,
)
from lmstack.lazy import lazy_names

_LAZY = {"pack_samples": "lmstack.data.packing", "pad_batch": "lmstack.data.packing",
         "pack_rows": "lmstack.data.packing", "collate_rows": "lmstack.data.packing",
         "inspect_dataset": "lmstack.data.inspect", "print_report": "lmstack.data.inspect",
         "InspectReport": "lmstack.data.inspect"}

__all__ = [
    "CHAT_FORMATS", "FORMATS", "Dataset", "convert", "convert_file", "detect_format", "load_dataset",
    "normalize_record", "SourceRecords", "content_hash", "dataset_path", "dataset_reference", "read_records", "read_source", "write_jsonl", "IGNORE_INDEX",
    "TokenizedSample", "tokenize_conversation", "tokenize_preference", "tokenize_text", *_LAZY,
]


__getattr__ = lazy_names(__name__, _LAZY)
