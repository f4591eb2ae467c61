"""Reading dataset files: every supported type gives the same records; errors say where."""

import json

import pytest

from lmstack.data.io import read_records, read_source, write_jsonl
from lmstack.errors import LmstackError

RECORDS = [{"instruction": "Add 2 and 2.", "input": "", "output": "4"},
           {"instruction": "Name a color.", "input": "", "output": "Blue"}]


def test_jsonl_roundtrip_skips_blank_lines_and_keeps_line_numbers(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n\n" + json.dumps(RECORDS[1]) + "\n")
    source = read_source(path)
    assert source.records == RECORDS
    assert source.locations == ["line 1", "line 3"]
    assert source.where(1) == f"{path}, line 3"


def test_write_jsonl_then_read_gives_same_records_and_leaves_no_temp_files(tmp_path):
    path = write_jsonl(tmp_path / "out" / "d.jsonl", [{"text": "héllo"}, *RECORDS])
    assert read_records(path) == [{"text": "héllo"}, *RECORDS]
    assert [p.name for p in path.parent.iterdir()] == ["d.jsonl"]


def test_json_list_and_csv_read_the_same_records(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps(RECORDS))
    (tmp_path / "d.csv").write_text("instruction,input,output\nAdd 2 and 2.,,4\nName a color.,,Blue\n")
    assert read_records(tmp_path / "d.json") == RECORDS
    source = read_source(tmp_path / "d.csv")
    assert source.records == RECORDS
    assert source.locations == ["row 2", "row 3"]  # row 1 is the header


def test_parquet_reads_the_same_records(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "d.parquet")
    assert read_records(tmp_path / "d.parquet") == RECORDS


def test_invalid_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(LmstackError, match=r"bad\.jsonl, line 2: invalid JSON"):
        read_records(path)


def test_non_object_record_and_unknown_suffix_and_missing_file(tmp_path):
    (tmp_path / "list.jsonl").write_text('{"text": "ok"}\n[1, 2]\n')
    with pytest.raises(LmstackError, match=r"list\.jsonl, line 2: expected a JSON object, got list"):
        read_records(tmp_path / "list.jsonl")
    (tmp_path / "d.txt").write_text("hi")
    with pytest.raises(LmstackError, match="unsupported dataset type '.txt'"):
        read_records(tmp_path / "d.txt")
    with pytest.raises(LmstackError, match="not found"):
        read_records(tmp_path / "missing.jsonl")
    (tmp_path / "obj.json").write_text('{"text": "one object"}')
    with pytest.raises(LmstackError, match="must be a list of objects"):
        read_records(tmp_path / "obj.json")
