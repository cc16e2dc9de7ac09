"""Using FTFT from other trainers: the Hugging Face `Trainer` (`hf`)."""
