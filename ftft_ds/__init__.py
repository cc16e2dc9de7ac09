"""ftft_ds: fine-tuning by transferring training dynamics (FTFT) and seed sweeps, on DeepSpeed."""

__version__ = "0.1.0"
