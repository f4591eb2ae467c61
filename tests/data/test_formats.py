"""Format detection, normalization, conversion round-trips and schema errors."""

import json

import pytest

from lmstack.data import convert, detect_format, load_dataset, normalize_record
from lmstack.errors import LmstackError

CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name?"},
                     {"role": "assistant", "content": "Nimbus."}]}
SHAREGPT = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                              {"from": "gpt", "value": "Hello!"}, {"from": "human", "value": "Name?"},
                              {"from": "gpt", "value": "Nimbus."}]}


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("record, fmt", [
    (CHAT, "messages"), (SHAREGPT, "sharegpt"), ({"instruction": "a", "output": "b"}, "alpaca"),
    ({"text": "raw"}, "text"), ({"prompt": "p", "chosen": "c", "rejected": "r"}, "preference"),
    ({"prompt": "p", "completion": "c", "label": True}, "kto"), ({"question": "?"}, None),
])
def test_detect_format(record, fmt):
    assert detect_format(record) == fmt


def test_sharegpt_normalizes_to_the_same_messages():
    assert normalize_record(SHAREGPT) == CHAT


def test_messages_sharegpt_roundtrip_is_exact():
    assert convert([CHAT], to="sharegpt") == [SHAREGPT]
    assert convert(convert([CHAT], to="sharegpt"), to="messages") == [CHAT]


def test_alpaca_roundtrip_and_input_joined_into_the_question():
    single = {"messages": [{"role": "user", "content": "Translate: cat"}, {"role": "assistant", "content": "gato"}]}
    assert convert(convert([single], to="alpaca"), to="messages") == [single]
    alpaca = {"instruction": "Translate to Spanish.", "input": "cat", "output": "gato", "id": 7}
    [messages] = convert([alpaca], to="messages")
    assert messages == {"id": 7, "messages": [{"role": "user", "content": "Translate to Spanish.\n\ncat"},
                                              {"role": "assistant", "content": "gato"}]}
    with_system = {"instruction": "Q", "input": "", "output": "A", "system": "Be brief."}
    assert convert(convert([with_system], to="messages"), to="alpaca") == [with_system]


def test_multi_turn_cannot_become_alpaca():
    with pytest.raises(LmstackError, match="record 1: Alpaca holds one question and one answer"):
        convert([CHAT], to="alpaca")


def test_preference_strings_message_lists_and_implicit_prompt_normalize_alike():
    expected = {"prompt": [{"role": "user", "content": "2+2?"}], "chosen": "4.", "rejected": "5."}
    assert normalize_record({"prompt": "2+2?", "chosen": "4.", "rejected": "5."}) == expected
    as_lists = {"prompt": [{"role": "user", "content": "2+2?"}],
                "chosen": [{"role": "assistant", "content": "4."}],
                "rejected": [{"role": "assistant", "content": "5."}]}
    assert normalize_record(as_lists) == expected
    implicit = {"chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4."}],
                "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5."}]}
    assert normalize_record(implicit) == expected


def test_kto_labels_from_bools_and_csv_strings():
    record = normalize_record({"prompt": "Hi", "completion": "Hello!", "label": "true"})
    assert record == {"prompt": [{"role": "user", "content": "Hi"}], "completion": "Hello!", "label": True}
    assert normalize_record({"prompt": "Hi", "completion": "Go away.", "label": 0})["label"] is False
    with pytest.raises(LmstackError, match="field 'label' must be true or false"):
        normalize_record({"prompt": "Hi", "completion": "x", "label": "maybe"})


def test_load_dataset_counts_mixed_chat_formats(tmp_path):
    path = write(tmp_path / "mixed.jsonl", [CHAT, SHAREGPT, {"instruction": "a", "output": "b"}])
    dataset = load_dataset(path)
    assert (dataset.format, dataset.kind, len(dataset)) == ("mixed", "messages", 3)
    assert dataset.format_counts == {"messages": 1, "sharegpt": 1, "alpaca": 1}
    assert dataset.records[1] == CHAT


def test_load_dataset_refuses_mixed_kinds(tmp_path):
    path = write(tmp_path / "kinds.jsonl", [CHAT, {"text": "raw"}])
    with pytest.raises(LmstackError, match="records of different kinds"):
        load_dataset(path)


@pytest.mark.parametrize("line2, kind, message", [
    ({"messages": [{"role": "user"}]}, None, "line 2: missing field 'messages\\[0\\].content'"),
    ({"messages": [{"role": "bot", "content": "x"}]}, None, "line 2: field 'messages\\[0\\].role' is 'bot'"),
    ({"conversations": [{"from": "alien", "value": "x"}]}, None,
     "line 2: field 'conversations\\[0\\].from' is 'alien'"),
    ({"instruction": "Q", "response": "A"}, "alpaca", "line 2: missing field 'output'"),
    ({"instruction": "Q", "output": 3}, None, "line 2: field 'output' must be a str, got int"),
    ({"prompt": "Q", "chosen": "A", "rejected": None}, None, "line 2: field 'rejected' is missing"),
    ({"chosen": "A", "rejected": "B"}, None, "line 2: missing field 'prompt'"),
    ({"question": "Q"}, None, "line 2: cannot tell the dataset format from fields \\['question'\\]"),
])
def test_schema_errors_name_file_line_and_field(tmp_path, line2, kind, message):
    path = write(tmp_path / "broken.jsonl", [{"instruction": "Q", "output": "A"}, line2])
    with pytest.raises(LmstackError, match=f"broken\\.jsonl, {message}"):
        load_dataset(path, kind=kind)


def test_unknown_target_format():
    with pytest.raises(LmstackError, match="Cannot convert to 'chatml'"):
        convert([CHAT], to="chatml")
