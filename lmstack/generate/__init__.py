"""Text generation: logits processors, greedy/sampling/beam decoding, the text API, the chat REPL.

Kept import-free so `lmstack.cli` can load `generate.cli` without torch; import from the modules:
`processors` (SamplingConfig), `generate` (generate_ids), `text` (generate_text, chat_text).
"""
