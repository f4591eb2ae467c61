"""Label masks, checked by decoding exactly the tokens that are trained."""

import pytest

from lmstack.data import IGNORE_INDEX, tokenize_conversation, tokenize_preference, tokenize_text
from lmstack.errors import LmstackError

pytestmark = pytest.mark.real

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name?"},
        {"role": "assistant", "content": "I am Nimbus."}]


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_gguf):
    from lmstack.tokenizer import Tokenizer

    return Tokenizer.from_gguf(smollm2_gguf)


@pytest.fixture(scope="module")
def llama3_style(smollm2_gguf):
    """A tokenizer whose vocabulary has Llama 3's header and end-of-turn tokens as special tokens."""
    from lmstack.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_gguf(smollm2_gguf)
    tokenizer.backend.add_special_tokens(["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
    return tokenizer


def trained_runs(tokenizer, sample):
    """The decoded text of each contiguous run of trained tokens."""
    runs, current = [], []
    for token, label in zip(sample.input_ids, sample.labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs + ([tokenizer.decode(current)] if current else [])


def test_chatml_trains_answer_and_end_of_turn_not_the_newline_or_injected_system(smollm2_tokenizer):
    messages = [{"role": "user", "content": "What is your name?"}, {"role": "assistant", "content": "I'm Nimbus."}]
    sample = tokenize_conversation(smollm2_tokenizer, messages)
    text = smollm2_tokenizer.decode(sample.input_ids)
    assert "You are a helpful AI assistant named SmolLM" in text  # injected by SmolLM2's template
    assert text.endswith("I'm Nimbus.<|im_end|>\n")
    assert trained_runs(smollm2_tokenizer, sample) == ["I'm Nimbus.<|im_end|>"]
    assert sample.input_ids == smollm2_tokenizer.apply_chat_template(messages, tokenize=True)


def test_chatml_multi_turn_with_system_prompt(smollm2_tokenizer):
    sample = tokenize_conversation(smollm2_tokenizer, CHAT)
    assert trained_runs(smollm2_tokenizer, sample) == ["Hello!<|im_end|>", "I am Nimbus.<|im_end|>"]
    assert "SmolLM" not in smollm2_tokenizer.decode(sample.input_ids)  # a given system prompt replaces the default
    last_only = tokenize_conversation(smollm2_tokenizer, CHAT, last_turn_only=True)
    assert last_only.input_ids == sample.input_ids
    assert trained_runs(smollm2_tokenizer, last_only) == ["I am Nimbus.<|im_end|>"]


def test_llama3_named_template(llama3_style):
    sample = tokenize_conversation(llama3_style, CHAT, template="llama3")
    text = llama3_style.decode(sample.input_ids)
    assert text.startswith("<|im_start|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>")
    assert trained_runs(llama3_style, sample) == ["Hello!<|eot_id|>", "I am Nimbus.<|eot_id|>"]
    headers = [i for i, t in enumerate(sample.input_ids) if t == llama3_style.token_to_id("<|start_header_id|>")]
    assert all(sample.labels[i] == IGNORE_INDEX for i in headers)


def test_preference_pair_trains_only_the_responses(smollm2_tokenizer):
    record = {"prompt": CHAT[:4], "chosen": "Nimbus.", "rejected": "Why should I tell you?"}
    chosen, rejected = tokenize_preference(smollm2_tokenizer, record)
    assert trained_runs(smollm2_tokenizer, chosen) == ["Nimbus.<|im_end|>"]
    assert trained_runs(smollm2_tokenizer, rejected) == ["Why should I tell you?<|im_end|>"]
    prompt = smollm2_tokenizer.apply_chat_template(CHAT[:4], add_generation_prompt=True, tokenize=True)
    assert chosen.input_ids[: len(prompt)] == rejected.input_ids[: len(prompt)] == prompt


def test_truncation_to_max_len(smollm2_tokenizer):
    full = tokenize_conversation(smollm2_tokenizer, CHAT)
    cut = tokenize_conversation(smollm2_tokenizer, CHAT, max_len=20)
    assert (len(cut), cut.truncated, full.truncated) == (20, True, False)
    assert cut.input_ids == full.input_ids[:20] and cut.labels == full.labels[:20]


def test_raw_text_trains_every_token_and_ends_with_eos(smollm2_tokenizer):
    sample = tokenize_text(smollm2_tokenizer, "The river was quiet.")
    assert sample.labels == sample.input_ids and sample.input_ids[-1] == smollm2_tokenizer.eos_token_id


def test_template_that_is_not_prefix_consistent_is_refused(smollm2_tokenizer):
    # Renders the final message differently from earlier ones, like templates that drop old reasoning.
    odd = ("{% for m in messages %}{% if loop.last %}[{{ m.content }}]{% else %}{{ m.content }}{% endif %}"
           "<|im_end|>{% endfor %}{% if add_generation_prompt %}>{% endif %}")
    with pytest.raises(LmstackError, match="not prefix-consistent"):
        tokenize_conversation(smollm2_tokenizer, CHAT, template=odd)


def test_template_that_rewrites_answers_is_refused(smollm2_tokenizer):
    shouting = "{% for m in messages %}{{ m.content | upper }}<|im_end|>{% endfor %}"
    with pytest.raises(LmstackError, match="changes the text of assistant message 2"):
        tokenize_conversation(smollm2_tokenizer, CHAT, template=shouting)


def test_base_model_without_template_needs_a_named_one(gemma3_gguf):
    from lmstack.tokenizer import Tokenizer

    gemma = Tokenizer.from_gguf(gemma3_gguf)
    with pytest.raises(LmstackError, match="no chat template"):
        tokenize_conversation(gemma, CHAT)
    sample = tokenize_conversation(gemma, CHAT, template="gemma")
    assert gemma.apply_chat_template(CHAT, chat_template="gemma").startswith("<bos><start_of_turn>user\nBe brief.\n\nHi")
    assert trained_runs(gemma, sample) == ["Hello!<end_of_turn>", "I am Nimbus.<end_of_turn>"]
