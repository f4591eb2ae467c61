"""File formats read below the model and the tokenizer, so both can use them without importing
each other: the GGUF container (`gguf_file`)."""
